import { execFileSync, spawn } from "node:child_process";
import { existsSync, realpathSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

/**
 * Container images for tests, built here because no registry on the internet is
 * reachable: `docker import` of a rootfs holding Debian's static busybox (package
 * busybox-static, installed by scripts/test-services.sh) and a few files its `httpd`
 * applet serves. The image is pushed to a test registry (test/helpers/registry.ts) and
 * then removed from the engine again, so a step that runs it has to pull it for real.
 */
const BUSYBOX = "/bin/busybox";
const COMMAND_TIMEOUT_MS = 60_000;

export interface DemoImage {
  /** "127.0.0.1:PORT/demo/app@sha256:…": what a release pins. */
  reference: string;
  digest: string;
}

export interface BuildDemoImageOptions {
  /** The registry's base URL, "http://127.0.0.1:PORT" (Docker treats 127.0.0.1 registries as insecure, i.e. plain HTTP). */
  registryUrl: string;
  repository: string;
  /** Served as "version <version>" at / and written to the container's log at start. */
  version: string;
  /** /health answers 404 from the start: the app never becomes healthy. */
  neverHealthy?: boolean;
  /** /health answers 404 from this many seconds after start (a release that fails during bake). */
  unhealthyAfterSeconds?: number;
}

/**
 * An HTTP app listening on 8080: `/` answers "version <version>", `/health` answers
 * "ok", anything else 404. At start it logs "demo app <version> starting (greeting:
 * $GREETING)", then one line per request (httpd -vv); with $CRASH set it logs "crashing on
 * purpose: $CRASH" and exits with code 3 instead. `/cgi-bin/slow` answers "slow <version>"
 * after 2 s (a request in flight across a switch). SIGTERM stops it at once (the shell that
 * is PID 1 traps it), so a recreate does not wait for the stop timeout.
 */
export async function buildDemoImage(options: BuildDemoImageOptions): Promise<DemoImage> {
  if (!existsSync(BUSYBOX)) {
    throw new Error(`${BUSYBOX} is missing: run scripts/test-services.sh (it installs busybox-static)`);
  }
  const registryHost = new URL(options.registryUrl).host;
  const root = await mkdtemp(join(tmpdir(), "ferry-image-"));
  try {
    await mkdir(join(root, "bin"));
    await mkdir(join(root, "www"));
    await copyFile(BUSYBOX, join(root, "bin", "busybox"));
    await writeFile(join(root, "www", "index.html"), `version ${options.version}\n`);
    if (!options.neverHealthy) await writeFile(join(root, "www", "health"), "ok\n");
    await mkdir(join(root, "www", "cgi-bin"));
    await writeFile(
      join(root, "www", "cgi-bin", "slow"),
      // CRLF after the headers: Node's HTTP parser (in ferry proxy) is strict about them.
      '#!/bin/busybox sh\n/bin/busybox sleep 2\nprintf "Content-Type: text/plain\\r\\n\\r\\nslow %s\\n" "$APP_VERSION"\n',
      { mode: 0o755 },
    );
    const startScript = [
      `echo "demo app $APP_VERSION starting (greeting: $GREETING)"`,
      `if [ -n "$CRASH" ]; then echo "crashing on purpose: $CRASH"; exit 3; fi`,
      ...(options.unhealthyAfterSeconds !== undefined
        ? [`(/bin/busybox sleep ${options.unhealthyAfterSeconds}; /bin/busybox rm -f /www/health) &`]
        : []),
      "/bin/busybox httpd -f -vv -p 8080 -h /www &",
      `trap 'kill $!; exit 0' TERM`,
      "wait",
    ].join("\n");
    return await importAndPush(root, registryHost, options.repository, options.version, [
      `ENV APP_VERSION=${options.version}`,
      `CMD ${JSON.stringify(["/bin/busybox", "sh", "-c", startScript])}`,
      "EXPOSE 8080",
    ]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** `docker import` of a rootfs directory with Dockerfile-like changes, pushed; its pinned reference. */
export async function importAndPush(
  root: string,
  registryHost: string,
  repository: string,
  version: string,
  changes: readonly string[],
): Promise<DemoImage> {
  const tagged = `${registryHost}/${repository}:${version}`;
  const tar = await run("tar", ["--numeric-owner", "--owner=0", "--group=0", "-C", root, "-c", "."]);
  await run("docker", ["import", ...changes.flatMap((change) => ["--change", change]), "-", tagged], tar);
  await run("docker", ["push", tagged]);
  const digests = JSON.parse(
    (await run("docker", ["image", "inspect", "--format", "{{json .RepoDigests}}", tagged])).toString("utf8"),
  ) as string[];
  const reference = digests.find((digest) => digest.startsWith(`${registryHost}/${repository}@`));
  if (!reference) throw new Error(`docker push of ${tagged} left no digest for it (${digests.join(", ")})`);
  // Gone from the engine again: whatever runs it must pull it from the registry.
  await removeImages([tagged]);
  return { reference, digest: reference.slice(reference.indexOf("@") + 1) };
}

/**
 * An HTTP app on 8080 like a real service: Node.js (this machine's binary and the shared
 * libraries it needs, copied into the image) answering "version <version>" at / and "ok"
 * at /health, with keep-alive, and a graceful stop on SIGTERM (in-flight requests finish).
 * Unlike busybox httpd (a listen backlog of a few connections and a process per request,
 * which drops connections under load by itself), it does not fail requests on its own, so
 * a load benchmark measures the switch, not the app.
 */
export async function buildNodeAppImage(options: { registryUrl: string; repository: string; version: string }) {
  const registryHost = new URL(options.registryUrl).host;
  const root = await mkdtemp(join(tmpdir(), "ferry-node-image-"));
  try {
    const node = realpathSync(process.execPath);
    const files = [node, ...sharedLibraries(node)];
    for (const file of files) {
      await mkdir(join(root, dirname(file)), { recursive: true });
      await copyFile(file, join(root, file));
    }
    await mkdir(join(root, "app"));
    await writeFile(
      join(root, "app", "server.js"),
      [
        'const http = require("node:http");',
        "const version = process.env.APP_VERSION;",
        "const server = http.createServer((request, response) => {",
        '  if (request.url === "/health") return response.end("ok\\n");',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: this is the app's JavaScript source, not a template here
        "  response.end(`version ${version}\\n`);",
        "});",
        "server.keepAliveTimeout = 60_000;",
        "server.listen(8080);",
        'process.on("SIGTERM", () => { server.close(() => process.exit(0)); server.closeIdleConnections(); });',
        "",
      ].join("\n"),
    );
    return await importAndPush(root, registryHost, options.repository, options.version, [
      `ENV APP_VERSION=${options.version}`,
      `CMD ${JSON.stringify([node, "/app/server.js"])}`,
      "EXPOSE 8080",
    ]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** The shared libraries a binary loads, from `ldd` (copied by content: symlinks need no target). */
export function sharedLibraries(binary: string): string[] {
  const output = execFileSync("ldd", [binary], { encoding: "utf8" });
  return [...new Set([...output.matchAll(/(\/\S+\.so\S*)/g)].map((match) => match[1] ?? ""))];
}

/** Removes images from the engine (missing ones are fine). */
export async function removeImages(references: readonly string[]): Promise<void> {
  for (const reference of references) {
    await run("docker", ["image", "rm", "--force", reference]).catch(() => {});
  }
}

/** Runs a command (argv, no shell) with optional stdin; resolves with its stdout, rejects with its stderr. */
function run(command: string, args: readonly string[], input?: Buffer): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
    const stdout: Buffer[] = [];
    let stderr = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), COMMAND_TIMEOUT_MS);
    child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => {
      stderr = (stderr + chunk.toString("utf8")).slice(-4000);
    });
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${command}: ${error.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(Buffer.concat(stdout));
      else
        reject(
          new Error(`${command} ${args.slice(0, 2).join(" ")} failed (${signal ?? `exit ${code}`}): ${stderr.trim()}`),
        );
    });
    // A command that exits before reading its input (the engine is down) closes the pipe: the
    // failure is its exit status above, not an uncaught EPIPE of the write.
    child.stdin.on("error", () => {});
    child.stdin.end(input);
  });
}
