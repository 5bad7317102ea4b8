import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { realpathSync } from "node:fs";
import { chmod, chown, copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { type DemoImage, importAndPush, sharedLibraries } from "./images.js";

const execFileAsync = promisify(execFile);

/*
 * Images of a small Compose application, built here without any registry on the internet:
 * a Node.js web app and worker (one image, this machine's node binary) pushed to a test
 * registry, and PostgreSQL made of this machine's Debian PostgreSQL 15 binaries, kept in
 * the engine only (as an image pulled once from Docker Hub would be).
 */

/**
 * One image, two programs: /app/web.js answers "greeting <GREETING> version <APP_VERSION>"
 * at /, "ok" at /health and, at /db, whether a TCP connection to db:5432 (the database
 * service by its Compose name) opens; /app/worker.js logs "worker <version> greeting …
 * db reachable" every second. Keep-alive and a graceful stop: it fails no request itself.
 */
export async function buildComposeAppImage(options: {
  registryUrl: string;
  repository: string;
  version: string;
}): Promise<DemoImage & { tagged: string }> {
  const registryHost = new URL(options.registryUrl).host;
  const root = await mkdtemp(join(tmpdir(), "ferry-compose-app-"));
  try {
    const node = realpathSync(process.execPath);
    for (const file of [node, ...sharedLibraries(node)]) {
      await mkdir(join(root, dirname(file)), { recursive: true });
      await copyFile(file, join(root, file));
    }
    await mkdir(join(root, "app"));
    const dbCheck = [
      'const net = require("node:net");',
      "const dbReachable = () => new Promise((resolve) => {",
      '  const socket = net.connect({ host: process.env.DB_HOST || "db", port: 5432, timeout: 2000 });',
      '  socket.on("connect", () => { socket.destroy(); resolve(true); });',
      '  socket.on("error", () => resolve(false)); socket.on("timeout", () => { socket.destroy(); resolve(false); });',
      "});",
    ];
    await writeFile(
      join(root, "app", "web.js"),
      [
        'const http = require("node:http");',
        ...dbCheck,
        "const server = http.createServer(async (request, response) => {",
        '  if (request.url === "/health") return response.end("ok\\n");',
        '  if (request.url === "/db") return response.end((await dbReachable()) ? "db reachable\\n" : "db unreachable\\n");',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: the app's JavaScript source
        "  response.end(`greeting ${process.env.GREETING} version ${process.env.APP_VERSION}\\n`);",
        "});",
        "server.keepAliveTimeout = 60_000;",
        "server.listen(8080);",
        'process.on("SIGTERM", () => { server.close(() => process.exit(0)); server.closeIdleConnections(); });',
        "",
      ].join("\n"),
    );
    await writeFile(
      join(root, "app", "worker.js"),
      [
        ...dbCheck,
        "const tick = async () => console.log(",
        // biome-ignore lint/suspicious/noTemplateCurlyInString: the app's JavaScript source
        "  `worker ${process.env.APP_VERSION} greeting ${process.env.GREETING} db ${(await dbReachable()) ? 'reachable' : 'unreachable'}`);",
        "tick(); setInterval(tick, 1000);",
        'process.on("SIGTERM", () => process.exit(0));',
        "",
      ].join("\n"),
    );
    const image = await importAndPush(root, registryHost, options.repository, options.version, [
      `ENV APP_VERSION=${options.version}`,
      `CMD ${JSON.stringify([node, "/app/web.js"])}`,
      "EXPOSE 8080",
    ]);
    return { ...image, tagged: `${registryHost}/${options.repository}:${options.version}`, node } as DemoImage & {
      tagged: string;
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** Where the node binary is inside the app image (its path on this machine). */
export function nodeInImage(): string {
  return realpathSync(process.execPath);
}

const POSTGRES_BIN = "/usr/lib/postgresql/15/bin";

/**
 * PostgreSQL 15 from this machine's Debian packages: initdb on first start into
 * $PGDATA (a volume), trust authentication, listening on 5432; `pg_isready` for health
 * checks. Runs as uid 999, which owns /var/lib/postgresql/data in the image, so a new
 * named volume mounted there starts out owned by it (the engine copies the image's
 * directory into an empty volume). Returns the local tag; remove it with removeImages.
 */
export async function buildPostgresImage(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "ferry-postgres-image-"));
  const tag = `ferry-test/postgres:${randomBytes(4).toString("hex")}`;
  try {
    const place = async (source: string, destination = source) => {
      await mkdir(join(root, dirname(destination)), { recursive: true });
      await copyFile(source, join(root, destination));
    };
    const libraries = new Set<string>();
    for (const program of ["postgres", "initdb", "pg_isready"]) {
      await place(join(POSTGRES_BIN, program));
      for (const library of sharedLibraries(join(POSTGRES_BIN, program))) libraries.add(library);
    }
    for (const library of libraries) await place(library);
    // The catalogue's SQL, and $libdir's modules (plpgsql, the text search dictionaries) initdb loads.
    await mkdir(join(root, "usr/share/postgresql"), { recursive: true });
    await execFileAsync("cp", ["-a", "/usr/share/postgresql/15", join(root, "usr/share/postgresql/")]);
    await execFileAsync("cp", ["-a", "/usr/lib/postgresql/15/lib", join(root, "usr/lib/postgresql/15/")]);
    await place("/usr/share/zoneinfo/UTC");
    await place("/usr/share/zoneinfo/Etc/UTC");
    await place("/bin/busybox");
    for (const applet of ["sh", "cat", "echo", "mkdir", "sleep"]) await symlink("busybox", join(root, "bin", applet));
    await mkdir(join(root, "etc"), { recursive: true });
    await writeFile(
      join(root, "etc", "passwd"),
      "root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999::/var/lib/postgresql:/bin/sh\n",
    );
    await writeFile(join(root, "etc", "group"), "root:x:0:\npostgres:x:999:\n");
    await mkdir(join(root, "tmp"), { recursive: true });
    await chmod(join(root, "tmp"), 0o1777);
    await mkdir(join(root, "var/lib/postgresql/data"), { recursive: true });
    await chown(join(root, "var/lib/postgresql"), 999, 999);
    await chown(join(root, "var/lib/postgresql/data"), 999, 999);
    await writeFile(
      join(root, "start.sh"),
      [
        "set -e",
        'if [ ! -s "$PGDATA/PG_VERSION" ]; then',
        `  ${POSTGRES_BIN}/initdb -D "$PGDATA" -U postgres --auth=trust --locale=C -E UTF8 >/dev/null`,
        `  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"`,
        '  echo "host all all 0.0.0.0/0 trust" >> "$PGDATA/pg_hba.conf"',
        "fi",
        `exec ${POSTGRES_BIN}/postgres -D "$PGDATA" -k /tmp`,
        "",
      ].join("\n"),
    );
    const tar = await execFileAsync("tar", ["--numeric-owner", "-C", root, "-c", "."], {
      encoding: "buffer",
      maxBuffer: 1024 * 1024 * 1024,
    });
    await new Promise<void>((resolve, reject) => {
      const imported = execFile(
        "docker",
        [
          "import",
          "--change",
          "ENV PGDATA=/var/lib/postgresql/data TZ=UTC",
          "--change",
          "USER 999",
          "--change",
          'CMD ["/bin/sh", "/start.sh"]',
          "--change",
          "EXPOSE 5432",
          "-",
          tag,
        ],
        (error) => (error ? reject(error) : resolve()),
      );
      imported.stdin?.end(tar.stdout);
    });
    return tag;
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
