import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcessRuntime } from "./process.js";
import { readState } from "./processFiles.js";

/**
 * The process runtime with real processes: real `ferry supervise` supervisors (bin/ferry,
 * built by the test setup), real signals, real ports. When the tests run as root the
 * instances run as nobody, as a server's would.
 */
const APP = `
const http = require("node:http");
const version = process.env.APP_VERSION || "?";
console.log("app " + version + " starting on port " + process.env.PORT);
if (process.env.EXIT_AFTER_MS) setTimeout(() => { console.log("exiting on purpose"); process.exit(3); }, Number(process.env.EXIT_AFTER_MS));
const server = http.createServer((request, response) => {
  if (request.url === "/whoami") return response.end(JSON.stringify({ uid: process.getuid(), pid: process.pid, cwd: process.cwd() }));
  if (request.url === "/limits") return response.end(require("node:fs").readFileSync("/proc/self/limits", "utf8"));
  response.end("version " + version + " " + require("node:fs").readFileSync("data.txt", "utf8").trim() + "\\n");
});
server.listen(Number(process.env.PORT), "127.0.0.1");
process.on("SIGTERM", () => { console.log("stopping"); server.close(() => process.exit(0)); server.closeAllConnections(); });
`;

const asRoot = process.getuid?.() === 0;
const nobody = asRoot
  ? {
      uid: Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8" })),
      gid: Number(execFileSync("id", ["-g", "nobody"], { encoding: "utf8" })),
    }
  : undefined;

async function get(port: number, path = "/"): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  return response.text();
}

async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error("the condition did not come true in time");
    await sleep(50);
  }
}

describe("the process runtime (real supervisors, signals and ports)", () => {
  const directory = mkdtempSync(join(tmpdir(), "ferry-processes-"));
  const app = mkdtempSync(join(tmpdir(), "ferry-process-app-"));
  const suffix = randomBytes(3).toString("hex");
  const labels = { "ferry.project": `p-${suffix}`, "ferry.env": "prod" };
  let runtime: ProcessRuntime;

  beforeAll(() => {
    // The account instances run as reads the app to copy it, and passes through to its own
    // directory (as through a server's work root, 0711).
    chmodSync(app, 0o755);
    chmodSync(directory, 0o711);
    writeFileSync(join(app, "server.js"), APP);
    writeFileSync(join(app, "data.txt"), "first\n");
    runtime = new ProcessRuntime({ directory: join(directory, "instances"), account: nobody });
  });

  afterAll(async () => {
    await runtime.removeByLabel("ferry.project", labels["ferry.project"]);
    rmSync(directory, { recursive: true, force: true });
    rmSync(app, { recursive: true, force: true });
  });

  it("starts a copy of the app on a free port, in a process group of its own, as the account, with its output in the log", async () => {
    const started = await runtime.createAndStart({
      name: `web-${suffix}`,
      command: "node",
      args: ["server.js"],
      env: { APP_VERSION: "1.0.0" },
      copyFrom: app,
      labels,
      port: "auto",
    });
    const port = started.port ?? 0;
    expect(port).toBeGreaterThan(0);
    expect(await eventually(() => get(port))).toBe("version 1.0.0 first\n");
    // The instance has its own copy: changing the source does not change what runs.
    writeFileSync(join(app, "data.txt"), "second\n");
    expect(await get(port)).toBe("version 1.0.0 first\n");

    const who = JSON.parse(await get(port, "/whoami")) as { uid: number; pid: number; cwd: string };
    if (nobody) expect(who.uid).toBe(nobody.uid);
    expect(who.cwd).toBe(join(directory, "instances", `web-${suffix}`, "app"));
    const status = await runtime.inspect(`web-${suffix}`);
    expect(status).toMatchObject({ running: true, status: "running", pid: who.pid, port, labels });
    // Its own group (it leads it), in its own session: a signal to the server's group never reaches it.
    const stat = readFileSync(`/proc/${who.pid}/stat`, "latin1");
    const [processGroup, session] = stat
      .slice(stat.lastIndexOf(")") + 2)
      .split(" ")
      .slice(2, 4)
      .map(Number);
    expect(processGroup).toBe(who.pid);
    expect(session).toBe(who.pid);
    expect(await runtime.logTail(`web-${suffix}`, 5)).toEqual([`app 1.0.0 starting on port ${port}`]);
    expect((await runtime.listByLabel("ferry.project", labels["ferry.project"])).map((found) => found.name)).toEqual([
      `web-${suffix}`,
    ]);
  });

  it("clones a running instance: the same command, env and limits, a copy of its files as they are, a port and pid of its own", async () => {
    const source = await runtime.inspect(`web-${suffix}`);
    const clone = await runtime.clone(`web-${suffix}`, `web-${suffix}-copy`, { "ferry.restart": "task-1" });
    try {
      const port = clone.port ?? 0;
      expect(port).toBeGreaterThan(0);
      expect(port).not.toBe(source?.port);
      // The instance's own copy ("first"), not the source directory as it is now ("second").
      expect(await eventually(() => get(port))).toBe("version 1.0.0 first\n");
      const who = JSON.parse(await get(port, "/whoami")) as { uid: number; pid: number; cwd: string };
      expect(who.pid).not.toBe(source?.pid);
      expect(who.cwd).toBe(join(directory, "instances", `web-${suffix}-copy`, "app"));
      if (nobody) expect(who.uid).toBe(nobody.uid);
      expect((await runtime.inspect(`web-${suffix}-copy`))?.labels).toEqual({ ...labels, "ferry.restart": "task-1" });
      // The source serves on, untouched.
      expect(await get(source?.port ?? 0)).toBe("version 1.0.0 first\n");
    } finally {
      await runtime.stopAndRemove(`web-${suffix}-copy`, { stopTimeoutSeconds: 2 });
    }
    await expect(runtime.clone(`missing-${suffix}`, `x-${suffix}`, {})).rejects.toThrow(/no process instance named/);
    await expect(runtime.clone(`web-${suffix}`, `web-${suffix}`, {})).rejects.toThrow(/exists/);
  });

  it("keeps serving when the runtime object is gone and when its supervisor is killed; a new runtime on the same directory finds it", async () => {
    const port = (await runtime.inspect(`web-${suffix}`))?.port ?? 0;
    // As after a server restart: nothing but the files.
    const later = new ProcessRuntime({ directory: join(directory, "instances"), account: nobody });
    const before = await later.inspect(`web-${suffix}`);
    expect(before?.running).toBe(true);
    const state = await readState(join(directory, "instances", `web-${suffix}`));
    process.kill(state?.supervisor?.pid ?? 0, "SIGKILL");
    await sleep(200);
    expect(await get(port)).toBe("version 1.0.0 first\n");
    // Started again, the supervisor adopts the running command: same pid, same port.
    const again = await later.start(`web-${suffix}`);
    expect(again.port).toBe(port);
    expect((await later.inspect(`web-${suffix}`))?.pid).toBe(before?.pid);
    const adopted = await readState(join(directory, "instances", `web-${suffix}`));
    expect(adopted?.supervisor?.pid).not.toBe(state?.supervisor?.pid);
  });

  it("stops it gracefully and keeps it; starts it again on its port; removes it", async () => {
    const name = `web-${suffix}`;
    const port = (await runtime.inspect(name))?.port ?? 0;
    await runtime.stop(name, { stopTimeoutSeconds: 5 });
    // Adopted by the last supervisor, its exit code could not be known.
    expect(await runtime.inspect(name)).toMatchObject({ running: false, status: "exited" });
    await expect(get(port)).rejects.toThrow();
    const started = await runtime.start(name);
    expect(started.port).toBe(port);
    expect(await eventually(() => get(port))).toBe("version 1.0.0 first\n");
    await runtime.stop(name, { stopTimeoutSeconds: 5 });
    // SIGTERM first: the app finished by itself.
    expect(await runtime.inspect(name)).toMatchObject({ running: false, status: "exited", exitCode: 0 });
    expect((await runtime.logTail(name, 1))[0]).toBe("stopping");
    await runtime.start(name);
    expect(await eventually(() => get(port))).toBe("version 1.0.0 first\n");
    expect(await runtime.stopAndRemove(name, { stopTimeoutSeconds: 5 })).toBe(true);
    expect(await runtime.inspect(name)).toBeUndefined();
    expect(await runtime.stopAndRemove(name)).toBe(false);
    await expect(get(port)).rejects.toThrow();
  });

  it("restarts a command that fails by its restart policy, and leaves one that may not be restarted exited with its code", async () => {
    const restarted = await runtime.createAndStart({
      name: `crash-${suffix}`,
      command: "node",
      args: [join(app, "server.js")],
      workingDirectory: app,
      env: { EXIT_AFTER_MS: "300" },
      labels,
      port: "auto",
      restartPolicy: "on-failure",
    });
    const status = await eventually(async () => {
      const found = await runtime.inspect(restarted.name);
      return found && found.restartCount >= 2 ? found : undefined;
    });
    expect(status.exitCode).toBe(3);
    expect((await runtime.logTail(restarted.name, 10)).filter((line) => line === "exiting on purpose").length).toBe(
      status.restartCount + (status.running ? 0 : 1),
    );

    const once = await runtime.createAndStart({
      name: `once-${suffix}`,
      command: "node",
      args: [join(app, "server.js")],
      workingDirectory: app,
      env: { EXIT_AFTER_MS: "100" },
      labels,
      port: "auto",
      restartPolicy: "no",
    });
    // Its supervisor records the exit code a moment after the child is gone.
    const exited = await eventually(async () => {
      const found = await runtime.inspect(once.name);
      return found && !found.running && found.exitCode !== null ? found : undefined;
    });
    expect(exited).toMatchObject({ status: "exited", exitCode: 3, restartCount: 0 });

    // Over before the runtime could look: it started, and ended by itself.
    const instant = await runtime.createAndStart({
      name: `instant-${suffix}`,
      command: "true",
      labels,
      restartPolicy: "no",
    });
    expect(await runtime.inspect(instant.name)).toMatchObject({ running: false, status: "exited", exitCode: 0 });
  });

  it("applies resource limits through prlimit", async () => {
    const limited = await runtime.createAndStart({
      name: `limited-${suffix}`,
      command: "node",
      args: [join(app, "server.js")],
      workingDirectory: app,
      labels,
      port: "auto",
      limits: { openFiles: 512, addressSpaceMb: 16 * 1024 },
    });
    const limits = await eventually(() => get(limited.port ?? 0, "/limits"));
    expect(limits).toMatch(/Max open files\s+512\s+512/);
    expect(limits).toMatch(new RegExp(`Max address space\\s+${16 * 1024 * 1024 * 1024}\\s+${16 * 1024 * 1024 * 1024}`));
  });

  it("refuses a command that cannot start, leaving nothing behind; removes by label but what is kept", async () => {
    await expect(
      runtime.createAndStart({ name: `missing-${suffix}`, command: "/nonexistent/program", labels }),
    ).rejects.toThrow(/could not start: spawn \/nonexistent\/program ENOENT/);
    expect(await runtime.inspect(`missing-${suffix}`)).toBeUndefined();
    await expect(runtime.createAndStart({ name: `crash-${suffix}`, command: "node" })).rejects.toThrow(/exists/);

    const removed = await runtime.removeByLabel("ferry.project", labels["ferry.project"], {
      keep: (instance) => instance.name === `limited-${suffix}`,
    });
    expect(removed.sort()).toEqual([`crash-${suffix}`, `instant-${suffix}`, `once-${suffix}`]);
    expect((await runtime.listByLabel("ferry.project", labels["ferry.project"])).map((found) => found.name)).toEqual([
      `limited-${suffix}`,
    ]);
  });
});
