import { describe, expect, it } from "vitest";
import { DockerRuntime } from "./docker.js";

/** Checks that refuse a spec before any call reaches the engine (the socket here does not exist). */
describe("DockerRuntime input checks", () => {
  const docker = new DockerRuntime({ socketPath: "/nonexistent/docker.sock", callTimeoutMs: 1_000 });
  const spec = { name: "ferry-shop-dev", image: "demo/app:1" };

  it.each([
    [{ name: "-v=/:/host" }, /is not a container name/],
    [{ name: "a/../b" }, /is not a container name/],
    [{ image: "--privileged" }, /is not an image reference/],
    [{ env: { "A=B": "x" } }, /is not an environment variable name/],
    [{ env: { OK: "nul\0byte" } }, /NUL/],
    [{ ports: [{ containerPort: 8080, hostIp: "0.0.0.0 -p 22:22" }] }, /is not an IP address/],
    [{ ports: [{ containerPort: 0 }] }, /container port 0 is not from 1 to 65535/],
    [{ volumes: [{ source: "/srv/../etc", target: "/data" }] }, /normalised absolute path/],
    [{ volumes: [{ source: "data:rw", target: "/data" }] }, /absolute host path or a volume name/],
    [{ volumes: [{ source: "data", target: "relative" }] }, /normalised absolute path/],
    [{ volumes: [{ source: "/srv/./data", target: "/data/" }] }, /normalised absolute path/],
    [{ networks: ["host --privileged"] }, /is not a network name/],
    [{ memoryMb: 2 }, /at least 6/],
    [{ labels: { "Bad Key": "x" } }, /is not a label key/],
  ])("refuses %j", async (change, message) => {
    await expect(docker.createAndStart({ ...spec, ...change })).rejects.toThrow(message);
  });

  it("says when the engine cannot be reached", async () => {
    await expect(docker.listByLabel("ferry.task", "t1")).rejects.toThrow(/cannot reach the Docker engine/);
  });
});
