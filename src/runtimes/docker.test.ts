import { describe, expect, it } from "vitest";
import { DockerRuntime, dockerSocketOf, localDocker } from "./docker.js";

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
    await expect(docker.listByLabel("ferry.task", "t1")).rejects.toThrow(
      "listing containers labelled ferry.task=t1: cannot reach the Docker engine on /nonexistent/docker.sock (ENOENT); is dockerd running?",
    );
  });
});

describe("dockerSocketOf (DOCKER_HOST)", () => {
  it("takes the path of a unix:// socket, and /var/run/docker.sock when DOCKER_HOST is unset", () => {
    expect(dockerSocketOf(undefined)).toBe("/var/run/docker.sock");
    expect(dockerSocketOf("")).toBe("/var/run/docker.sock");
    expect(dockerSocketOf("unix:///run/user/1000/docker.sock")).toBe("/run/user/1000/docker.sock");
  });

  it.each([
    ["tcp://127.0.0.1:2375", /is not a unix socket; .*unix:\/\/\/var\/run\/docker\.sock.*ssh or by an agent/],
    ["ssh://deploy@build-1", /is not a unix socket/],
    ["npipe:////./pipe/docker_engine", /is not a unix socket/],
    ["/var/run/docker.sock", /is not a unix socket/],
    ["unix://docker.sock", /must name the socket by its absolute path/],
  ])("refuses %s, naming DOCKER_HOST and the field", (value, message) => {
    expect(() => dockerSocketOf(value)).toThrow(message);
    try {
      dockerSocketOf(value);
    } catch (error) {
      expect((error as Error).message).toMatch(/^DOCKER_HOST: /);
      expect((error as { issues: { pointer: string }[] }).issues).toEqual([
        { pointer: "/DOCKER_HOST", detail: "must be unix:///absolute/path/to/docker.sock" },
      ]);
    }
  });

  it("gives one shared runtime per socket", () => {
    expect(localDocker("/run/a.sock")).toBe(localDocker("/run/a.sock"));
    expect(localDocker("/run/a.sock")).not.toBe(localDocker("/run/b.sock"));
    expect(localDocker()).toBe(localDocker("/var/run/docker.sock"));
  });
});
