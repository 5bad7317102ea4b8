import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type CliResult,
  expectSuccess,
  type FerryServer,
  isolatedEnv,
  parseJson,
  runCommand,
  runFerry,
  testAdminKey,
  trackedResources,
} from "./helpers/cli.js";
import { docker, exampleDirectory, registryDigest, rewrite } from "./helpers/examples.js";
import { startRegistry, type TestRegistry } from "./helpers/registry.js";

/**
 * The acceptance test of releases, run the way the README's walkthrough runs them: the
 * example's own build.sh builds and pushes the hello image (1.0.0 and 1.0.1) to a real
 * registry, its ferry.yml (renamed so nothing collides) is applied with the real
 * `bin/ferry`, and the CLI creates, deploys, promotes and rolls back releases that run as
 * real containers on this host's Docker engine, served by a real `ferry server` process.
 */

const EXAMPLE = exampleDirectory("hello");

const { startServerInNewHome, cleanUp } = trackedResources("ferry-example-e2e-");

function expectFailure(result: CliResult): void {
  expect(result.code, `stdout: ${result.stdout}\nstderr: ${result.stderr}`).toBe(1);
}

/** Replaces `from` in examples/hello/ferry.yml's text, which must hold it exactly `times` times. */
const rewriteHello = (text: string, from: string, to: string, times = 1) =>
  rewrite("examples/hello/ferry.yml", text, from, to, times);

interface ReleaseJson {
  version: string;
  images: { name: string; tag: string; digest: string; reference: string }[];
}

interface DeploymentJson {
  taskId: string;
  release: string;
  environment: string;
  state: string;
  error: string | null;
}

describe("the hello example: build, apply, release, promote, pin, fail and roll back", () => {
  const suffix = randomBytes(4).toString("hex");
  const projectName = `hello-${suffix}`;
  /** The slug apply derives from the name; containers carry it as label ferry.project. */
  const slug = projectName;
  const repository = `demo/app-${suffix}`;
  const adminKey = testAdminKey();
  const timings: [string, number][] = [];

  let home: string;
  let registry: TestRegistry | undefined;
  let server: FerryServer | undefined;
  let registryHost: string;
  let ferryFile: string;
  let brokenFerryFile: string;

  const env = () => isolatedEnv(home);
  const cli = (args: string[], timeoutMs = 60_000) => {
    if (!server) throw new Error("the ferry server is not running");
    return runFerry(
      args,
      isolatedEnv(home, {
        FERRY_URL: server.url,
        FERRY_API_KEY: adminKey,
        FERRY_CONFIG: join(home, "ferry-config.json"),
      }),
      { timeoutMs },
    );
  };
  const timed = async <T>(what: string, action: () => Promise<T>): Promise<T> => {
    const started = Date.now();
    try {
      return await action();
    } finally {
      const elapsed = Date.now() - started;
      timings.push([what, elapsed]);
      console.log(`[example e2e] ${what}: ${(elapsed / 1000).toFixed(1)} s`);
    }
  };

  /** What the project's container in `environment` answers at "/", found by its labels and published port. */
  const answer = async (environment: string): Promise<string> => {
    const lines = (
      await docker(
        [
          "ps",
          "--filter",
          `label=ferry.project=${slug}`,
          "--filter",
          `label=ferry.env=${environment}`,
          "--format",
          "{{.Names}}\t{{.Ports}}",
        ],
        env(),
      )
    )
      .trim()
      .split("\n")
      .filter((line) => line !== "");
    expect(lines, `running containers of ${slug} in ${environment}`).toHaveLength(1);
    const [name, ports] = (lines[0] ?? "").split("\t");
    expect(name).toBe(`hello-${suffix}-${environment}`);
    const port = /127\.0\.0\.1:(\d+)->8080\/tcp/.exec(ports ?? "")?.[1];
    if (!port) throw new Error(`container ${name} publishes no port for 8080: ${ports}`);
    const response = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(5_000) });
    expect(response.status).toBe(200);
    return (await response.text()).trim();
  };

  /** The digest the registry serves for a tag of the repository now. */
  const digestOf = async (tag: string): Promise<string> => {
    if (!registry) throw new Error("the registry is not running");
    return registryDigest(registry.url, repository, tag);
  };

  const releaseDigest = async (version: string): Promise<string> => {
    const shown = await cli(["release", "show", "--project", slug, version, "--json"]);
    expectSuccess(shown);
    const release = parseJson<ReleaseJson>(shown);
    expect(release.images).toHaveLength(1);
    return release.images[0]?.digest ?? "";
  };

  beforeAll(async () => {
    const [startedRegistry, started] = await Promise.all([
      timed("start the registry", () => startRegistry()),
      timed("start ferry server", () => startServerInNewHome(adminKey)),
    ]);
    registry = startedRegistry;
    ({ home, server } = started);
    registryHost = new URL(registry.url).host;

    const example = await readFile(join(EXAMPLE, "ferry.yml"), "utf8");
    let text = rewriteHello(example, "project:\n  name: hello\n", `project:\n  name: ${projectName}\n`);
    text = rewriteHello(text, "url: http://127.0.0.1:5000\n", `url: ${registry.url}\n`);
    text = rewriteHello(text, "repository: demo/hello\n", `repository: ${repository}\n`);
    text = rewriteHello(text, '"hello-#{Ferry.Environment.Slug}"', `"hello-${suffix}-#{Ferry.Environment.Slug}"`, 2);
    ferryFile = join(home, "ferry.yml");
    await writeFile(ferryFile, text);
    let broken = rewriteHello(text, '/health"', '/nope"');
    broken = rewriteHello(broken, "deadlineSeconds: 30\n", "deadlineSeconds: 5\n");
    brokenFerryFile = join(home, "ferry.broken.yml");
    await writeFile(brokenFerryFile, broken);
  });

  afterAll(async () => {
    const cleanEnv = isolatedEnv(home ?? tmpdir());
    await server?.stop();
    // Containers first (they hold the images), found by the project's label only.
    const containers = (
      await docker(["ps", "--all", "--quiet", "--filter", `label=ferry.project=${slug}`], cleanEnv).catch(() => "")
    )
      .split("\n")
      .filter((id) => id !== "");
    if (containers.length > 0) await docker(["rm", "--force", ...containers], cleanEnv).catch(() => "");
    // The images build.sh made and the engine pulled: only those of this test's repository.
    if (registryHost) {
      const ours = `${registryHost}/${repository}`;
      const images = (await docker(["image", "ls", "--format", "{{.Repository}}\t{{.ID}}"], cleanEnv).catch(() => ""))
        .split("\n")
        .map((line) => line.split("\t"))
        .filter(([name]) => name === ours)
        .map(([, id]) => id ?? "");
      for (const id of new Set(images)) await docker(["image", "rm", "--force", id], cleanEnv).catch(() => "");
    }
    await registry?.stop();
    await cleanUp();
    console.log(
      `[example e2e] timings: ${timings.map(([what, ms]) => `${what} ${(ms / 1000).toFixed(1)} s`).join("; ")}`,
    );
  });

  it("builds the example's images with build.sh and applies its ferry.yml", { timeout: 90_000 }, async () => {
    const built = await timed("build.sh (two images, pushed)", () =>
      runCommand(join(EXAMPLE, "build.sh"), [], isolatedEnv(home, { REGISTRY: registryHost, REPOSITORY: repository }), {
        timeoutMs: 90_000,
      }),
    );
    expectSuccess(built);
    expect(await digestOf("1.0.0")).toMatch(/^sha256:[0-9a-f]{64}$/);

    const applied = await timed("ferry apply", () => cli(["apply", "-f", ferryFile]));
    expectSuccess(applied);
    expect(applied.stdout).toMatch(/^applied: /m);
  });

  it("creates release 1.0.0 and deploys it to dev, where it answers with the latest image", async () => {
    const created = await timed("release 1.0.0 → dev", () =>
      cli(["release", "create", "--project", slug, "--version", "1.0.0", "--deploy-to", "dev", "--wait"]),
    );
    expectSuccess(created);
    expect(created.stdout).toContain(`${slug} 1.0.0 → dev`);
    // The version rule >=1.0.0 picks the highest tag: the release runs image 1.0.1.
    expect(await answer("dev")).toBe("hello from 1.0.1");
    expect(await releaseDigest("1.0.0")).toBe(await digestOf("1.0.1"));
  });

  it("refuses prod before test, naming the lifecycle rule", async () => {
    const refused = await cli(["deploy", "--project", slug, "--release", "1.0.0", "--env", "prod", "--wait"]);
    expectFailure(refused);
    expect(refused.stderr).toContain("requires phase");
    expect(refused.stderr).toContain("before 'prod'");
    expect(refused.stdout).toBe("");
  });

  it("promotes to test, then to prod, where the container answers too", async () => {
    const toTest = await timed("promote → test", () => cli(["promote", "--project", slug, "--to", "test", "--wait"]));
    expectSuccess(toTest);
    expect(toTest.stdout).toContain(`${slug} 1.0.0 → test: succeeded`);
    expect(await answer("test")).toBe("hello from 1.0.1");

    const toProd = await timed("promote → prod", () => cli(["promote", "--project", slug, "--to", "prod", "--wait"]));
    expectSuccess(toProd);
    expect(toProd.stdout).toContain(`${slug} 1.0.0 → prod: succeeded`);
    expect(await answer("prod")).toBe("hello from 1.0.1");
    // The prod-scoped value of Greeting reached the container.
    const logs = await runCommand("docker", ["logs", `hello-${suffix}-prod`], env(), { timeoutMs: 60_000 });
    expect(logs.stdout + logs.stderr).toContain("hello 1.0.1 starting (greeting: Hello from production)");
  });

  it("keeps deploying the pinned digest after the tag moves, while a new release takes the new one", {
    timeout: 60_000,
  }, async () => {
    const pinned = await releaseDigest("1.0.0");
    // Tag 1.0.1 now points at the content of 1.0.0.
    await timed("re-tag 1.0.1 in the registry", async () => {
      await docker(["tag", `${registryHost}/${repository}:1.0.0`, `${registryHost}/${repository}:1.0.1`], env());
      await docker(["push", "--quiet", `${registryHost}/${repository}:1.0.1`], env());
    });
    const moved = await digestOf("1.0.1");
    expect(moved).not.toBe(pinned);
    expect(moved).toBe(await digestOf("1.0.0"));

    // A new release resolves the tag again: it pins the new digest, and dev (auto-deploy)
    // now serves the 1.0.0 content, which the smoke test of tag 1.0.1 rejects.
    const created = await timed("release 1.1.0 → dev (smoke test fails)", () =>
      cli(["release", "create", "--project", slug, "--version", "1.1.0", "--wait", "--json"]),
    );
    expectFailure(created);
    const release = parseJson<ReleaseJson & { deployments: DeploymentJson[] }>(created);
    expect(release.images.map((image) => [image.tag, image.digest])).toEqual([["1.0.1", moved]]);
    expect(release.deployments).toEqual([expect.objectContaining({ environment: "dev", state: "failed" })]);
    expect(created.stderr).toContain('body does not contain "hello from 1.0.1"');
    expect(await releaseDigest("1.1.0")).toBe(moved);
    expect(await releaseDigest("1.1.0")).not.toBe(await releaseDigest("1.0.0"));
    expect(await answer("dev")).toBe("hello from 1.0.0");

    // Redeploying 1.0.0 runs its pinned digest, not what the tag points at now.
    const redeployed = await timed("redeploy 1.0.0 → dev", () =>
      cli(["deploy", "--project", slug, "--release", "1.0.0", "--env", "dev", "--wait"]),
    );
    expectSuccess(redeployed);
    expect(redeployed.stdout).toContain(`from ${registryHost}/${repository}@${pinned}`);
    expect(await answer("dev")).toBe("hello from 1.0.1");
  });

  it("fails a release whose health check never passes, with the container's log, and rolls back", {
    timeout: 60_000,
  }, async () => {
    expectSuccess(await cli(["apply", "-f", brokenFerryFile]));
    const started = Date.now();
    const failed = await timed("release 2.0.0 → dev (health check fails)", () =>
      cli(["release", "create", "--project", slug, "--version", "2.0.0", "--deploy-to", "dev", "--wait"]),
    );
    const elapsed = Date.now() - started;
    expectFailure(failed);
    // deadlineSeconds is 5: pull, start, 2 s to settle and 5 s of probes, far below 30 s.
    expect(elapsed).toBeLessThan(30_000);
    expect(failed.stderr).toContain(`${slug} 2.0.0 → dev failed`);
    expect(failed.stderr).toMatch(/\/nope did not answer HTTP 200 within 5 s/);
    expect(failed.stderr).toMatch(/last \d+ log lines of task/);
    // The report's last lines hold the container's own log: httpd's line for each probe.
    expect(failed.stderr).toMatch(/last \d+ log lines of container hello-[0-9a-f]+-dev:/);
    expect(failed.stderr).toMatch(/\]:\d+: url:\/nope$/m);
    // The whole log, as followed and from `ferry task logs`, has the container's start line
    // (tag 1.0.1 holds the 1.0.0 content now).
    const containerStart = /hello 1\.0\.0 starting \(greeting: Hello\)/;
    expect(failed.stdout).toMatch(containerStart);
    const taskId = /→ dev: following task (\S+)/.exec(failed.stdout)?.[1] ?? "";
    expect(taskId).not.toBe("");
    const logs = await cli(["task", "logs", taskId]);
    expectSuccess(logs);
    expect(logs.stdout).toMatch(/last \d+ log lines of container hello-[0-9a-f]+-dev:/);
    expect(logs.stdout).toMatch(containerStart);
    expect(logs.stdout).toMatch(/\]:\d+: url:\/nope$/m);

    const rolledBack = await timed("rollback dev", () =>
      cli(["rollback", "--project", slug, "--env", "dev", "--wait", "--json"]),
    );
    expectSuccess(rolledBack);
    expect(parseJson<DeploymentJson>(rolledBack)).toMatchObject({
      release: "1.0.0",
      environment: "dev",
      state: "succeeded",
    });
    expect(await answer("dev")).toBe("hello from 1.0.1");
  });
});
