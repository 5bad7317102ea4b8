import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createPostgresDatabase } from "./helpers/databases.js";

/**
 * End to end: the real `bin/ferry` (built by globalSetup) run as separate processes, the
 * CLI talking over HTTP to a real `ferry server` on a free port with its own data directory.
 */

const FERRY = join(dirname(fileURLToPath(import.meta.url)), "..", "bin", "ferry");
const GENERATED_KEY = /ferry_[A-Za-z0-9_-]{43}/;

/** Every generated admin key printed in a text. */
function generatedKeys(text: string): string[] {
  return text.match(new RegExp(GENERATED_KEY.source, "g")) ?? [];
}

const temporaryDirectories: string[] = [];
const runningServers = new Set<FerryServer>();

async function makeTemporaryDirectory(): Promise<string> {
  const directory = await mkdtemp(join(tmpdir(), "ferry-cli-e2e-"));
  temporaryDirectories.push(directory);
  return directory;
}

afterAll(async () => {
  await Promise.all([...runningServers].map((server) => server.stop()));
  await Promise.all(temporaryDirectories.map((directory) => rm(directory, { recursive: true, force: true })));
});

/** A key the server accepts as FERRY_ADMIN_API_KEY: "ferry_test" + 30 random characters. */
function testAdminKey(): string {
  return `ferry_test${randomBytes(30).toString("base64url").slice(0, 30)}`;
}

/**
 * An explicit environment: nothing Ferry reads is inherited from the parent (no FERRY_API_KEY,
 * FERRY_URL, FERRY_ADMIN_API_KEY), and HOME/FERRY_CONFIG point into a temp directory so the
 * real ~/.config is never read or written.
 */
function isolatedEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: home,
    FERRY_CONFIG: join(home, "no-such-config.json"),
    ...extra,
  };
}

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `bin/ferry ARGS` to completion; `input` is piped to its standard input. */
function runFerry(args: string[], env: NodeJS.ProcessEnv, input = ""): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(FERRY, args, { env, stdio: ["pipe", "pipe", "pipe"], timeout: 15_000 });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk;
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

function expectSuccess(result: CliResult): void {
  expect(result.code, `stderr: ${result.stderr}`).toBe(0);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}

function sleep(milliseconds: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

interface FerryServer {
  url: string;
  process: ChildProcess;
  /** Milliseconds from spawn until GET /readyz first answered 200. */
  readyAfterMs: number;
  stdout(): string;
  stderr(): string;
  /** SIGTERM, then the exit code (SIGKILL after 10 s if it hangs). */
  stop(): Promise<number | null>;
}

async function startFerryServer(options: {
  dataDir: string;
  env: NodeJS.ProcessEnv;
  extraArgs?: string[];
}): Promise<FerryServer> {
  const port = await freePort();
  const started = Date.now();
  const child = spawn(
    FERRY,
    [
      "server",
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      "--data-dir",
      options.dataDir,
      ...(options.extraArgs ?? []),
    ],
    { env: options.env, stdio: ["ignore", "pipe", "pipe"] },
  );
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const url = `http://127.0.0.1:${port}`;
  const server: FerryServer = {
    url,
    process: child,
    readyAfterMs: 0,
    stdout: () => stdout,
    stderr: () => stderr,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(killer);
      }
      runningServers.delete(server);
      return child.exitCode;
    },
  };
  runningServers.add(server);

  const deadline = started + 20_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      runningServers.delete(server);
      throw new Error(`ferry server exited with ${child.exitCode ?? child.signalCode} before it was ready:\n${stderr}`);
    }
    try {
      const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1_000) });
      if (response.status === 200) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`ferry server at ${url} was not ready within 20 s:\n${stderr}`);
    }
    await sleep(20);
  }
  server.readyAfterMs = Date.now() - started;
  return server;
}

function authenticatedGet(url: string, apiKey: string): Promise<Response> {
  return fetch(url, { headers: { authorization: `Bearer ${apiKey}` }, signal: AbortSignal.timeout(5_000) });
}

async function postJson(url: string, apiKey: string, body: unknown): Promise<void> {
  const response = await fetch(url, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5_000),
  });
  expect(response.status, await response.text()).toBe(201);
}

interface Resource {
  slug: string;
  lifecycle?: string;
}

function parseList(result: CliResult): Resource[] {
  expectSuccess(result);
  const value: unknown = JSON.parse(result.stdout);
  expect(Array.isArray(value)).toBe(true);
  return value as Resource[];
}

function fileMode(path: string): Promise<number> {
  return stat(path).then((info) => info.mode & 0o777);
}

describe("ferry CLI against a ferry server (SQLite)", () => {
  let server: FerryServer;
  let home: string;
  const adminKey = testAdminKey();
  const cli = (args: string[]) => runFerry(args, isolatedEnv(home, { FERRY_URL: server.url, FERRY_API_KEY: adminKey }));

  beforeAll(async () => {
    home = await makeTemporaryDirectory();
    server = await startFerryServer({
      dataDir: join(home, "data"),
      env: isolatedEnv(home, { FERRY_ADMIN_API_KEY: adminKey }),
    });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("starts, becomes ready and sets up environments, a lifecycle and a project", async () => {
    console.log(`ferry server answered /readyz 200 after ${server.readyAfterMs} ms`);
    await waitFor(() => server.stdout().includes("ferry server ready"), "the ready log line");
    const readyLine = server
      .stdout()
      .split("\n")
      .filter((line) => line.includes("ferry server ready"))
      .map((line) => JSON.parse(line) as { url?: string })[0];
    expect(readyLine?.url).toBe(server.url);

    for (const name of ["dev", "test", "prod"]) expectSuccess(await cli(["env", "create", name]));
    expectSuccess(
      await cli(["lifecycle", "create", "default", "--phase", "dev", "--phase", "test", "--phase", "prod"]),
    );
    expectSuccess(await cli(["project", "create", "shop", "--lifecycle", "default"]));

    const projects = parseList(await cli(["project", "list", "--json"]));
    expect(projects).toEqual(expect.arrayContaining([expect.objectContaining({ slug: "shop", lifecycle: "default" })]));
    const environments = parseList(await cli(["env", "list", "--json"]));
    expect(environments.map((environment) => environment.slug)).toEqual(["dev", "test", "prod"]);
  });
});

describe("ferry CLI exit codes", () => {
  let server: FerryServer;
  let home: string;
  const adminKey = testAdminKey();
  const cli = (args: string[]) => runFerry(args, isolatedEnv(home, { FERRY_URL: server.url, FERRY_API_KEY: adminKey }));

  beforeAll(async () => {
    home = await makeTemporaryDirectory();
    server = await startFerryServer({
      dataDir: join(home, "data"),
      env: isolatedEnv(home, { FERRY_ADMIN_API_KEY: adminKey }),
    });
    for (const name of ["dev", "test", "prod"]) {
      await postJson(`${server.url}/api/v1/environments`, adminKey, { name });
    }
    await postJson(`${server.url}/api/v1/lifecycles`, adminKey, {
      name: "default",
      phases: [{ environments: ["dev"] }, { environments: ["test"] }, { environments: ["prod"] }],
    });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("exits 2 on usage errors, before contacting the server", async () => {
    const missingName = await cli(["env", "create"]);
    expect(missingName.code).toBe(2);
    expect(missingName.stderr).toContain("missing required argument");
    const unknownOption = await cli(["env", "list", "--no-such-option"]);
    expect(unknownOption.code).toBe(2);
    expect(unknownOption.stderr).toContain("unknown option");
    // Nothing was created by the failed create.
    const environments = parseList(await cli(["env", "list", "--json"]));
    expect(environments.map((environment) => environment.slug)).toEqual(["dev", "test", "prod"]);
  });

  it("exits 1 with the server's problem detail when the server refuses", async () => {
    const inUse = await cli(["env", "delete", "dev"]);
    expect(inUse.code).toBe(1);
    expect(inUse.stderr).toContain("is used by lifecycle 'default'");
    const missing = await cli(["project", "show", "nope"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("no project 'nope'");
    // The refused delete left the environment in place.
    expectSuccess(await cli(["env", "show", "dev"]));
  });

  it("exits 1 and names the bad field on a validation error", async () => {
    const result = await cli(["target", "create", "t1", "--env", "nope"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("/environments/0");
    expect(result.stderr).toContain("nope");
  });

  it("exits 2 without an API key", async () => {
    const result = await runFerry(["env", "list"], isolatedEnv(home, { FERRY_URL: server.url }));
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("no API key");
  });
});

describe("ferry server first start and restart", () => {
  const started: FerryServer[] = [];
  const start = async (dataDir: string, home: string) => {
    const server = await startFerryServer({ dataDir, env: isolatedEnv(home) });
    started.push(server);
    return server;
  };
  afterEach(async () => {
    await Promise.all(started.splice(0).map((server) => server.stop()));
  });

  it("prints a random admin key once, keeps it across restarts, and keys differ per install", async () => {
    const home = await makeTemporaryDirectory();
    const dataDir = join(home, "data");

    const first = await start(dataDir, home);
    await waitFor(() => GENERATED_KEY.test(first.stderr()), "the admin key on stderr");
    const keys = generatedKeys(first.stderr());
    expect(keys).toHaveLength(1);
    const adminKey = keys[0] ?? "";

    expect((await authenticatedGet(`${first.url}/api/v1/environments`, adminKey)).status).toBe(200);
    const wrong = await authenticatedGet(`${first.url}/api/v1/environments`, `ferry_${"x".repeat(43)}`);
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get("content-type")).toMatch(/^application\/problem\+json/);
    expect(await wrong.json()).toMatchObject({ type: "urn:ferry:problem:unauthenticated", status: 401 });
    expect(await first.stop()).toBe(0);

    const restarted = await start(dataDir, home);
    expect((await authenticatedGet(`${restarted.url}/api/v1/environments`, adminKey)).status).toBe(200);
    expect(await restarted.stop()).toBe(0);
    expect(generatedKeys(restarted.stderr())).toEqual([]);

    const otherHome = await makeTemporaryDirectory();
    const otherDataDir = join(otherHome, "data");
    const other = await start(otherDataDir, otherHome);
    await waitFor(() => GENERATED_KEY.test(other.stderr()), "the second install's admin key on stderr");
    const otherKeys = generatedKeys(other.stderr());
    expect(otherKeys).toHaveLength(1);
    expect(otherKeys[0]).not.toBe(adminKey);
    // One install's key opens nothing on another.
    expect((await authenticatedGet(`${other.url}/api/v1/environments`, adminKey)).status).toBe(401);

    const masterKey = join(dataDir, "master.key");
    const otherMasterKey = join(otherDataDir, "master.key");
    expect(await readFile(masterKey, "utf8")).not.toBe(await readFile(otherMasterKey, "utf8"));
    expect(await fileMode(masterKey)).toBe(0o600);
    expect(await fileMode(otherMasterKey)).toBe(0o600);
  });

  it("exits 0 soon after SIGTERM", async () => {
    const home = await makeTemporaryDirectory();
    const server = await start(join(home, "data"), home);
    const stoppedAt = Date.now();
    server.process.kill("SIGTERM");
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("ferry server still running 5 s after SIGTERM")), 5_000);
      server.process.once("exit", (exitCode) => {
        clearTimeout(timer);
        resolve(exitCode);
      });
    });
    console.log(`ferry server exited ${Date.now() - stoppedAt} ms after SIGTERM`);
    expect(code).toBe(0);
    await expect(fetch(`${server.url}/readyz`)).rejects.toThrow();
  });
});

describe("ferry server on PostgreSQL (--db)", () => {
  let database: { url: string; drop(): Promise<void> } | undefined;
  let server: FerryServer | undefined;
  let home: string;
  const adminKey = testAdminKey();

  beforeAll(async () => {
    home = await makeTemporaryDirectory();
    database = await createPostgresDatabase();
    server = await startFerryServer({
      dataDir: join(home, "data"),
      env: isolatedEnv(home, { FERRY_ADMIN_API_KEY: adminKey }),
      extraArgs: ["--db", database.url],
    });
  });
  afterAll(async () => {
    await server?.stop();
    await database?.drop();
  });

  it("reports PostgreSQL as ready and serves the CLI", async () => {
    const url = server?.url ?? "";
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ database: "postgres" });

    const env = isolatedEnv(home, { FERRY_URL: url, FERRY_API_KEY: adminKey });
    expectSuccess(await runFerry(["env", "create", "dev"], env));
    const environments = parseList(await runFerry(["env", "list", "--json"], env));
    expect(environments.map((environment) => environment.slug)).toEqual(["dev"]);
  });
});

describe("ferry login", () => {
  let server: FerryServer;
  let home: string;
  const adminKey = testAdminKey();

  beforeAll(async () => {
    home = await makeTemporaryDirectory();
    server = await startFerryServer({
      dataDir: join(home, "data"),
      env: isolatedEnv(home, { FERRY_ADMIN_API_KEY: adminKey }),
    });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("saves the URL and key (mode 0600) for later commands", async () => {
    const configPath = join(home, "login", "ferry", "config.json");
    const env = isolatedEnv(home, { FERRY_CONFIG: configPath });

    expectSuccess(await runFerry(["login", "--url", server.url, "--api-key-stdin"], env, adminKey));
    expect(await fileMode(configPath)).toBe(0o600);

    // Neither FERRY_URL nor FERRY_API_KEY is set: both come from the saved login.
    expectSuccess(await runFerry(["env", "create", "dev"], env));
    const environments = parseList(await runFerry(["env", "list", "--json"], env));
    expect(environments.map((environment) => environment.slug)).toEqual(["dev"]);
  });

  it("exits 1 on a wrong key and saves nothing", async () => {
    const configPath = join(home, "wrong-login", "config.json");
    const env = isolatedEnv(home, { FERRY_CONFIG: configPath });
    const wrongKey = `ferry_${randomBytes(32).toString("base64url")}`;

    const result = await runFerry(["login", "--url", server.url, "--api-key-stdin"], env, wrongKey);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("not valid");
    await expect(stat(configPath)).rejects.toThrow();
  });
});
