import { type ChildProcess, spawn } from "node:child_process";
import { chmod, mkdtemp, readFile, rm } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcessRuntime } from "../src/runtimes/process.js";
import { FERRY, isolatedEnv, runFerry, waitFor } from "./helpers/cli.js";
import { freePort } from "./helpers/registry.js";

const DONE = "Ctrl-C stops the server";

/**
 * `npm run demo`'s command, as a user runs it: the real `bin/ferry demo` on this machine,
 * which starts the server on its embedded defaults, seeds the demo and deploys the demo app
 * dev → test → prod blue/green through a `ferry proxy` it starts — once with the process
 * runtime (real supervisors, the app running as nobody when the tests run as root; Docker
 * plays no part), once with containers on the real Docker engine (the demo builds its image
 * from this host's Node.js, serves it from its own registry and pins it by digest), as
 * `--runtime auto` chooses when an engine answers. The proxy and the app outlive the demo's
 * server, as they would a real one.
 */
describe("ferry demo --runtime", () => {
  it("refuses a runtime it does not know, naming the flag and the choices, before starting anything", async () => {
    const home = await mkdtemp(join(tmpdir(), "ferry-demo-flag-"));
    try {
      const result = await runFerry(
        ["demo", "--runtime", "kubernetes", "--data-dir", join(home, "data")],
        isolatedEnv(home),
      );
      expect(result.code).toBe(2);
      expect(result.stderr).toContain(
        "option '--runtime <runtime>' argument 'kubernetes' is invalid. use auto, docker or process",
      );
      expect(result.stdout).toBe("");
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});

describe.each([{ runtime: "process" }, { runtime: "docker" }] as const)(
  "ferry demo --runtime $runtime: the demo app deployed dev → test → prod through ferry proxy",
  ({ runtime }) => {
    let home = "";
    let port = 0;
    let proxyPort = 0;
    let env: NodeJS.ProcessEnv;
    let first: Demo | undefined;

    /** Every demo started, so that a failing test leaves none running. */
    const started: Demo[] = [];
    const demo = () => {
      const running = startDemo(
        ["demo", "--port", String(port), "--data-dir", join(home, "data"), "--runtime", runtime],
        env,
      );
      started.push(running);
      return running;
    };
    const untilReady = async (running: Demo) => {
      await waitFor(
        () => running.stdout().includes(DONE) || running.stderr().includes("ferry:"),
        "the demo to print its summary",
        200_000,
      );
      expect(running.stdout(), running.stderr()).toContain(DONE);
      return running.stdout();
    };
    beforeAll(async () => {
      home = await mkdtemp(join(tmpdir(), "ferry-demo-e2e-"));
      // The work root (FERRY_WORK_DIR) is in here: the account the app runs as passes through.
      await chmod(home, 0o711);
      [port, proxyPort] = [await freePort(), await freePort()];
      env = isolatedEnv(home, {
        FERRY_PROXY_LISTEN: `127.0.0.1:${proxyPort}`,
        FERRY_WORK_DIR: join(home, "work"),
      });
    });

    /** The demo app's instances: [environment, name, state], by environment. */
    const instances = async () => {
      if (runtime === "process") {
        const processes = new ProcessRuntime({ directory: join(home, "work", "processes") });
        return (await processes.listByLabel("ferry.project", "hello"))
          .map((each) => [each.labels["ferry.env"], each.name, each.state])
          .sort();
      }
      return (await demoContainers()).map((each) => [each.env, each.name, each.state]).sort();
    };
    /** Containers of project hello run from an image of one of this test's demo registries. */
    const registries = new Set<string>();
    const demoContainers = async () => {
      const { default: Docker } = await import("dockerode");
      const listed = await new Docker().listContainers({ all: true, filters: { label: ["ferry.project=hello"] } });
      return listed
        .filter((each) => [...registries].some((host) => each.Image.startsWith(`${host}/demo/hello@sha256:`)))
        .map((each) => ({
          id: each.Id,
          name: (each.Names[0] ?? "").replace(/^\//, ""),
          env: each.Labels["ferry.env"],
          state: each.State === "exited" ? "exited" : each.State,
        }));
    };
    const noteRegistry = (output: string) => {
      const host = /as containers \(image (127\.0\.0\.1:\d+)\/demo\/hello:/.exec(output)?.[1];
      if (host) registries.add(host);
    };

    afterAll(async () => {
      for (const running of started) await running.stop();
      await new ProcessRuntime({ directory: join(home, "work", "processes") }).removeByLabel("ferry.project", "hello");
      if (runtime === "docker") {
        const { default: Docker } = await import("dockerode");
        const docker = new Docker();
        for (const container of await demoContainers()) await docker.getContainer(container.id).remove({ force: true });
        // The image the demo built (≈ 100 MB: this host's Node.js), under each registry it had.
        for (const host of registries) {
          const images = await docker.listImages({ filters: { reference: [`${host}/demo/hello`] } });
          for (const image of images)
            await docker
              .getImage(image.Id)
              .remove({ force: true })
              .catch(() => undefined);
        }
      }
      const proxyPid = Number(
        (await readFile(join(home, "data", "proxy", "proxy.pid"), "utf8").catch(() => "")).trim(),
      );
      if (proxyPid > 0) process.kill(proxyPid, "SIGTERM");
      await rm(home, { recursive: true, force: true });
    });

    it("deploys dev, test and prod, and the app answers through the proxy in each", async () => {
      first = demo();
      const output = await untilReady(first);
      noteRegistry(output);
      expect(output).toContain(runtime === "docker" ? "as containers (image 127.0.0.1:" : "as supervised processes");
      for (const environment of ["dev", "test", "prod"])
        expect(output).toMatch(new RegExp(`^  ${environment}\\s+succeeded$`, "m"));
      expect(output).toMatch(
        new RegExp(
          `^  dev\\s+http://dev\\.localhost:${proxyPort}/\\s+→ Hello from Ferry: demo app release 1\\.0\\.0 in Development`,
          "m",
        ),
      );
      expect(await through("dev.localhost")).toMatch(
        /^Hello from Ferry: demo app release 1\.0\.0 in Development \(pid \d+\)$/,
      );
      expect(await through("test.localhost")).toMatch(/^Hello from Ferry: demo app release 1\.0\.0 in Test/);
      expect(await through("prod.localhost")).toMatch(/^Hello from production: demo app release 1\.0\.0 in Production/);
      // Each environment is its own colour: a process, or a container, of its own.
      expect((await instances()).map(([environment, , state]) => [environment, state])).toEqual([
        ["dev", "running"],
        ["prod", "running"],
        ["test", "running"],
      ]);
    });

    it("prints a sign-in that works on the dashboard's sign-in route, and an API key the CLI can use", async () => {
      const output = first?.stdout() ?? "";
      const signIn = /sign in as (\S+), password (\S+) /.exec(output);
      const response = await fetch(`http://127.0.0.1:${port}/api/v1/session`, {
        method: "POST",
        headers: { "content-type": "application/json", origin: `http://127.0.0.1:${port}` },
        body: JSON.stringify({ username: signIn?.[1], password: signIn?.[2] }),
      });
      expect(response.status, await response.clone().text()).toBe(200);
      expect(response.headers.get("set-cookie")).toMatch(/^ferry_session=/);
      const key = /FERRY_API_KEY=(\S+)/.exec(output)?.[1] ?? "";
      const tasks = await fetch(`http://127.0.0.1:${port}/api/v1/tasks`, {
        headers: { authorization: `Bearer ${key}` },
      });
      const body = (await tasks.json()) as { items: { state: string }[] };
      expect(body.items.map((task) => task.state)).toEqual(["succeeded", "succeeded", "succeeded"]);
      const releases = await fetch(`http://127.0.0.1:${port}/api/v1/projects/hello/releases`, {
        headers: { authorization: `Bearer ${key}` },
      });
      const [release] = ((await releases.json()) as { items: { images: { reference: string }[] }[] }).items;
      // A container demo's release pins its image by digest, from the demo's feed, like any release.
      expect(release?.images.map((image) => image.reference)).toEqual(
        runtime === "docker" ? [expect.stringMatching(/^127\.0\.0\.1:\d+\/demo\/hello@sha256:[a-f0-9]{64}$/)] : [],
      );
    });

    it("the app keeps answering when the demo's server stops; the demo started again reuses its data", async () => {
      const running = first;
      if (!running) throw new Error("the demo did not start");
      const pid = Number(/\(pid (\d+)\)/.exec(await through("dev.localhost"))?.[1]);
      const before = await instances();
      await running.stop();
      expect(await through("dev.localhost")).toMatch(/release 1\.0\.0 in Development/);
      const again = demo();
      const output = await untilReady(again);
      noteRegistry(output);
      expect(output).not.toContain("demo project created");
      expect(output).not.toContain("Deploying");
      expect(output).toMatch(
        /^ {2}prod\s+http:\/\/prod\.localhost:\d+\/\s+→ Hello from production: demo app release 1\.0\.0/m,
      );
      // The same process or container serves: nothing was deployed again.
      expect(await through("dev.localhost")).toContain(`(pid ${pid})`);
      expect(await instances()).toEqual(before);
      await again.stop();
    });

    it("ferry demo --stop stops the app and the proxy; the next demo brings the live colours back", async () => {
      const stopped = startDemo(["demo", "--stop", "--data-dir", join(home, "data")], env);
      await waitFor(() => stopped.stdout().includes("Stopped"), "demo --stop to report", 60_000);
      await stopped.stop();
      expect(stopped.stdout()).toContain(
        runtime === "docker"
          ? "Stopped 0 process(es) and 3 container(s) of the demo app and the ferry proxy"
          : "Stopped 3 process(es) and 0 container(s) of the demo app and the ferry proxy",
      );
      await expect(through("dev.localhost")).rejects.toThrow();
      const again = demo();
      const output = await untilReady(again);
      expect(output).toMatch(
        /^ {2}dev\s+http:\/\/dev\.localhost:\d+\/\s+→ Hello from Ferry: demo app release 1\.0\.0 in Development/m,
      );
      expect(await through("test.localhost")).toMatch(/release 1\.0\.0 in Test/);
      await again.stop();
    });

    /** The demo app's answer through the proxy for a host. */
    function through(host: string): Promise<string> {
      return new Promise((resolve, reject) => {
        const request = http.get({ host: "127.0.0.1", port: proxyPort, path: "/", headers: { host } }, (response) => {
          let body = "";
          response.setEncoding("utf8").on("data", (chunk: string) => {
            body += chunk;
          });
          response.on("end", () => resolve(body.trim()));
        });
        request.on("error", reject);
      });
    }
  },
);

interface Demo {
  stdout(): string;
  stderr(): string;
  /** Ctrl-C: SIGINT, as a terminal sends it; resolves when the demo has ended. */
  stop(): Promise<void>;
}

/** `bin/ferry demo …` with exactly this environment, its output collected. */
function startDemo(args: readonly string[], env: NodeJS.ProcessEnv): Demo {
  const child: ChildProcess = spawn(FERRY, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const ended = new Promise<void>((resolve) => child.once("close", () => resolve()));
  return {
    stdout: () => stdout,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGINT");
      await ended;
    },
  };
}
