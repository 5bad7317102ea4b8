import { execFile, spawn } from "node:child_process";
import { copyFile, cp, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

/*
 * The demo app as a container image, built on this host without anything from the
 * internet: a root file system holding this Node.js (the binary and the shared libraries
 * it links, as `ldd` lists them) and examples/demo-app, imported into the Docker engine and
 * pushed to the demo's registry (demoRegistry.ts), so that a release pins it by digest
 * from a feed like any other image.
 */

const run = promisify(execFile);

/** Whether the Docker engine on this socket (DOCKER_HOST, dockerSocketOf) answers within a few seconds. */
export async function dockerAnswers(socketPath: string): Promise<boolean> {
  try {
    const { default: Docker } = await import("dockerode");
    const engine = new Docker({ socketPath, timeout: 3000 });
    await engine.ping();
    return true;
  } catch {
    return false;
  }
}

/**
 * Builds `<registry>/<repository>:<tag>` and pushes it, unless the registry has the tag
 * already (a second run of the demo reuses it).
 */
export async function pushDemoImage(
  socketPath: string,
  registry: { host: string; url: string },
  repository: string,
  tag: string,
) {
  const known = await fetch(`${registry.url}/v2/${repository}/manifests/${tag}`, { method: "HEAD" });
  if (known.ok) return;
  const root = await mkdtemp(join(tmpdir(), "ferry-demo-image-"));
  try {
    await stageRoot(root);
    const { default: Docker } = await import("dockerode");
    const engine = new Docker({ socketPath });
    const name = `${registry.host}/${repository}`;
    const tar = spawn("tar", ["--numeric-owner", "--owner=0", "--group=0", "-C", root, "-c", "."], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const imported = await engine.importImage(tar.stdout, {
      repo: name,
      tag,
      changes: ['CMD ["/usr/bin/node", "/app/server.js"]', "ENV HOST=0.0.0.0 PORT=8080", "EXPOSE 8080"],
    } as unknown as string);
    await followProgress(engine, imported);
    const pushed = await engine.getImage(`${name}:${tag}`).push({ tag, authconfig: { serveraddress: registry.host } });
    await followProgress(engine, pushed);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** The files of the image: Node.js with its libraries at their own paths, and the app in /app. */
async function stageRoot(root: string): Promise<void> {
  const node = process.execPath;
  const { stdout } = await run("ldd", [node]);
  // "libstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)".
  const libraries = [...stdout.matchAll(/(\/\S+) \(0x[0-9a-f]+\)/g)].map((match) => match[1] ?? "");
  for (const file of [...libraries.filter(Boolean)]) {
    await mkdir(join(root, dirname(file)), { recursive: true });
    await copyFile(file, join(root, file));
  }
  await mkdir(join(root, "usr", "bin"), { recursive: true });
  await copyFile(node, join(root, "usr", "bin", "node"));
  await mkdir(join(root, "tmp"), { recursive: true });
  await cp(fileURLToPath(new URL("../../examples/demo-app/", import.meta.url)), join(root, "app"), { recursive: true });
  // The engine reads it; nothing of the host beyond these files goes in.
  await readFile(join(root, "app", "server.js"));
}

/** Waits for an engine stream (import, push) to end; its error lines become an exception. */
function followProgress(
  engine: {
    modem: {
      followProgress(stream: NodeJS.ReadableStream, done: (error: Error | null, output: unknown[]) => void): void;
    };
  },
  stream: NodeJS.ReadableStream,
): Promise<void> {
  return new Promise((resolve, reject) => {
    engine.modem.followProgress(stream, (error, output) => {
      if (error) return reject(error);
      const failed = (output as { error?: string }[]).find((line) => line.error);
      if (failed) return reject(new Error(failed.error));
      resolve();
    });
  });
}
