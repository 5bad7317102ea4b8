import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * A directory holding a small Node.js HTTP app, as an unpacked release would be, for
 * process steps to copy (copyFrom). It listens on 127.0.0.1:$PORT with keep-alive:
 * `/` answers "version $APP_VERSION", `/health` "ok", `/slow` "slow $APP_VERSION" after
 * 2 s (a request in flight across a switch), `/pid` "pid <its process id>" (which process
 * answered); it listens `listenAfterMs` after its start (at once by default). SIGTERM stops
 * it gracefully: it accepts nothing new, lets requests in flight finish and then exits.
 * World-readable, so the account instances run as (nobody when the tests run as root) can
 * copy it.
 */
export interface ProcessApp {
  directory: string;
  remove(): Promise<void>;
}

export async function buildProcessApp(
  options: {
    /** /health answers 404 from the start: the app never becomes healthy. */
    neverHealthy?: boolean;
    /** /health answers 404 from this many seconds after start (a release that fails during bake). */
    unhealthyAfterSeconds?: number;
    /** Every this-many-th request to `/` answers HTTP 500 "error $APP_VERSION" (20: a release returning 5 % errors). */
    errorEvery?: number;
    /** It listens only this long after its start (an app that takes a while to boot): until then, nothing answers. */
    listenAfterMs?: number;
  } = {},
): Promise<ProcessApp> {
  const directory = await mkdtemp(join(tmpdir(), "ferry-process-app-"));
  await chmod(directory, 0o755);
  const unhealthyAt =
    options.neverHealthy === true
      ? 0
      : options.unhealthyAfterSeconds === undefined
        ? -1
        : options.unhealthyAfterSeconds;
  await writeFile(
    join(directory, "server.js"),
    `"use strict";
const http = require("node:http");
const version = process.env.APP_VERSION || "?";
const unhealthyAt = ${unhealthyAt};
const started = Date.now();
const errorEvery = ${options.errorEvery ?? 0};
let answered = 0;
console.log("process app " + version + " starting on port " + process.env.PORT);
const server = http.createServer((request, response) => {
  const healthy = unhealthyAt < 0 || Date.now() - started < unhealthyAt * 1000;
  if (request.url === "/health") {
    response.writeHead(healthy ? 200 : 404, { "content-type": "text/plain" });
    return response.end(healthy ? "ok\\n" : "unhealthy\\n");
  }
  if (request.url === "/pid") return response.end("pid " + process.pid + "\\n");
  if (request.url === "/slow") return setTimeout(() => response.end("slow " + version + "\\n"), 2000);
  if (request.url === "/") {
    answered += 1;
    if (errorEvery > 0 && answered % errorEvery === 0) {
      response.writeHead(500, { "content-type": "text/plain" });
      return response.end("error " + version + "\\n");
    }
    return response.end("version " + version + "\\n");
  }
  response.writeHead(404);
  response.end();
});
server.keepAliveTimeout = 65000;
setTimeout(() => server.listen(Number(process.env.PORT), "127.0.0.1"), ${options.listenAfterMs ?? 0});
process.on("SIGTERM", () => {
  console.log("process app " + version + " stopping");
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
`,
    { mode: 0o644 },
  );
  return { directory, remove: () => rm(directory, { recursive: true, force: true }) };
}
