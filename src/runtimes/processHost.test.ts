import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ProcessRuntime } from "./process.js";
import { answerProcessHostRequest, processRuntimeOnHost } from "./processHost.js";

/**
 * `ferry processes`, the host side of the process runtime on remote targets: one request as
 * JSON (from standard input), one answer. Real supervisors (`ferry supervise`) and a real
 * command; requests it cannot understand are answered as input errors, never acted on.
 */
describe("the process runtime's host side", () => {
  const directory = mkdtempSync(join(tmpdir(), "ferry-process-host-"));
  const runtime = new ProcessRuntime({ directory: join(directory, "instances") });
  const ask = (request: unknown) =>
    answerProcessHostRequest(runtime, typeof request === "string" ? request : JSON.stringify(request));

  afterAll(async () => {
    await runtime.removeByLabel("test.owner", "process-host");
    rmSync(directory, { recursive: true, force: true });
  });

  it("refuses what is not a request it knows, naming the problem", async () => {
    expect(await ask("not json")).toMatchObject({ ok: false, kind: "input" });
    expect(await ask({ operation: "format-disk" })).toMatchObject({ ok: false, kind: "input" });
    expect(await ask({ operation: "start", name: "x", extra: 1 })).toMatchObject({
      ok: false,
      kind: "input",
      message: expect.stringMatching(/extra/),
    });
    expect(await ask({ operation: "inspect", name: "../etc" })).toMatchObject({ ok: false, kind: "input" });
    expect(await ask({ operation: "start", name: "missing" })).toMatchObject({ ok: false, kind: "notFound" });
  });

  it("creates, lists, inspects, tails and removes an instance; its env values reach neither the supervisor's command line nor its environment", async () => {
    const created = await ask({
      operation: "createAndStart",
      spec: {
        name: "host-side-app",
        command: "node",
        args: ["-e", "console.log('up ' + (process.env.TOKEN || '').length); setInterval(() => {}, 1000)"],
        env: { TOKEN: "secret-value" },
        labels: { "test.owner": "process-host" },
        restartPolicy: "no",
        port: "auto",
      },
    });
    expect(created).toMatchObject({ ok: true, value: { name: "host-side-app", port: expect.any(Number) } });
    expect(await ask({ operation: "createAndStart", spec: { name: "host-side-app", command: "true" } })).toMatchObject({
      ok: false,
      kind: "conflict",
    });
    const listed = await ask({ operation: "listByLabel", label: "test.owner", value: "process-host" });
    expect(listed).toMatchObject({ ok: true, value: [{ name: "host-side-app", state: "running" }] });
    const inspected = await ask({ operation: "inspect", name: "host-side-app" });
    expect(inspected).toMatchObject({ ok: true, value: { running: true } });
    // The supervisor's command line and environment hold no env value of the app.
    const pid = (
      JSON.parse(readFileSync(join(directory, "instances", "host-side-app", "state.json"), "utf8")) as {
        supervisor: { pid: number };
      }
    ).supervisor.pid;
    expect(readFileSync(`/proc/${pid}/cmdline`, "latin1")).not.toContain("secret-value");
    expect(readFileSync(`/proc/${pid}/environ`, "latin1")).not.toContain("secret-value");
    let tail: unknown;
    for (let tries = 0; tries < 100; tries++) {
      tail = await ask({ operation: "logTail", name: "host-side-app", lines: 5 });
      if (JSON.stringify(tail).includes("up 12")) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(tail).toEqual({ ok: true, value: ["up 12"] });
    // A clone is made on the host from the instance's files: its env reaches the copy, not the answer.
    const cloned = await ask({
      operation: "clone",
      name: "host-side-app",
      as: "host-side-copy",
      labels: { "test.copy": "yes" },
    });
    expect(cloned).toMatchObject({ ok: true, value: { name: "host-side-copy", port: expect.any(Number) } });
    expect(JSON.stringify(cloned)).not.toContain("secret-value");
    let copyTail: unknown;
    for (let tries = 0; tries < 100; tries++) {
      copyTail = await ask({ operation: "logTail", name: "host-side-copy", lines: 5 });
      if (JSON.stringify(copyTail).includes("up 12")) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(copyTail).toEqual({ ok: true, value: ["up 12"] });
    expect(await ask({ operation: "inspect", name: "host-side-copy" })).toMatchObject({
      ok: true,
      value: { running: true, labels: { "test.owner": "process-host", "test.copy": "yes" } },
    });
    expect(await ask({ operation: "clone", name: "missing", as: "other", labels: {} })).toMatchObject({
      ok: false,
      kind: "notFound",
    });
    await ask({ operation: "stopAndRemove", name: "host-side-copy", stopTimeoutSeconds: 1 });
    expect(await ask({ operation: "stopAndRemove", name: "host-side-app", stopTimeoutSeconds: 1 })).toEqual({
      ok: true,
      value: true,
    });
    expect(await ask({ operation: "inspect", name: "host-side-app" })).toEqual({ ok: true, value: null });
  });

  it("keeps each target's instances in a directory of its own", () => {
    const settings = { workDir: join(directory, "work") };
    expect(() => processRuntimeOnHost("../escape", settings)).toThrow(/not a target's scope/);
    expect(processRuntimeOnHost("web-1", settings)).toBeInstanceOf(ProcessRuntime);
  });
});
