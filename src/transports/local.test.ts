import {
  chmodSync,
  chownSync,
  existsSync,
  lchownSync,
  mkdtempSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { LocalTransport } from "./local.js";

/**
 * What a step's account leaves in its directory is read and removed by the server, which
 * runs as root: a link or a foreign file there must not make it read or remove anything else.
 * Runs as root (as the suite does) with per-task uids.
 */
describe("the local transport's step files", () => {
  const workRoot = mkdtempSync(join(tmpdir(), "ferry-local-transport-"));
  // As prepareWorkRoot leaves it: a task's account passes through to its step directories.
  chmodSync(workRoot, 0o711);
  const transport = new LocalTransport(workRoot, { kind: "perTask", firstUid: 2_000_100_000, count: 100 });
  afterAll(() => rmSync(workRoot, { recursive: true, force: true }));

  it("gives each task a uid of its own and the step directory to it", async () => {
    const first = await transport.stepDirectory("task_a", "script-");
    const second = await transport.stepDirectory("task_b", "script-");
    const owners = [statSync(first).uid, statSync(second).uid];
    expect(owners[0]).toBeGreaterThanOrEqual(2_000_100_000);
    expect(owners[1]).toBeGreaterThanOrEqual(2_000_100_000);
    expect(owners[0]).not.toBe(owners[1]);
    expect(statSync(await transport.stepDirectory("task_a", "script-")).uid).toBe(owners[0]);
  });

  it("finishes a step in one call: its output file's text, and the directory gone; a path is not a file name", async () => {
    const directory = await transport.stepDirectory("task_f", "script-");
    const uid = statSync(directory).uid;
    writeFileSync(join(directory, "output"), "version=1.0.2\n");
    chownSync(join(directory, "output"), uid, uid);
    expect(await transport.finishStep(directory, "output")).toBe("version=1.0.2\n");
    expect(existsSync(directory)).toBe(false);
    const empty = await transport.stepDirectory("task_f", "script-");
    expect(await transport.finishStep(empty, "output")).toBeUndefined();
    expect(existsSync(empty)).toBe(false);
    await expect(transport.finishStep(empty, "../../etc/passwd")).rejects.toThrow(/not a plain file name/);
  });

  it("reads a regular file of the step's account, never a link or a file of someone else", async () => {
    const directory = await transport.stepDirectory("task_c", "script-");
    const uid = statSync(directory).uid;
    writeFileSync(join(directory, "output"), "port=8080\n");
    chownSync(join(directory, "output"), uid, uid);
    expect(await transport.readFile(join(directory, "output"))).toBe("port=8080\n");

    symlinkSync("/proc/self/environ", join(directory, "environ"));
    lchownSync(join(directory, "environ"), uid, uid);
    expect(await transport.readFile(join(directory, "environ"))).toBeUndefined();

    writeFileSync(join(directory, "roots"), "secret of root");
    expect(await transport.readFile(join(directory, "roots"))).toBeUndefined();
  });

  it("removes a step directory as its owner, so a link inside cannot lead the server elsewhere", async () => {
    const victim = mkdtempSync(join(tmpdir(), "ferry-victim-"));
    writeFileSync(join(victim, "keep"), "must survive");
    const directory = await transport.stepDirectory("task_d", "script-");
    symlinkSync(victim, join(directory, "link"));
    await transport.removeDirectory(directory);
    expect(existsSync(directory)).toBe(false);
    expect(existsSync(join(victim, "keep"))).toBe(true);
    await transport.finishTask("task_d");
    expect(existsSync(join(workRoot, "task_d"))).toBe(false);
    rmSync(victim, { recursive: true, force: true });
  });

  it("stops reading a process's output while the output gate is full, and goes on when it drains", async () => {
    const directory = await transport.stepDirectory("task_gate", "script-");
    let full = true;
    let release: () => void = () => {};
    const drained = new Promise<void>((resolve) => {
      release = resolve;
    });
    const lines: string[] = [];
    let exited = false;
    // 4 MiB of output: far more than a pipe holds, so the process can only end if it is read.
    const running = transport
      .run({
        command: "bash",
        args: ["-c", "for i in $(seq 1 65536); do printf '%063d\\n' $i; done; echo done"],
        env: {},
        cwd: directory,
        taskId: "task_gate",
        timeoutMs: 60_000,
        signal: new AbortController().signal,
        onLine: (_stream, text) => lines.push(text),
        outputGate: {
          get full() {
            return full;
          },
          drained: () => drained,
        },
      })
      .then((exit) => {
        exited = true;
        return exit;
      });
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    // Blocked on its pipe: nothing near all of its output was taken, and it has not ended.
    expect(exited).toBe(false);
    expect(lines.length).toBeLessThan(65536);
    full = false;
    release();
    expect(await running).toEqual({ code: 0, timedOut: false });
    expect(lines.length).toBe(65537);
    expect(lines.at(-1)).toBe("done");
  });
});
