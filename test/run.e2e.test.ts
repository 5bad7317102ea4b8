import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { connect } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectSuccess, isolatedEnv, parseJson, runFerry, trackedResources } from "./helpers/cli.js";
import { buildDemoImage, removeImages } from "./helpers/images.js";
import { freePort, startRegistry, type TestRegistry } from "./helpers/registry.js";

/*
 * `ferry run` through the real bin/ferry with no server anywhere (ADR 0046): a script step,
 * a failing step, a blue/green container step on the real Docker engine behind the builtin
 * proxy, and the flags' validation. Each run gets its own TMPDIR, so "nothing left behind"
 * is checked on exactly the run's own directory; containers by the run's project label.
 */

const resources = trackedResources("ferry-run-e2e-");
afterAll(() => resources.cleanUp());

const SECRET = `tok-${randomBytes(6).toString("hex")}`;
const FILE_SECRET = `file-${randomBytes(6).toString("hex")}`;

const SCRIPT_YML = `
project: { name: run-script }
environments: [dev, prod]
lifecycle:
  name: run-script
  phases: [{ environments: [dev], autoDeploy: true }, { environments: [prod] }]
targets:
  - name: here
    environments: [dev, prod]
    roles: [app]
variables:
  - name: Greeting
    value: Hello
  - name: Greeting
    value: Hello from prod
    scope: { environments: [prod] }
  - name: Token
    sensitive: true
    valueFrom: { env: RUN_TOKEN }
  - name: FileToken
    sensitive: true
    valueFrom: { file: token.txt }
steps:
  - name: Greet
    kind: script
    roles: [app]
    config:
      script: |
        echo "greeting: $GREETING in $ENVIRONMENT"
        echo "the token is $TOKEN"
        echo "the file token is $FILE_TOKEN"
        test "$FILE_TOKEN" = "${FILE_SECRET}" && echo "file token arrived whole"
      env:
        GREETING: "#{Greeting}"
        TOKEN: "#{Token}"
        FILE_TOKEN: "#{FileToken}"
        ENVIRONMENT: "#{Ferry.Environment.Name}"
  - name: Check
    kind: script
    roles: [app]
    config:
      script: |
        if [ "$FAIL" = "yes" ]; then echo "check failed on purpose" >&2; exit 7; fi
        echo "check passed"
      env: { FAIL: "#{Fail}" }
`;

/** A fresh HOME and TMPDIR for one run; returns the env and the TMPDIR to inspect afterwards. */
async function runEnvironment(extra: Record<string, string> = {}) {
  const home = await resources.makeTemporaryDirectory();
  const tmp = join(home, "tmp");
  execFileSync("mkdir", ["-p", tmp]);
  return { home, tmp, env: isolatedEnv(home, { TMPDIR: tmp, ...extra }) };
}

describe("ferry run with script steps", () => {
  let file: string;
  beforeAll(async () => {
    const home = await resources.makeTemporaryDirectory();
    file = join(home, "ferry.yml");
    await writeFile(join(home, "token.txt"), `${FILE_SECRET}\n`);
    // Fail is declared so that --var can override it.
    await writeFile(
      file,
      SCRIPT_YML.replace("  - name: Token\n", '  - name: Fail\n    value: "no"\n  - name: Token\n'),
    );
  });

  it("runs the process here with no server, masks the secret, applies --var, and leaves nothing behind", async () => {
    const { tmp, env } = await runEnvironment({ RUN_TOKEN: SECRET });
    const result = await runFerry(["run", "-f", file, "--env", "prod", "--version", "1.2.3"], env, {
      timeoutMs: 120_000,
    });
    expectSuccess(result);
    expect(result.stdout).toContain("greeting: Hello from prod in prod");
    expect(result.stdout).toContain("the token is ********");
    expect(result.stdout).toContain("the file token is ********");
    expect(result.stdout).toContain("file token arrived whole");
    expect(result.stdout).toContain("check passed");
    expect(result.stdout).toMatch(/^\d\d:\d\d:\d\d \[Greet on here\] greeting: Hello from prod in prod$/m);
    expect(result.stdout).toContain("run-script 1.2.3 → prod: succeeded");
    expect(result.stdout + result.stderr).not.toContain(SECRET);
    expect(result.stdout + result.stderr).not.toContain(FILE_SECRET);
    expect(await readdir(tmp)).toEqual([]);

    const overridden = await runFerry(["run", "-f", file, "--env", "dev", "--var", "Greeting=Hi there"], env, {
      timeoutMs: 120_000,
    });
    expectSuccess(overridden);
    expect(overridden.stdout).toContain("greeting: Hi there in dev");
  }, 240_000);

  it("exits 1 with the failing step's message and last log lines, and still removes everything", async () => {
    const { tmp, env } = await runEnvironment({ RUN_TOKEN: SECRET });
    const result = await runFerry(["run", "-f", file, "--env", "dev", "--var", "Fail=yes", "--json"], env, {
      timeoutMs: 120_000,
    });
    expect(result.code, result.stderr).toBe(1);
    const outcome = parseJson<{ state: string; error: string; project: string }>(result);
    expect(outcome.state).toBe("failed");
    expect(outcome.error).toContain("Check");
    expect(result.stderr).toContain("ferry: the deployment failed");
    expect(result.stderr).toContain("check failed on purpose");
    expect(result.stderr).toContain("exit");
    expect(result.stderr).not.toContain(SECRET);
    expect(await readdir(tmp)).toEqual([]);
  }, 120_000);

  it("cancels a deployment that waits for an approval nobody can give, and says so", async () => {
    const { home, tmp, env } = await runEnvironment();
    const approvalFile = join(home, "approval.yml");
    await writeFile(
      approvalFile,
      `
project: { name: run-approval }
environments: [dev]
lifecycle: { name: run-approval, phases: [{ environments: [dev] }] }
steps:
  - name: Sign-off
    kind: approval
    config: { instructions: "someone must look first" }
  - name: After
    kind: script
    config: { script: echo "should not run" }
`,
    );
    const result = await runFerry(["run", "-f", approvalFile, "--env", "dev"], env, { timeoutMs: 120_000 });
    expect(result.code, result.stderr).toBe(1);
    expect(result.stdout).toContain("waits for a person (an approval or a decision), which a local run cannot take");
    expect(result.stdout).not.toContain("should not run");
    expect(result.stderr).toContain("ferry: the deployment ended cancelled");
    expect(await readdir(tmp)).toEqual([]);
  }, 120_000);

  it("refuses wrong flags and files with exit 2, naming the flag or the field, before anything runs", async () => {
    const { tmp, env } = await runEnvironment({ RUN_TOKEN: SECRET });
    const cases: [string[], string][] = [
      [["--env", "staging"], "--env staging: "],
      [["--env", "dev", "--image", "web=1.0"], "--image web=1.0: "],
      [["--env", "dev", "--var", "Token=oops"], "--var Token: Token is sensitive"],
      [["--env", "dev", "--var", "novalue"], "--var novalue: give NAME=VALUE"],
      [["--env", "dev", "--version", "-bad"], "--version -bad: "],
      [["--env", "dev", "--proxy-listen", "8000"], "--proxy-listen 8000: give HOST:PORT"],
    ];
    for (const [args, message] of cases) {
      const result = await runFerry(["run", "-f", file, ...args], env);
      expect(result.code, `${args.join(" ")}: ${result.stderr}`).toBe(2);
      expect(result.stderr).toContain(message);
      expect(result.stderr).not.toContain("oops");
    }
    const broken = join(tmp, "..", "broken.yml");
    await writeFile(
      broken,
      SCRIPT_YML.replace(
        "kind: script\n    roles: [app]\n    config:\n      script: |\n        echo",
        "kind: scirpt\n    roles: [app]\n    config:\n      script: |\n        echo",
      ),
    );
    const unset = await runFerry(["run", "-f", file, "--env", "dev"], { ...env, RUN_TOKEN: "" });
    expect(unset.code).toBe(2);
    expect(unset.stderr).toContain("variables[3] Token: valueFrom.env: RUN_TOKEN is not set");
    const invalid = await runFerry(["run", "-f", broken, "--env", "dev"], env);
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toMatch(/broken\.yml:\d+:\d+ .*kind/);
    expect(await readdir(tmp)).toEqual([]);
  }, 120_000);
});

/** GET / through the proxy with the route's Host header; the body, or the error's code. */
function getThroughProxy(port: number, host: string): Promise<string> {
  return new Promise((resolve) => {
    const call = request({ host: "127.0.0.1", port, path: "/", headers: { host }, timeout: 5_000 }, (response) => {
      let body = "";
      response.setEncoding("utf8").on("data", (chunk: string) => {
        body += chunk;
      });
      response.on("end", () => resolve(`${response.statusCode} ${body.trim()}`));
    });
    call.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    call.end();
  });
}

/** Whether anything accepts connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

function containersOf(project: string): string[] {
  return execFileSync("docker", ["ps", "-a", "--filter", `label=ferry.project=${project}`, "--format", "{{.Names}}"])
    .toString("utf8")
    .split("\n")
    .filter(Boolean);
}

describe("ferry run with a blue/green container step (real Docker, builtin proxy)", () => {
  let registry: TestRegistry;
  const project = `run-bg-${randomBytes(3).toString("hex")}`;
  const host = `${project}.run.test`;
  let file: string;
  const pushed: string[] = [];

  beforeAll(async () => {
    registry = await startRegistry();
    const image = await buildDemoImage({ registryUrl: registry.url, repository: "run/app", version: "1.0.0" });
    pushed.push(image.reference);
    const home = await resources.makeTemporaryDirectory();
    file = join(home, "ferry.yml");
    await writeFile(
      file,
      `
project: { name: ${project} }
environments: [dev]
lifecycle: { name: ${project}, phases: [{ environments: [dev] }] }
feeds:
  - name: local
    url: ${registry.url}
targets:
  - name: here
    environments: [dev]
    roles: [web]
    runtimes: [docker]
images:
  - name: web
    feed: local
    repository: run/app
    version: { semver: ">=1.0.0" }
steps:
  - name: Web
    kind: container
    roles: [web]
    config:
      image: "#{Ferry.Image[web]}"
      strategy: blueGreen
      route: { host: ${host}, port: 8080 }
      settleSeconds: 1
      blueGreen: { healthCheck: { path: /health }, drainSeconds: 1 }
`,
    );
  }, 120_000);

  afterAll(async () => {
    const left = containersOf(project);
    if (left.length > 0) execFileSync("docker", ["rm", "-f", ...left]);
    await removeImages(pushed).catch(() => undefined);
    await registry?.stop();
  });

  it("deploys, serves through the proxy, and leaves nothing behind unless --keep", async () => {
    const port = await freePort();
    const { tmp, env } = await runEnvironment();
    const result = await runFerry(
      ["run", "-f", file, "--env", "dev", "--image", "web=1.0.0", "--proxy-listen", `127.0.0.1:${port}`],
      env,
      { timeoutMs: 180_000 },
    );
    expectSuccess(result);
    expect(result.stdout).toContain(`${project} 0.0.0 → dev: succeeded`);
    expect(result.stdout).toMatch(/ferry run: clean-up: removed /);
    expect(result.stdout).toMatch(/ferry run: clean-up: stopped ferry proxy/);
    expect(containersOf(project)).toEqual([]);
    expect(await listening(port)).toBe(false);
    expect(await readdir(tmp)).toEqual([]);

    // With --keep the app stays up behind the proxy, and the run says where its data is.
    const keptPort = await freePort();
    const kept = await runFerry(
      ["run", "-f", file, "--env", "dev", "--keep", "--json", "--proxy-listen", `127.0.0.1:${keptPort}`],
      env,
      { timeoutMs: 180_000 },
    );
    expectSuccess(kept);
    const outcome = parseJson<{ state: string; dataDir: string }>(kept);
    expect(outcome.state).toBe("succeeded");
    try {
      expect(await getThroughProxy(keptPort, host)).toBe("200 version 1.0.0");
      expect(containersOf(project).length).toBe(1);
      expect(existsSync(outcome.dataDir)).toBe(true);
    } finally {
      const pid = Number((await readFile(join(outcome.dataDir, "proxy", "proxy.pid"), "utf8")).trim());
      process.kill(pid, "SIGTERM");
      for (let waited = 0; waited < 15_000 && (await listening(keptPort)); waited += 100) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      execFileSync("rm", ["-rf", outcome.dataDir]);
    }
  }, 420_000);
});
