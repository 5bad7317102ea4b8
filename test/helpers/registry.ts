import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

/**
 * Real Docker registries for tests: Debian's `docker-registry` (distribution 2.8), one
 * process per caller on 127.0.0.1 with its own storage directory. scripts/test-services.sh
 * installs the package (and apache2-utils for htpasswd) but starts nothing: tests start
 * their own registries, so they can run in parallel and leave nothing behind.
 */
const REGISTRY_BINARY = "/usr/bin/docker-registry";
const CALL_TIMEOUT_MS = 10_000;

interface Credentials {
  username: string;
  password: string;
}

export interface TestRegistry {
  /** "http://127.0.0.1:PORT" */
  url: string;
  stop(): Promise<void>;
}

export interface StartRegistryOptions {
  /** htpasswd (Basic) authentication with this one user. */
  auth?: Credentials;
  /** Bearer-token authentication against a token service the test runs itself. */
  token?: { realm: string; service: string; issuer: string; rootCertificatePem: string };
  /** Where the registry sends its notifications of pushes (distribution's `notifications.endpoints`). */
  notify?: { url: string; authorization: string };
}

/** A TCP port nothing listens on right now (the OS picks it). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (!address || typeof address === "string") throw new Error("could not get a free port");
  return address.port;
}

export async function startRegistry(options: StartRegistryOptions = {}): Promise<TestRegistry> {
  const directory = mkdtempSync(join(tmpdir(), "ferry-registry-"));
  try {
    const auth = registryAuthConfig(directory, options);
    // Another process may take the free port before the registry binds it: try again.
    for (let attempt = 1; ; attempt++) {
      try {
        return await launch(directory, auth, options.notify);
      } catch (error) {
        if (attempt >= 3 || !(error instanceof PortTakenError)) throw error;
      }
    }
  } catch (error) {
    rmSync(directory, { recursive: true, force: true });
    throw error;
  }
}

class PortTakenError extends Error {}

function registryAuthConfig(directory: string, options: StartRegistryOptions): Record<string, unknown> | undefined {
  if (options.auth) {
    const path = join(directory, "htpasswd");
    writeFileSync(path, htpasswdLine(options.auth));
    return { htpasswd: { realm: "ferry-test", path } };
  }
  if (options.token) {
    const rootcertbundle = join(directory, "token-root.pem");
    writeFileSync(rootcertbundle, options.token.rootCertificatePem);
    const { realm, service, issuer } = options.token;
    return { token: { realm, service, issuer, rootcertbundle } };
  }
  return undefined;
}

/** A bcrypt htpasswd line from Apache's htpasswd (the password goes in on stdin, not argv). */
function htpasswdLine({ username, password }: Credentials): string {
  const result = spawnSync("htpasswd", ["-niBC", "4", username], { input: password, encoding: "utf8" });
  if (result.error) {
    throw new Error(
      `cannot run htpasswd (${result.error.message}); run scripts/test-services.sh, which installs apache2-utils`,
    );
  }
  if (result.status !== 0) throw new Error(`htpasswd failed: ${result.stderr.trim()}`);
  return `${result.stdout.trim()}\n`;
}

async function launch(
  directory: string,
  auth: Record<string, unknown> | undefined,
  notify: StartRegistryOptions["notify"],
): Promise<TestRegistry> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  // JSON is YAML, so the config needs no YAML writer.
  const config = {
    version: "0.1",
    log: { level: "warn", accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: join(directory, "data") }, delete: { enabled: true } },
    http: { addr: `127.0.0.1:${port}`, secret: randomBytes(16).toString("hex") },
    ...(auth && { auth }),
    ...(notify && {
      notifications: {
        endpoints: [
          {
            name: "ferry",
            url: notify.url,
            headers: { Authorization: [notify.authorization] },
            timeout: "5s",
            threshold: 5,
            backoff: "1s",
          },
        ],
      },
    }),
  };
  const configPath = join(directory, "config.yml");
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  const child = spawn(REGISTRY_BINARY, ["serve", configPath], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const keepTail = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-4000);
  };
  child.stdout?.on("data", keepTail);
  child.stderr?.on("data", keepTail);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const spawnFailed = new Promise<Error>((resolve) => child.once("error", resolve));

  const stop = async () => {
    await stopProcess(child, exited);
    rmSync(directory, { recursive: true, force: true });
  };

  const deadline = Date.now() + 15_000;
  for (;;) {
    const outcome = await Promise.race([
      exited.then((code) => ({ exited: code })),
      spawnFailed.then((error) => ({ error })),
      answers(url).then((ok) => ({ ok })),
    ]);
    if ("error" in outcome) {
      throw new Error(`cannot start ${REGISTRY_BINARY} (${outcome.error.message}); run scripts/test-services.sh`);
    }
    if ("exited" in outcome) {
      if (/address already in use/.test(output)) throw new PortTakenError(output);
      throw new Error(`docker-registry exited with code ${outcome.exited} before answering:\n${output}`);
    }
    if (outcome.ok) return { url, stop };
    if (Date.now() > deadline) {
      await stopProcess(child, exited);
      throw new Error(`docker-registry did not answer at ${url}/v2/ within 15 s:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Whether /v2/ answers at all: 200, or 401 when authentication is on. */
async function answers(url: string): Promise<boolean> {
  try {
    const response = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1_000) });
    await response.body?.cancel();
    return response.status === 200 || response.status === 401;
  } catch {
    return false;
  }
}

async function stopProcess(child: ChildProcess, exited: Promise<unknown>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const killed = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(killed);
}

export interface PushTestImageOptions {
  /** The content of the image's one file; different contents give different digests. Default "hello". */
  content?: string;
  auth?: Credentials;
}

const MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json";

/**
 * Pushes a one-layer image straight through the HTTP API (no Docker): a gzip'd tar layer
 * holding `/content.txt`, a config blob and a Docker v2 schema 2 manifest. Returns the
 * manifest's digest, as the registry reported it.
 */
export async function pushTestImage(
  registryUrl: string,
  repository: string,
  tag: string,
  options: PushTestImageOptions = {},
): Promise<string> {
  const session = new PushSession(registryUrl, options.auth);
  const tar = tarWithOneFile("content.txt", Buffer.from(options.content ?? "hello", "utf8"));
  const layer = gzipSync(tar);
  const config = Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      config: { Cmd: ["/content.txt"] },
      rootfs: { type: "layers", diff_ids: [sha256Digest(tar)] },
      history: [{ created_by: "ferry test helper pushTestImage" }],
    }),
  );
  await session.uploadBlob(repository, layer);
  await session.uploadBlob(repository, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MANIFEST_TYPE,
      config: {
        mediaType: "application/vnd.docker.container.image.v1+json",
        size: config.length,
        digest: sha256Digest(config),
      },
      layers: [
        {
          mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip",
          size: layer.length,
          digest: sha256Digest(layer),
        },
      ],
    }),
  );
  const response = await session.request(`${registryUrl}/v2/${repository}/manifests/${tag}`, {
    method: "PUT",
    headers: { "content-type": MANIFEST_TYPE },
    body: manifest,
  });
  await expectStatus(response, 201, `PUT manifest ${repository}:${tag}`);
  const digest = response.headers.get("docker-content-digest");
  if (digest !== sha256Digest(manifest)) {
    throw new Error(`registry reported digest ${digest} for a manifest whose digest is ${sha256Digest(manifest)}`);
  }
  return digest;
}

/** HTTP calls of one push: Basic credentials, or a bearer token once the registry asks for one. */
class PushSession {
  private authorization: string | undefined;

  constructor(
    private readonly registryUrl: string,
    private readonly auth: Credentials | undefined,
  ) {}

  async uploadBlob(repository: string, blob: Buffer): Promise<void> {
    const start = await this.request(`${this.registryUrl}/v2/${repository}/blobs/uploads/`, { method: "POST" });
    await expectStatus(start, 202, `POST blob upload to ${repository}`);
    const location = start.headers.get("location");
    if (!location) throw new Error("registry started a blob upload without a Location");
    // Monolithic upload: the whole blob in the PUT that closes the upload.
    const target = new URL(location, this.registryUrl);
    target.searchParams.set("digest", sha256Digest(blob));
    const finish = await this.request(target.href, {
      method: "PUT",
      headers: { "content-type": "application/octet-stream" },
      body: blob,
    });
    await expectStatus(finish, 201, `PUT blob to ${repository}`);
  }

  async request(url: string, init: { method: string; headers?: Record<string, string>; body?: Buffer }) {
    const send = () =>
      fetch(url, {
        ...init,
        headers: { ...init.headers, ...(this.authorization && { authorization: this.authorization }) },
        signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
      });
    const response = await send();
    if (response.status !== 401 || !this.auth) return response;
    const challenge = response.headers.get("www-authenticate") ?? "";
    await response.body?.cancel();
    const basic = `Basic ${Buffer.from(`${this.auth.username}:${this.auth.password}`).toString("base64")}`;
    if (/^bearer\s/i.test(challenge)) {
      const params = Object.fromEntries(
        [...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((match) => [match[1], match[2]]),
      );
      const tokenUrl = new URL(params.realm ?? "");
      if (params.service) tokenUrl.searchParams.set("service", params.service);
      if (params.scope) tokenUrl.searchParams.set("scope", params.scope);
      const tokenResponse = await fetch(tokenUrl, {
        headers: { authorization: basic },
        signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
      });
      await expectStatus(tokenResponse, 200, "GET token", false);
      const { token } = (await tokenResponse.json()) as { token: string };
      this.authorization = `Bearer ${token}`;
    } else {
      this.authorization = basic;
    }
    return send();
  }
}

async function expectStatus(response: Response, status: number, what: string, consume = true): Promise<void> {
  if (response.status === status) {
    if (consume) await response.body?.cancel();
    return;
  }
  throw new Error(`${what}: expected HTTP ${status}, got ${response.status}: ${await response.text()}`);
}

function sha256Digest(data: Buffer): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** A POSIX ustar archive with one regular file, written by hand (512-byte header, padded data, two zero blocks). */
function tarWithOneFile(name: string, content: Buffer): Buffer {
  const header = Buffer.alloc(512);
  const octal = (value: number, width: number) => `${value.toString(8).padStart(width - 1, "0")}\0`;
  header.write(name, 0, 100, "utf8");
  header.write(octal(0o644, 8), 100, "ascii"); // mode
  header.write(octal(0, 8), 108, "ascii"); // uid
  header.write(octal(0, 8), 116, "ascii"); // gid
  header.write(octal(content.length, 12), 124, "ascii"); // size
  header.write(octal(0, 12), 136, "ascii"); // mtime: fixed, so equal contents give equal digests
  header.write(" ".repeat(8), 148, "ascii"); // checksum field counts as spaces while summing
  header.write("0", 156, "ascii"); // regular file
  header.write("ustar\0", 257, "ascii");
  header.write("00", 263, "ascii");
  let checksum = 0;
  for (const byte of header) checksum += byte;
  header.write(`${checksum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
  const padding = (512 - (content.length % 512)) % 512;
  return Buffer.concat([header, content, Buffer.alloc(padding), Buffer.alloc(1024)]);
}
