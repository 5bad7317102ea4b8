import { mkdtemp, readdir, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import type { TargetHealth } from "../src/domain/targets.js";
import { apiRequest, type FerryServer, isolatedEnv, runFerry, testAdminKey, trackedResources } from "./helpers/cli.js";

const { startServerInNewHome, makeTemporaryDirectory, cleanUp } = trackedResources("ferry-docker-host-e2e-");

/**
 * DOCKER_HOST chooses the Docker engine of `ferry server`'s own host (ADR 0067), as a user
 * sees it: the real `bin/ferry server`, a local target with the docker runtime, and the
 * target's health check (every second here), which asks that engine for its version. A
 * socket nothing listens on is reported by its path; a second path to the real engine's
 * socket (a symlink) answers; a DOCKER_HOST that is no unix socket stops the server at start.
 */
describe("ferry server: DOCKER_HOST chooses this host's Docker engine", { timeout: 180_000 }, () => {
  afterAll(cleanUp);

  /** A server with this DOCKER_HOST and a local docker target; the target's health once it is `state`. */
  const healthWith = async (dockerHost: (home: string) => Promise<string> | string, state: TargetHealth["state"]) => {
    const key = testAdminKey();
    const socketHome = await makeTemporaryDirectory();
    const { server } = await startServerInNewHome(key, [], {
      DOCKER_HOST: await dockerHost(socketHome),
      FERRY_TARGET_HEALTH_INTERVAL_SECONDS: "1",
    });
    const call = (method: string, path: string, body?: unknown) =>
      apiRequest(`${server.url}${path}`, key, method, body);
    expect((await call("POST", "/api/v1/environments", { name: "Dev", slug: "dev" })).status).toBe(201);
    const created = await call("POST", "/api/v1/targets", {
      name: "This host",
      slug: "local",
      environments: ["dev"],
      transport: "local",
      runtimes: ["docker"],
    });
    expect(created.status, await created.clone().text()).toBe(201);
    const health = await waitForHealth(server, key, state);
    return { health, socketHome };
  };

  it("a socket no engine listens on: the target is down, its error naming that socket", async () => {
    const { health, socketHome } = await healthWith((home) => `unix://${join(home, "no-engine.sock")}`, "down");
    expect(health.dockerVersion).toBeNull();
    expect(health.error).toContain(
      `the Docker engine did not answer: asking the Docker engine its version: cannot reach the Docker engine on ${join(socketHome, "no-engine.sock")} (ENOENT)`,
    );
  });

  it("another path to the real engine's socket: the target is up with the engine's version", async () => {
    const { health } = await healthWith(async (home) => {
      await symlink("/var/run/docker.sock", join(home, "engine.sock"));
      return `unix://${join(home, "engine.sock")}`;
    }, "up");
    expect(health.dockerVersion).toMatch(/^\d+\.\d+/);
    expect(health.error).toBeNull();
  });

  it("refuses a DOCKER_HOST that is not a unix socket before it starts, naming the variable", async () => {
    const home = await mkdtemp(join(tmpdir(), "ferry-docker-host-e2e-"));
    try {
      const result = await runFerry(
        ["server", "--port", "0", "--data-dir", join(home, "data")],
        isolatedEnv(home, { DOCKER_HOST: "ssh://deploy@build-1" }),
      );
      expect(result.code).toBe(2);
      expect(result.stderr).toBe(
        'ferry: DOCKER_HOST: "ssh://deploy@build-1" is not a unix socket; Ferry reaches this host\'s Docker engine only through one, e.g. unix:///var/run/docker.sock (unset it for that default). A remote engine is a target of its own, reached over ssh or by an agent (docs/targets.md)\n',
      );
      await expect(readdir(home)).resolves.not.toContain("data");
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});

async function waitForHealth(server: FerryServer, key: string, state: TargetHealth["state"]): Promise<TargetHealth> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const response = await apiRequest(`${server.url}/api/v1/targets/local`, key);
    const { health } = (await response.json()) as { health: TargetHealth };
    if (health.state === state) return health;
    if (Date.now() > deadline) throw new Error(`target local is ${health.state} (${health.error ?? ""}), not ${state}`);
    await sleep(200);
  }
}
