import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NginxRouterOptions } from "../../src/traffic/nginx.js";
import { stopMaster } from "./haproxy.js";
import { freePort } from "./registry.js";

/**
 * A real nginx (Debian's package; scripts/test-services.sh installs it) for tests and the
 * benchmark: one daemonised master per caller, in its own temp dir, with a main config that
 * includes `<dir>/sites/*.conf` inside http{} — the directory the nginx Router driver owns.
 */
const NGINX_BINARY = "nginx";
const CALL_TIMEOUT_MS = 10_000;

export interface TestNginx {
  /** What `new NginxRouter(...)` needs to drive this nginx. */
  options: NginxRouterOptions;
  /** The port the Ferry server blocks listen on (127.0.0.1). */
  port: number;
  dir: string;
  /** The master's pid, read from the pid file; undefined when nginx does not run. */
  masterPid(): number | undefined;
  /** Stops nginx (fast shutdown, then SIGKILL) and removes the dir. */
  stop(): Promise<void>;
}

export interface StartNginxOptions {
  /** The port the Ferry server blocks listen on; a free one by default. */
  port?: number;
  clientKeepalive?: boolean;
}

/**
 * Writes a main nginx.conf for a test nginx in `dir` (made traversable for the workers, which
 * run as `nobody`): its pid file, error log and temp paths there, `<dir>/sites/*.conf`
 * included inside http {}. Nothing is started.
 */
export function writeNginxConfig(dir: string): { config: string; sitesDir: string; pidFile: string } {
  chmodSync(dir, 0o755);
  const sitesDir = join(dir, "sites");
  mkdirSync(sitesDir);
  const config = join(dir, "nginx.conf");
  const pidFile = join(dir, "nginx.pid");
  const temporary = (name: string) => join(dir, "temp", name);
  writeFileSync(
    config,
    [
      "worker_processes 1;",
      `pid ${pidFile};`,
      `error_log ${join(dir, "error.log")};`,
      "events { worker_connections 4096; }",
      "http {",
      "  access_log off;",
      `  client_body_temp_path ${temporary("body")};`,
      `  proxy_temp_path ${temporary("proxy")};`,
      `  fastcgi_temp_path ${temporary("fastcgi")};`,
      `  uwsgi_temp_path ${temporary("uwsgi")};`,
      `  scgi_temp_path ${temporary("scgi")};`,
      `  include ${sitesDir}/*.conf;`,
      "}",
      "",
    ].join("\n"),
  );
  mkdirSync(join(dir, "temp"));
  return { config, sitesDir, pidFile };
}

export async function startNginx(options: StartNginxOptions = {}): Promise<TestNginx> {
  const dir = mkdtempSync(join(tmpdir(), "ferry-nginx-"));
  // Workers run as `nobody` (root's default) and write temp files under the dir.
  const { config, sitesDir, pidFile } = writeNginxConfig(dir);
  const port = options.port ?? (await freePort());
  const started = spawnSync(NGINX_BINARY, ["-c", config], { encoding: "utf8", timeout: CALL_TIMEOUT_MS });
  if (started.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`nginx did not start: ${started.stderr || started.error?.message}`);
  }
  const masterPid = () => {
    try {
      const pid = Number.parseInt(readFileSync(pidFile, "utf8"), 10);
      process.kill(pid, 0);
      return pid;
    } catch {
      return undefined;
    }
  };
  let stopped = false;
  return {
    options: {
      config,
      sitesDir,
      pidFile,
      listen: `127.0.0.1:${port}`,
      ...(options.clientKeepalive !== undefined && { clientKeepalive: options.clientKeepalive }),
    },
    port,
    dir,
    masterPid,
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopMaster(masterPid());
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
