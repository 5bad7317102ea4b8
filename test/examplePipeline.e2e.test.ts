import { cp, readFile, writeFile } from "node:fs/promises";
import { get } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  expectSuccess,
  FERRY,
  type FerryServer,
  isolatedEnv,
  parseJson,
  runCommand,
  runFerry,
  testAdminKey,
  trackedResources,
} from "./helpers/cli.js";
import { docker, exampleDirectory, registryDigest, rewrite } from "./helpers/examples.js";
import { freePort, startRegistry, type TestRegistry } from "./helpers/registry.js";

/**
 * Issue 15's acceptance end to end, the way a person runs examples/pipeline: its own
 * pipeline.sh against a real `ferry server`, a real registry and this host's Docker engine.
 * The script builds and pushes `1.0.3-beta`; the feed trigger it creates (polling: the
 * registry's notifications would need its configuration to name the trigger) makes release
 * 1.0.3 and deploys it to dev, where an isolated copy with limits is tested and the image
 * gets its release tags; the script then promotes it to prod, blue/green behind the proxy.
 * A beta whose functional tests fail (its home page says the wrong thing) stops the script:
 * no release tag, nothing promoted, nothing of its test left. Then `ferry run` runs the same
 * file's dev process with no server at all.
 */

const EXAMPLE = exampleDirectory("pipeline");
const { startServerInNewHome, cleanUp } = trackedResources("ferry-pipeline-e2e-");

/** Everything on this host's engine labelled ferry.task=<task>: containers, networks, volumes. */
async function labelledWith(taskId: string): Promise<string[]> {
  const label = `label=ferry.task=${taskId}`;
  const lines = await Promise.all([
    docker(["ps", "-a", "--filter", label, "--format", "container {{.Names}}"]),
    docker(["network", "ls", "--filter", label, "--format", "network {{.Name}}"]),
    docker(["volume", "ls", "--filter", label, "--format", "volume {{.Name}}"]),
  ]);
  return lines.flatMap((text) => text.split("\n")).filter((line) => line !== "");
}

describe("examples/pipeline: push a beta, and Ferry tests it in isolation, tags it and promotes it", () => {
  const adminKey = testAdminKey();
  let home: string;
  let registry: TestRegistry;
  let server: FerryServer | undefined;
  let proxyPort: number;
  let example: string;

  const cliEnv = () =>
    isolatedEnv(home, {
      FERRY_URL: server?.url ?? "",
      FERRY_API_KEY: adminKey,
    });
  const digestOf = (tag: string) => registryDigest(registry.url, "pipeline/app", tag);

  beforeAll(async () => {
    proxyPort = await freePort();
    registry = await startRegistry();
    ({ home, server } = await startServerInNewHome(adminKey, [], { FERRY_PROXY_LISTEN: `127.0.0.1:${proxyPort}` }));
    // The example as a person copies it, pointed at this test's registry.
    example = join(home, "pipeline");
    await cp(EXAMPLE, example, { recursive: true });
    const file = join(example, "ferry.yml");
    const text = await readFile(file, "utf8");
    await writeFile(
      file,
      rewrite("examples/pipeline/ferry.yml", text, "url: http://127.0.0.1:5000\n", `url: ${registry.url}\n`),
    );
  }, 120_000);

  afterAll(async () => {
    for (const container of (
      await docker(["ps", "-a", "--filter", "label=ferry.project=pipeline-app", "--format", "{{.ID}}"])
    ).split("\n")) {
      if (container !== "") await docker(["rm", "-f", container]).catch(() => undefined);
    }
    const proxyPid = Number((await readFile(join(home, "data", "proxy", "proxy.pid"), "utf8").catch(() => "")).trim());
    if (proxyPid > 0) process.kill(proxyPid, "SIGTERM");
    await registry?.stop();
    await cleanUp();
  });

  it("pipeline.sh 1.0.3: release 1.0.3 tested in isolation and tagged in dev, promoted to prod, nothing of the test left", async () => {
    const run = await runCommand(
      join(example, "pipeline.sh"),
      ["1.0.3"],
      {
        ...cliEnv(),
        FERRY,
        REGISTRY: new URL(registry.url).host,
        POLL_SECONDS: "10",
        WAIT_SECONDS: "240",
      },
      { timeoutMs: 420_000 },
    );
    expect(run.code, `stdout: ${run.stdout}\nstderr: ${run.stderr}`).toBe(0);
    expect(run.stdout).toContain("== 6. done");

    // Stage 2 ran the functional tests against the isolated copy; stage 3 tagged what passed.
    const release = parseJson<{ images: { tag: string; digest: string }[] }>(
      await runFerry(["release", "show", "1.0.3", "--project", "pipeline-app", "--json"], cliEnv()),
    );
    const beta = await digestOf("1.0.3-beta");
    expect(release.images).toEqual([expect.objectContaining({ tag: "1.0.3-beta", digest: beta })]);
    expect(await digestOf("1.0.3")).toBe(beta);
    expect(await digestOf("latest")).toBe(beta);

    const tasks = parseJson<{ id: string; title: string }[]>(await runFerry(["task", "list", "--json"], cliEnv()));
    const devTask = tasks.find((task) => task.title === "Deploy pipeline-app 1.0.3 to dev");
    expect(devTask, JSON.stringify(tasks)).toBeDefined();
    const log = await runFerry(["task", "logs", devTask?.id ?? ""], cliEnv());
    expectSuccess(log);
    expect(log.stdout).toContain("[home page]");
    expect(log.stdout).toContain("[from inside the network]");
    // Nothing the isolated copy was made of is left: containers, network, volumes.
    expect(await labelledWith(devTask?.id ?? "")).toEqual([]);

    // Stages 4–5: prod serves 1.0.3 through the proxy.
    // fetch() drops a Host header: node:http sends it.
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      get({ host: "127.0.0.1", port: proxyPort, path: "/", headers: { host: "pipeline.localhost" } }, (response) => {
        let body = "";
        response.setEncoding("utf8").on("data", (chunk: string) => {
          body += chunk;
        });
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
      }).on("error", reject);
    });
    expect(answer.status).toBe(200);
    expect(answer.body.trim()).toBe("app 1.0.3");
  }, 480_000);

  it("pipeline.sh 1.0.4 with a beta that fails its functional tests: the script stops, no release tag, nothing promoted, nothing of the test left", async () => {
    // The same example whose app says the wrong thing on its home page: the functional test fails.
    const broken = join(home, "pipeline-broken");
    await cp(example, broken, { recursive: true });
    await writeFile(join(broken, "app", "index.html.in"), "broken @VERSION@\n");
    const latestBefore = await digestOf("latest");
    const run = await runCommand(
      join(broken, "pipeline.sh"),
      ["1.0.4"],
      {
        ...cliEnv(),
        FERRY,
        REGISTRY: new URL(registry.url).host,
        POLL_SECONDS: "10",
        WAIT_SECONDS: "240",
      },
      { timeoutMs: 420_000 },
    );
    expect(run.code, `stdout: ${run.stdout}\nstderr: ${run.stderr}`).not.toBe(0);
    expect(run.stdout).toContain("== 2-3.");
    expect(run.stdout).not.toContain("== 4-5.");

    // The trigger made release 1.0.4 and deployed it to dev, where the functional tests failed.
    const tasks = parseJson<{ id: string; title: string; state: string; error: string | null }[]>(
      await runFerry(["task", "list", "--json"], cliEnv()),
    );
    const devTask = tasks.find((task) => task.title === "Deploy pipeline-app 1.0.4 to dev");
    expect(devTask?.state, JSON.stringify(tasks)).toBe("failed");
    expect(devTask?.error).toMatch(/step 'Functional tests' failed: isolated group: step 'home page' failed/);
    const log = await runFerry(["task", "logs", devTask?.id ?? ""], cliEnv());
    expect(log.stdout).not.toContain("[Release tags]");

    // No release tags: 1.0.4 does not exist in the registry, latest still points to 1.0.3.
    const tagged = await fetch(`${registry.url}/v2/pipeline/app/manifests/1.0.4`, {
      method: "HEAD",
      headers: { accept: "application/vnd.docker.distribution.manifest.v2+json" },
      signal: AbortSignal.timeout(5_000),
    });
    expect(tagged.status).toBe(404);
    expect(await digestOf("latest")).toBe(latestBefore);
    expect(await digestOf("latest")).toBe(await digestOf("1.0.3-beta"));

    // Nothing promoted: no deployment of 1.0.4 to prod, and the lifecycle refuses one.
    expect(tasks.some((task) => task.title === "Deploy pipeline-app 1.0.4 to prod")).toBe(false);
    const promoted = await runFerry(
      ["deploy", "--project", "pipeline-app", "--release", "1.0.4", "--env", "prod"],
      cliEnv(),
    );
    expect(promoted.code).not.toBe(0);
    expect(promoted.stderr).toContain("deploy this release to 'dev' before 'prod'");

    // Everything the run created for its test is gone: containers, network, volumes.
    expect(await labelledWith(devTask?.id ?? "")).toEqual([]);
  }, 480_000);

  it("ferry run -f examples/pipeline/ferry.yml --env dev runs the same dev process with no server", async () => {
    await server?.stop();
    server = undefined;
    const local = await runFerry(
      ["run", "-f", join(example, "ferry.yml"), "--env", "dev", "--version", "1.0.3", "--image", "web=1.0.3-beta"],
      isolatedEnv(home),
      { timeoutMs: 300_000 },
    );
    expectSuccess(local);
    expect(local.stdout).toContain("[home page]");
    expect(local.stdout).toContain("[Release tags]");
    // The release tags were already there, on the same digest: unchanged.
    expect(await digestOf("1.0.3")).toBe(await digestOf("1.0.3-beta"));
  }, 320_000);
});
