import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { LAUNCHER_COMMAND, LAUNCHER_REFUSED, launcherRequest, runRequest } from "./sshLauncher.js";

/**
 * The launcher as sshd runs it: the account's login shell (`sh -c COMMAND`) with the request
 * on standard input. Hostile values must arrive as data and never run; requests it must
 * refuse (paths outside its work root, names that would be read as options) are refused.
 */

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

const home = mkdtempSync(join(tmpdir(), "ferry-launcher-home-"));
const markers = mkdtempSync(join(tmpdir(), "ferry-launcher-markers-"));
chmodSync(markers, 0o777);
const root = join(home, ".cache", "ferry", "work");

/** Runs the launcher with `input`; `keepOpen` leaves its standard input open until `close` is called. */
function launch(input: Buffer, options: { keepOpen?: boolean } = {}) {
  const child = spawn("sh", ["-c", LAUNCHER_COMMAND], {
    env: { HOME: home, PATH: process.env.PATH ?? "/usr/bin:/bin", LAUNCHER_SECRET: "server-only" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => {
    stdout += chunk.toString("utf8");
  });
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString("utf8");
  });
  if (options.keepOpen) child.stdin.write(input);
  else child.stdin.end(input);
  const done = new Promise<Outcome>((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
  return { done, stdout: () => stdout, close: () => child.stdin.end() };
}

const call = (fields: string[]) =>
  launch(launcherRequest(fields.map((value, index) => ({ name: `field ${index}`, value })))).done;

/** Every way a value could break out of a shell line or be read as an option. */
const hostile = [
  `$(touch ${markers}/dollar)`,
  `\`touch ${markers}/backtick\``,
  `; touch ${markers}/semicolon`,
  `' ; touch ${markers}/quote ; '`,
  `" ; touch ${markers}/dquote ; "`,
  `x\ntouch ${markers}/newline\n`,
  `\${IFS}touch\${IFS}${markers}/ifs`,
  "--",
  `-- touch ${markers}/dashdash`,
  "--help",
  "-i",
  `A=B touch ${markers}/assignment`,
  "\\",
  "",
];

describe("the SSH launcher", () => {
  afterAll(() => {
    rmSync(home, { recursive: true, force: true });
    rmSync(markers, { recursive: true, force: true });
  });

  it("passes hostile arguments, environment values and a working directory through as data", async () => {
    const cwd = join(markers, "dir with $(touch x) 'quotes'");
    mkdirSync(cwd);
    const env = Object.fromEntries(hostile.map((value, index) => [`V${index}`, value]));
    const running = launch(
      runRequest({
        taskId: "task_1",
        cwd,
        env: { ...env, FERRY_TASK_ID: "task_1" },
        command: "bash",
        args: [
          "-c",
          // biome-ignore lint/suspicious/noTemplateCurlyInString: bash's own ${…}, for bash to expand
          'for a in "$@"; do printf "arg[%s]\\n" "$a"; done; for n in ${!V*}; do printf "env[%s]\\n" "${!n}"; done; printf "pwd[%s]\\n" "$PWD"; printf "secret[%s]\\n" "${LAUNCHER_SECRET-}"',
          "ferry-step",
          ...hostile,
        ],
      }),
      { keepOpen: true },
    );
    const outcome = await running.done;
    expect(outcome.code, outcome.stderr).toBe(0);
    for (const value of hostile) {
      expect(outcome.stdout).toContain(`arg[${value}]\n`);
      expect(outcome.stdout).toContain(`env[${value}]\n`);
    }
    expect(outcome.stdout).toContain(`pwd[${cwd}]`);
    // Only the given environment: nothing of the launcher's own (sshd's) goes through.
    expect(outcome.stdout).toContain("secret[]");
    expect(readdirSync(markers)).toEqual(["dir with $(touch x) 'quotes'"]);
  });

  it("gives the program its standard input as data, shown on no command line", async () => {
    const secret = `secret-${randomBytes(8).toString("hex")}`;
    const text = `${hostile.join("\n")}\n${secret}\n`;
    const running = launch(
      runRequest({
        taskId: "task_stdin",
        cwd: "/",
        env: {},
        command: "sh",
        args: ["-c", "cat; echo; echo read; sleep 1"],
        stdin: text,
      }),
      { keepOpen: true },
    );
    for (let tries = 0; tries < 200 && !running.stdout().includes("\nread\n"); tries++) await sleep(20);
    // While the program runs, no process on the machine has the text on its command line.
    const commandLines = readdirSync("/proc")
      .filter((entry) => /^\d+$/.test(entry))
      .map((entry) => {
        try {
          return readFileSync(`/proc/${entry}/cmdline`, "latin1");
        } catch {
          return "";
        }
      });
    expect(commandLines.filter((line) => line.includes(secret))).toEqual([]);
    running.close();
    const outcome = await running.done;
    // The group id, then the input exactly.
    const expected = `${text}\nread\n`;
    expect(outcome.stdout.split("\n").slice(1).join("\n").slice(0, expected.length)).toBe(expected);
    expect(readdirSync(markers).filter((name) => !name.startsWith("dir with"))).toEqual([]);
  });

  it("gives the program its environment exactly, its values shown on no command line", async () => {
    const secret = `env-secret-${randomBytes(8).toString("hex")}`;
    const running = launch(
      runRequest({
        taskId: "task_env",
        cwd: "/",
        env: { DB_PASSWORD: secret, PATH: process.env.PATH ?? "/usr/bin:/bin" },
        command: "sh",
        args: ["-c", "env | sort; echo ready; sleep 1"],
      }),
      { keepOpen: true },
    );
    for (let tries = 0; tries < 200 && !running.stdout().includes("\nready\n"); tries++) await sleep(20);
    const commandLines = readdirSync("/proc")
      .filter((entry) => /^\d+$/.test(entry))
      .map((entry) => {
        try {
          return readFileSync(`/proc/${entry}/cmdline`, "latin1");
        } catch {
          return "";
        }
      });
    expect(commandLines.filter((line) => line.includes(secret))).toEqual([]);
    // The program ends by itself (closing its input now would kill it).
    const outcome = await running.done;
    expect(outcome.code, outcome.stderr).toBe(0);
    // Exactly the two entries given (sh adds PWD itself, as any program it runs sees).
    const names = outcome.stdout
      .split("\n")
      .slice(1)
      .filter((line) => /^[A-Z_]+=/.test(line))
      .map((line) => line.split("=")[0]);
    expect(names.filter((name) => name !== "PWD")).toEqual(["DB_PASSWORD", "PATH"]);
    expect(outcome.stdout).toContain(`DB_PASSWORD=${secret}\n`);
  });

  it("prints the process group first, records it while the program runs, and returns its exit code", async () => {
    const running = launch(
      runRequest({ taskId: "task_2", cwd: "/", env: {}, command: "sh", args: ["-c", "sleep 0.3; exit 7"] }),
      // Open, as the transport keeps it: its end means "stop".
      { keepOpen: true },
    );
    const outcome = await running.done;
    expect(outcome.code).toBe(7);
    const group = Number(outcome.stdout.split("\n")[0]);
    expect(group).toBeGreaterThan(1);
    // The record goes when the program is done.
    expect(existsSync(join(root, "task_2", `${group}.pgid`))).toBe(false);
  });

  it("kills the whole process group when its input ends (the server stopped it, or the connection died)", async () => {
    const marker = join(markers, "survived");
    const running = launch(
      runRequest({
        taskId: "task_3",
        cwd: "/",
        env: { FERRY_TASK_ID: "task_3" },
        command: "sh",
        args: ["-c", `(sleep 1.5; touch ${marker}) & echo started; sleep 1.5; touch ${marker}`],
      }),
      { keepOpen: true },
    );
    for (let tries = 0; tries < 100 && !running.stdout().includes("started"); tries++) await sleep(20);
    const group = Number(running.stdout().split("\n")[0]);
    expect(existsSync(join(root, "task_3", `${group}.pgid`))).toBe(true);
    running.close();
    const outcome = await running.done;
    expect(outcome.code).not.toBe(0);
    await sleep(2000);
    expect(existsSync(marker)).toBe(false);
  });

  it("killtask kills what carries the task's id and removes its directory", async () => {
    const running = launch(
      runRequest({
        taskId: "task_4",
        cwd: "/",
        env: { FERRY_TASK_ID: "task_4" },
        command: "sh",
        args: ["-c", "echo started; sleep 30"],
      }),
      { keepOpen: true },
    );
    for (let tries = 0; tries < 100 && !running.stdout().includes("started"); tries++) await sleep(20);
    const killed = await call(["killtask", "task_4"]);
    expect(killed.code, killed.stderr).toBe(0);
    expect(Number(killed.stdout.trim())).toBeGreaterThanOrEqual(1);
    const outcome = await running.done;
    expect(outcome.code).not.toBe(0);
    expect(existsSync(join(root, "task_4"))).toBe(false);
  });

  it("makes step directories, reads and removes files only under its work root", async () => {
    const made = await call(["mkstep", "task_5", "script-"]);
    expect(made.code, made.stderr).toBe(0);
    const directory = made.stdout.trim();
    expect(directory.startsWith(join(root, "task_5", "script-"))).toBe(true);
    expect(await call(["read", join(directory, "missing")])).toMatchObject({ code: 3 });
    for (const path of ["/etc/passwd", `${root}/../../../etc/passwd`, `${root}/./x`, root, `${root}/`]) {
      expect(await call(["read", path]), path).toMatchObject({ code: LAUNCHER_REFUSED });
      expect(await call(["rmdir", path]), path).toMatchObject({ code: LAUNCHER_REFUSED });
    }
    expect(existsSync("/etc/passwd")).toBe(true);
    expect(await call(["rmdir", directory])).toMatchObject({ code: 0 });
    expect(existsSync(directory)).toBe(false);
  });

  it("refuses task ids, prefixes, names and programs that could be read as something else", async () => {
    const refused = [
      ["mkstep", "../etc", "x"],
      ["mkstep", "task", "../x"],
      ["finish", "$(touch x)"],
      ["kill", "1"],
      ["kill", "-1"],
      ["resolve", "-f /etc/passwd"],
      ["unknown"],
      ["run", "task_6"],
    ];
    for (const fields of refused) {
      const outcome = await call(fields);
      expect(outcome.code, fields.join(" ")).toBe(LAUNCHER_REFUSED);
      expect(outcome.stderr).toContain("ferry launcher:");
    }
    for (const command of ["-i", "A=B", ""]) {
      const outcome = await launch(runRequest({ taskId: "task_6", cwd: "/", env: {}, command, args: [] })).done;
      expect(outcome.code, command).toBe(LAUNCHER_REFUSED);
    }
    const relative = await launch(runRequest({ taskId: "task_6", cwd: "tmp", env: {}, command: "true", args: [] }))
      .done;
    expect(relative.code).toBe(LAUNCHER_REFUSED);
    expect(() => runRequest({ taskId: "t", cwd: "/", env: { "A B": "x" }, command: "true", args: [] })).toThrow(
      /environment variable name/,
    );
    expect(() => runRequest({ taskId: "t", cwd: "/", env: { A: "x\0y" }, command: "true", args: [] })).toThrow(
      /environment variable A holds a NUL/,
    );
    expect(readdirSync(markers).filter((name) => !name.startsWith("dir with"))).toEqual([]);
  });
});
