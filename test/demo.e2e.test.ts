import { type ChildProcess, spawn } from "node:child_process";
import { chmod, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcessRuntime } from "../src/runtimes/process.js";
import { type Browser, launchBrowser } from "./helpers/browser.js";
import { expectSuccess, FERRY, isolatedEnv, runFerry, waitFor } from "./helpers/cli.js";
import { startLoad } from "./helpers/load.js";
import { freePort } from "./helpers/registry.js";

const DONE = "Ctrl-C stops the server";

/**
 * `npm run demo`'s command, as a user runs it: the real `bin/ferry demo` on this machine,
 * which starts the server on its embedded defaults, seeds the demo, deploys the demo app's
 * release 1.0.0 dev → test → prod blue/green through a `ferry proxy` it starts, then promotes
 * 1.1.0 through the three under its load generator. `--runtime auto` both ways, as a user's
 * machine decides it: DOCKER_HOST names a socket no engine answers on → the process runtime
 * (real supervisors, the app running as nobody when the tests run as root; Docker plays no
 * part); DOCKER_HOST names the real engine → containers (the demo builds its image from this
 * host's Node.js, serves it from its own registry and pins it by digest). The proxy and the
 * app outlive the demo's server, as they would a real one.
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

  it("refuses a DOCKER_HOST that is not a unix socket, naming the variable, before starting anything", async () => {
    const home = await mkdtemp(join(tmpdir(), "ferry-demo-flag-"));
    try {
      const result = await runFerry(
        ["demo", "--data-dir", join(home, "data")],
        isolatedEnv(home, { DOCKER_HOST: "tcp://127.0.0.1:2375" }),
      );
      expect(result.code).toBe(2);
      expect(result.stderr).toContain(
        'ferry: DOCKER_HOST: "tcp://127.0.0.1:2375" is not a unix socket; Ferry reaches this host\'s Docker engine only through one, e.g. unix:///var/run/docker.sock',
      );
      expect(result.stdout).toBe("");
      await expect(readdir(home)).resolves.not.toContain("data");
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  it("--runtime docker with no engine on DOCKER_HOST's socket says which socket, before starting anything", async () => {
    const home = await mkdtemp(join(tmpdir(), "ferry-demo-flag-"));
    try {
      const socket = join(home, "no-engine.sock");
      const result = await runFerry(
        ["demo", "--runtime", "docker", "--data-dir", join(home, "data")],
        isolatedEnv(home, { DOCKER_HOST: `unix://${socket}` }),
      );
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(`ferry: --runtime docker: no Docker engine answers on ${socket} (DOCKER_HOST);`);
      expect(result.stdout).toBe("");
      await expect(readdir(home)).resolves.not.toContain("data");
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});

describe.each([
  { runtime: "process", engine: "none" },
  { runtime: "docker", engine: "the host's" },
] as const)(
  "ferry demo --runtime auto, Docker engine on DOCKER_HOST: $engine → $runtime runtime: the demo app deployed dev → test → prod through ferry proxy",
  ({ runtime }) => {
    let home = "";
    let port = 0;
    let proxyPort = 0;
    let env: NodeJS.ProcessEnv;
    let first: Demo | undefined;
    let browser: Browser | undefined;
    /** The dashboard, opened while the demo deployed and never reloaded. */
    let dashboard: Page | undefined;
    /** What the prod cell of the open dashboard showed, each text once, in order. */
    const prodCellSeen: string[] = [];

    /** Every demo started, so that a failing test leaves none running. */
    const started: Demo[] = [];
    const demo = () => {
      const running = startDemo(
        ["demo", "--port", String(port), "--data-dir", join(home, "data"), "--runtime", "auto"],
        env,
      );
      started.push(running);
      return running;
    };
    const untilReady = async (running: Demo) => {
      await waitFor(
        () => running.stdout().includes(DONE) || running.stderr().includes("ferry:"),
        "the demo to print its summary",
        400_000,
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
        // What `auto` decides on: a socket nothing listens on, or the real engine's.
        DOCKER_HOST: runtime === "docker" ? "unix:///var/run/docker.sock" : `unix://${join(home, "no-engine.sock")}`,
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
    /** The key and server the demo printed for the CLI. */
    const cliEnv = (output: string) => {
      const exported = /^ {2}export FERRY_URL=(\S+) FERRY_API_KEY=(\S+)$/m.exec(output);
      return { ...env, FERRY_URL: exported?.[1] ?? "", FERRY_API_KEY: exported?.[2] ?? "" };
    };
    /** GET an API path with the key the demo printed. */
    const api = async <T>(output: string, path: string): Promise<T> => {
      const response = await fetch(`http://127.0.0.1:${port}${path}`, {
        headers: { authorization: `Bearer ${cliEnv(output).FERRY_API_KEY}` },
      });
      expect(response.status, path).toBe(200);
      return (await response.json()) as T;
    };
    /** hello's dashboard row through the API: environment → [live release, newest deployment's state]. */
    const dashboardRow = async (output: string) => {
      const body = await api<{
        items: {
          project: { slug: string };
          environments: {
            environment: string;
            live: { release: string } | null;
            latest: { release: string; state: string } | null;
          }[];
        }[];
      }>(output, "/api/v1/dashboard");
      const row = body.items.find((item) => item.project.slug === "hello");
      return Object.fromEntries(
        (row?.environments ?? []).map((cell) => [cell.environment, [cell.live?.release, cell.latest?.state]]),
      );
    };

    afterAll(async () => {
      await browser?.close();
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

    it("deploys 1.0.0, then promotes 1.1.0 dev → test → prod under load with 0 failed requests, live on an open dashboard", async () => {
      first = demo();
      const running = first;
      // The sign-in comes before the deployments, so the dashboard can watch them: open it then.
      await waitFor(() => /sign in as \S+, password \S+ /.test(running.stdout()), "the demo's sign-in", 120_000);
      const signIn = /sign in as (\S+), password (\S+) /.exec(running.stdout());
      browser = await launchBrowser();
      const page = await browser.newPage();
      dashboard = page;
      await page.goto(`http://127.0.0.1:${port}/`);
      await page.waitForURL(/\/sign-in/);
      await page.getByLabel("Username").fill(signIn?.[1] ?? "");
      await page.getByLabel("Password").fill(signIn?.[2] ?? "");
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByRole("heading", { name: "Dashboard" }).waitFor();
      await page.getByRole("rowheader", { name: /Hello/ }).waitFor({ timeout: 60_000 });
      // Set on this document: still there at the end means the page was never reloaded.
      await page.evaluate(() => {
        (globalThis as unknown as { openedBeforeTheDemoDeployed: boolean }).openedBeforeTheDemoDeployed = true;
      });
      const prodCell = page
        .getByRole("row")
        .filter({ has: page.getByRole("rowheader", { name: /Hello/ }) })
        .getByRole("cell")
        .nth(2);
      while (!running.stdout().includes(DONE) && !running.stderr().includes("ferry:")) {
        const text = (await prodCell.allInnerTexts().catch(() => [])).join(" ").replace(/\s+/g, " ").trim();
        if (text && prodCellSeen.at(-1) !== text) prodCellSeen.push(text);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      const output = await untilReady(running);
      noteRegistry(output);
      expect(output).toContain(
        runtime === "docker"
          ? "as containers (image 127.0.0.1:"
          : `as supervised processes (no Docker engine answers on ${join(home, "no-engine.sock")})`,
      );
      if (runtime === "docker") expect(output).toContain("Docker engine on /var/run/docker.sock)");
      const second = output.slice(output.indexOf("Release 1.1.0, promoted dev → test → prod blue/green"));
      expect(second, output).toContain("while a load generator asks all three through the router");
      for (const part of [output.slice(0, output.indexOf("Release 1.1.0")), second])
        for (const environment of ["dev", "test", "prod"])
          expect(part).toMatch(new RegExp(`^  ${environment}\\s+succeeded$`, "m"));
      // Zero downtime, as the demo shows it: every request answered, by 1.0.0 and then by 1.1.0.
      expect(second).toMatch(/^Requests while release 1\.1\.0 was switched in: [\d,]+, failed 0 \(zero downtime\)$/m);
      for (const host of ["dev.localhost", "test.localhost", "prod.localhost"]) {
        const line = new RegExp(
          `^ {2}${host.replace(".", "\\.")}\\s+([\\d,]+) requests, 0 failed; answered by 1\\.0\\.0 → 1\\.1\\.0$`,
          "m",
        );
        expect(second).toMatch(line);
        expect(Number(line.exec(second)?.[1]?.replaceAll(",", ""))).toBeGreaterThan(50);
      }
      expect(output).toMatch(
        new RegExp(
          `^  dev\\s+http://dev\\.localhost:${proxyPort}/\\s+→ Hello from Ferry: demo app release 1\\.1\\.0 in Development`,
          "m",
        ),
      );
      expect(await through("dev.localhost")).toMatch(
        /^Hello from Ferry: demo app release 1\.1\.0 in Development \(pid \d+\)$/,
      );
      expect(await through("test.localhost")).toMatch(/^Hello from Ferry: demo app release 1\.1\.0 in Test/);
      expect(await through("prod.localhost")).toMatch(/^Hello from production: demo app release 1\.1\.0 in Production/);
      // Each environment has its live colour and the previous one, kept running for a rollback.
      expect((await instances()).map(([environment, , state]) => [environment, state])).toEqual([
        ["dev", "running"],
        ["dev", "running"],
        ["prod", "running"],
        ["prod", "running"],
        ["test", "running"],
        ["test", "running"],
      ]);
      // Green through the API…
      expect(await dashboardRow(output)).toEqual({
        dev: ["1.1.0", "succeeded"],
        test: ["1.1.0", "succeeded"],
        prod: ["1.1.0", "succeeded"],
      });
      // …and in the browser: the open page followed the deployments without a reload.
      await expect
        .poll(async () => (await prodCell.allInnerTexts()).join(" ").replace(/\s+/g, " "), { timeout: 15_000 })
        .toMatch(/^1\.1\.0 ✔ succeeded /);
      const cells = page
        .getByRole("row")
        .filter({ has: page.getByRole("rowheader", { name: /Hello/ }) })
        .getByRole("cell");
      expect((await cells.allInnerTexts()).map((text) => text.replace(/\s+/g, " "))).toEqual([
        expect.stringMatching(/^1\.1\.0 ✔ succeeded /),
        expect.stringMatching(/^1\.1\.0 ✔ succeeded /),
        expect.stringMatching(/^1\.1\.0 ✔ succeeded /),
      ]);
      expect(
        prodCellSeen.some((text) => /^1\.0\.0 ✔ succeeded /.test(text)),
        prodCellSeen.join(" | "),
      ).toBe(true);
      expect(
        await page.evaluate(
          () => (globalThis as unknown as { openedBeforeTheDemoDeployed?: boolean }).openedBeforeTheDemoDeployed,
        ),
      ).toBe(true);
      expect(browser.errors).toEqual([]);
    }, 600_000);

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
      const tasks = await api<{ items: { state: string }[] }>(output, "/api/v1/tasks");
      expect(tasks.items.map((task) => task.state)).toEqual(Array(6).fill("succeeded"));
      const releases = await api<{ items: { version: string; images: { reference: string }[] }[] }>(
        output,
        "/api/v1/projects/hello/releases",
      );
      expect(releases.items.map((release) => release.version)).toEqual(["1.1.0", "1.0.0"]);
      // A container demo's release pins its image by digest, from the demo's feed, like any release.
      expect(releases.items[0]?.images.map((image) => image.reference)).toEqual(
        runtime === "docker" ? [expect.stringMatching(/^127\.0\.0\.1:\d+\/demo\/hello@sha256:[a-f0-9]{64}$/)] : [],
      );
    });

    it("the CLI commands the demo prints work as it says: a next release to dev and test, a rollback of dev, no request lost", async () => {
      const output = first?.stdout() ?? "";
      const commands = [...output.matchAll(/^ {2}bin\/ferry (.+?)(?:\s+#.*)?$/gm)].map((match) =>
        (match[1] ?? "").trim().split(/\s+/),
      );
      expect(commands).toEqual([
        ["release", "create", "--project", "hello", "--wait"],
        ["promote", "--project", "hello", "--to", "test", "--wait"],
        ["rollback", "--project", "hello", "--env", "dev", "--wait"],
      ]);
      // Users of dev and test keep asking while the commands switch their colours.
      const loads = ["dev.localhost", "test.localhost"].map((host) =>
        startLoad({ port: proxyPort, host, connections: 4 }),
      );
      const results = [];
      for (const args of commands) results.push(await runFerry(args, cliEnv(output), { timeoutMs: 240_000 }));
      const [dev, test] = await Promise.all(loads.map((load) => load.stop()));
      for (const result of results) expectSuccess(result);
      expect(dev?.failures).toEqual([]);
      expect(test?.failures).toEqual([]);
      expect([...(dev?.bodies.keys() ?? [])].map((body) => /release (\S+)/.exec(body)?.[1])).toEqual(
        expect.arrayContaining(["1.1.0", "1.2.0"]),
      );
      expect(await through("dev.localhost")).toMatch(/^Hello from Ferry: demo app release 1\.1\.0 in Development/);
      expect(await through("test.localhost")).toMatch(/^Hello from Ferry: demo app release 1\.2\.0 in Test/);
      expect(await through("prod.localhost")).toMatch(/release 1\.1\.0 in Production/);
      expect(await dashboardRow(output)).toEqual({
        dev: ["1.1.0", "succeeded"],
        test: ["1.2.0", "succeeded"],
        prod: ["1.1.0", "succeeded"],
      });
      // The dashboard opened at the start still follows, without a reload.
      const page = dashboard;
      if (!page) throw new Error("the dashboard was not opened");
      const cells = page
        .getByRole("row")
        .filter({ has: page.getByRole("rowheader", { name: /Hello/ }) })
        .getByRole("cell");
      await expect
        .poll(async () => (await cells.allInnerTexts()).map((text) => text.replace(/\s+/g, " ")), { timeout: 15_000 })
        .toEqual([
          expect.stringMatching(/^1\.1\.0 ✔ succeeded /),
          expect.stringMatching(/^1\.2\.0 ✔ succeeded /),
          expect.stringMatching(/^1\.1\.0 ✔ succeeded /),
        ]);
      expect(browser?.errors).toEqual([]);
    }, 600_000);

    it("the app keeps answering when the demo's server stops; the demo started again reuses its data", async () => {
      const running = first;
      if (!running) throw new Error("the demo did not start");
      await browser?.close();
      browser = undefined;
      const pid = Number(/\(pid (\d+)\)/.exec(await through("dev.localhost"))?.[1]);
      const before = await instances();
      await running.stop();
      expect(await through("dev.localhost")).toMatch(/release 1\.1\.0 in Development/);
      const again = demo();
      const output = await untilReady(again);
      noteRegistry(output);
      expect(output).not.toContain("demo project created");
      expect(output).not.toContain("Deploying");
      expect(output).not.toContain("Release 1.1.0");
      expect(output).toMatch(
        /^ {2}prod\s+http:\/\/prod\.localhost:\d+\/\s+→ Hello from production: demo app release 1\.1\.0/m,
      );
      // The same process or container serves: nothing was deployed again.
      expect(await through("dev.localhost")).toContain(`(pid ${pid})`);
      expect(await instances()).toEqual(before);
      await again.stop();
    }, 600_000);

    it("ferry demo --stop stops the app and the proxy; the next demo brings the live colours back", async () => {
      const running = (await instances()).filter(([, , state]) => state === "running").length;
      const stopped = startDemo(["demo", "--stop", "--data-dir", join(home, "data")], env);
      await waitFor(() => stopped.stdout().includes("Stopped"), "demo --stop to report", 60_000);
      await stopped.stop();
      expect(stopped.stdout()).toContain(
        runtime === "docker"
          ? `Stopped 0 process(es) and ${running} container(s) of the demo app and the ferry proxy`
          : `Stopped ${running} process(es) and 0 container(s) of the demo app and the ferry proxy`,
      );
      await expect(through("dev.localhost")).rejects.toThrow();
      const again = demo();
      const output = await untilReady(again);
      expect(output).toMatch(
        /^ {2}dev\s+http:\/\/dev\.localhost:\d+\/\s+→ Hello from Ferry: demo app release 1\.1\.0 in Development/m,
      );
      expect(await through("test.localhost")).toMatch(/release 1\.2\.0 in Test/);
      await again.stop();
    }, 600_000);

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
