import { randomBytes } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  apiRequest,
  type CliResult,
  expectSuccess,
  type FerryServer,
  isolatedEnv,
  runFerry as runFerryProcess,
  testAdminKey,
  trackedResources,
  waitFor,
} from "./helpers/cli.js";
import { createPostgresDatabase } from "./helpers/databases.js";

/**
 * End to end: the real `bin/ferry` (built by globalSetup) run as separate processes, the
 * CLI talking over HTTP to a real `ferry server` on a free port with its own data directory.
 */

const GENERATED_KEY = /ferry_[A-Za-z0-9_-]{43}/;

/** Every generated admin key printed in a text. */
function generatedKeys(text: string): string[] {
  return text.match(new RegExp(GENERATED_KEY.source, "g")) ?? [];
}

const { makeTemporaryDirectory, startFerryServer, startServerInNewHome, cleanUp } = trackedResources("ferry-cli-e2e-");

afterAll(async () => {
  await cleanUp();
});

/**
 * Runs `bin/ferry ARGS` to completion; `input` is piped to its standard input. These commands
 * answer in well under a second, so a hung one is killed after 15 s, inside the test's timeout.
 */
function runFerry(args: string[], env: NodeJS.ProcessEnv, input = ""): Promise<CliResult> {
  return runFerryProcess(args, env, { input, timeoutMs: 15_000 });
}

function authenticatedGet(url: string, apiKey: string): Promise<Response> {
  return apiRequest(url, apiKey);
}

async function postJson(url: string, apiKey: string, body: unknown): Promise<void> {
  const response = await apiRequest(url, apiKey, "POST", body);
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
    ({ home, server } = await startServerInNewHome(adminKey));
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("starts, becomes ready and sets up environments, a lifecycle and a project", async () => {
    console.log(`ferry server answered /readyz 200 after ${server.readyAfterMs} ms`);
    await waitFor(() => server.stdout().includes("ferry server ready"), "the ready log line", 5_000);
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

// Several `ferry` commands or server starts per test: 2 minutes each, for CI under load.
describe("ferry CLI exit codes", { timeout: 120_000 }, () => {
  let server: FerryServer;
  let home: string;
  const adminKey = testAdminKey();
  const cli = (args: string[]) => runFerry(args, isolatedEnv(home, { FERRY_URL: server.url, FERRY_API_KEY: adminKey }));

  beforeAll(async () => {
    ({ home, server } = await startServerInNewHome(adminKey));
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

  it("exits 2 for an unknown command, --help or not, naming it and how to list the commands", async () => {
    // `ferry deploi --help` printed the top-level help and exited 0: a script's typo passed.
    for (const args of [
      ["deploi"],
      ["deploi", "--help"],
      ["env", "lst"],
      ["env", "lst", "--help"],
      ["nothing-like-it", "-h"],
    ]) {
      const result = await cli(args);
      expect(result.code, args.join(" ")).toBe(2);
      expect(result.stdout, args.join(" ")).toBe("");
    }
    expect((await cli(["deploi", "--help"])).stderr).toBe(
      "ferry: unknown command 'deploi' (did you mean 'ferry deploy'?); run 'ferry --help' to list the commands\n",
    );
    expect((await cli(["env", "lst", "--help"])).stderr).toBe(
      "ferry: unknown command 'lst' (did you mean 'ferry env list'?); run 'ferry env --help' to list the commands\n",
    );
    expect((await cli(["nothing-like-it", "-h"])).stderr).toBe(
      "ferry: unknown command 'nothing-like-it'; run 'ferry --help' to list the commands\n",
    );
    // Help for commands that exist still exits 0.
    for (const args of [["--help"], ["env", "--help"], ["env", "list", "--help"], ["help", "env"]]) {
      const result = await cli(args);
      expect(result.code, args.join(" ")).toBe(0);
      expect(result.stdout, args.join(" ")).toContain("Usage: ferry");
    }
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

// Several `ferry` commands or server starts per test: 2 minutes each, for CI under load.
describe("ferry server first start and restart", { timeout: 120_000 }, () => {
  const started: FerryServer[] = [];
  const start = async (dataDir: string, home: string) => {
    const server = await startFerryServer({ dataDir, env: isolatedEnv(home) });
    started.push(server);
    return server;
  };
  afterEach(async () => {
    await Promise.all(started.splice(0).map((server) => server.stop()));
  });

  it("refuses to start with an SSH keep-alive setting out of range, naming the variable and the range", async () => {
    const home = await makeTemporaryDirectory();
    for (const [name, value, detail] of [
      [
        "FERRY_SSH_KEEPALIVE_INTERVAL_SECONDS",
        "0",
        "send keep-alives at most every second (1) and at least every hour (3600)",
      ],
      ["FERRY_SSH_KEEPALIVE_COUNT_MAX", "101", "allow 1 to 100 unanswered keep-alives"],
    ]) {
      const result = await runFerry(
        ["server", "--port", "0", "--data-dir", join(home, "data")],
        isolatedEnv(home, { [String(name)]: String(value) }),
      );
      expect(result.code, result.stderr).toBe(2);
      expect(result.stderr).toBe(`ferry: environment variable ${name}: ${detail}\n`);
    }
  });

  it("prints a random admin key once, keeps it across restarts, and keys differ per install", async () => {
    const home = await makeTemporaryDirectory();
    const dataDir = join(home, "data");

    const first = await start(dataDir, home);
    await waitFor(() => GENERATED_KEY.test(first.stderr()), "the admin key on stderr", 5_000);
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
    await waitFor(() => GENERATED_KEY.test(other.stderr()), "the second install's admin key on stderr", 5_000);
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

describe("the server's log", () => {
  it("shows request paths with the query's parameter names, never their values", async () => {
    const adminKey = testAdminKey();
    const { server } = await startServerInNewHome(adminKey);
    const canary = "ferry_QUERYKEYCANARY0123456789";
    // Ferry takes no key in the query (400: an unknown query field), but the request is logged all the same.
    const asked = await apiRequest(`${server.url}/api/v1/projects?api_key=${canary}&limit=5`, adminKey);
    expect(asked.status).toBe(400);
    const refused = await fetch(`${server.url}/api/v1/environments?api_key=${canary}`);
    expect(refused.status).toBe(401);
    await waitFor(
      () => server.stdout().includes('"url":"/api/v1/environments?api_key=…"'),
      "the refused request in the server's log",
    );
    expect(server.stdout()).toContain('"url":"/api/v1/projects?api_key=…&limit=…"');
    expect(server.stdout()).not.toContain(canary);
    expect(server.stderr()).not.toContain(canary);
  });

  it("is a file only for the builtin proxy Ferry starts (proxy.log), created 0600", async () => {
    // `ferry server` logs to its standard output (the service manager's journal); the one log
    // file Ferry itself creates is the detached `ferry proxy`'s, next to its state.
    const { connectEmbeddedProxy } = await import("../src/traffic/builtin.js");
    const stateDir = join(await makeTemporaryDirectory(), "proxy");
    const started: string[] = [];
    await connectEmbeddedProxy({ stateDir, listen: "127.0.0.1:0" }, (message) => started.push(message));
    const pid = Number((await readFile(join(stateDir, "proxy.pid"), "utf8")).trim());
    try {
      expect(started.join("\n")).toContain("log in proxy.log there");
      expect(await fileMode(join(stateDir, "proxy.log"))).toBe(0o600);
    } finally {
      process.kill(pid, "SIGTERM");
    }
  });
});

describe("ferry server on PostgreSQL (--db)", () => {
  let database: { url: string; drop(): Promise<void> } | undefined;
  let server: FerryServer | undefined;
  let home: string;
  const adminKey = testAdminKey();

  beforeAll(async () => {
    database = await createPostgresDatabase();
    ({ home, server } = await startServerInNewHome(adminKey, ["--db", database.url]));
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
    ({ home, server } = await startServerInNewHome(adminKey));
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
