import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TrafficSettings } from "../../src/traffic/routers.js";
import { FERRY } from "./cli.js";
import { freePort } from "./registry.js";

/** A real `ferry proxy` process (bin/ferry proxy), as the server would start it, on a free port. */
export interface ProxyProcess {
  port: number;
  stateDir: string;
  /** Settings that make a server use this proxy (it answers on the state dir's socket, so the server starts none). */
  traffic: TrafficSettings;
  /** Starts it again on the same state dir and port (after kill). */
  restart(): Promise<void>;
  /** SIGKILL, no clean-up: a crash. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

export async function startProxyProcess(): Promise<ProxyProcess> {
  const stateDir = mkdtempSync(join(tmpdir(), "ferry-proxy-"));
  const port = await freePort();
  let child: ChildProcess | undefined;
  let output = "";
  const launch = async () => {
    output = "";
    const started = spawn(
      process.execPath,
      [FERRY, "proxy", "--state-dir", stateDir, "--listen", `127.0.0.1:${port}`],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    child = started;
    started.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      output += chunk;
    });
    started.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      output += chunk;
    });
    const deadline = Date.now() + 15_000;
    while (!output.includes("traffic on")) {
      if (started.exitCode !== null || Date.now() > deadline) throw new Error(`ferry proxy did not start:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  const exited = async (signal: NodeJS.Signals) => {
    const running = child;
    if (!running || running.exitCode !== null || running.signalCode !== null) return;
    const done = new Promise((resolve) => running.once("exit", resolve));
    running.kill(signal);
    await done;
  };
  await launch();
  return {
    port,
    stateDir,
    traffic: { driver: "builtin", proxy: { stateDir, listen: `127.0.0.1:${port}` } },
    restart: launch,
    kill: () => exited("SIGKILL"),
    async stop() {
      await exited("SIGTERM");
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}
