import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callExpecting } from "./helpers/api.js";
import { expectSuccess, isolatedEnv, parseJson, runFerry } from "./helpers/cli.js";
import { createPostgresDatabase, dialects } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/**
 * The built-in package feed (issue 15 part 2, ADR 0044) through a real server and the real
 * `bin/ferry`: push (the sha256 the server reports is the file's), list newest first, a
 * version never changes, archives that are not real tar.gz / zip or whose entries escape
 * (`..`, absolute paths, links pointing out — each its own case) are refused with a message
 * saying why, the size limit, retention that keeps a version a deployed release pins,
 * delete refused for it, and releases pinning versions (given, or the newest). Archives are
 * made by Debian's tar and zip, and by Python's tarfile / zipfile for the hostile ones (tar
 * refuses to make some of them). On SQLite and PostgreSQL.
 */

type Body = Record<string, unknown>;

interface PushedVersion {
  name: string;
  version: string;
  format: string;
  size: number;
  sha256: string;
  files: number;
}

const sha256Of = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

/** Python builds the archives tar and zip would not make (entries outside, links out). */
function python(script: string, ...args: string[]): void {
  execFileSync("python3", ["-c", script, ...args], { stdio: "pipe" });
}

/**
 * The two dialects run side by side, each on its own server, database and directory (the
 * tests of one dialect still in order): the file waits mostly on `bin/ferry` processes.
 */
const sideBySide = { timeout: 180_000, concurrent: true };

describe.each(dialects)("package feed through the server and the CLI (%s)", sideBySide, (dialect) => {
  let test: TestServer;
  let dropDatabase: (() => Promise<void>) | undefined;
  let work: string;
  let env: NodeJS.ProcessEnv;

  const ferry = (...args: string[]) => runFerry(args, env, { timeoutMs: 60_000 });

  function admin<T = Body>(method: string, path: string, body?: unknown, status?: number): Promise<T> {
    return callExpecting<T>(test, method, path, body, status);
  }

  /** A tar.gz of a small app directory whose server.js prints `text`. */
  function appArchive(name: string, text: string): string {
    const directory = join(work, `${name}-src`);
    mkdirSync(join(directory, "lib"), { recursive: true });
    writeFileSync(join(directory, "server.js"), `console.log(${JSON.stringify(text)});\n`);
    writeFileSync(join(directory, "lib", "data.txt"), `${text}\n`);
    symlinkSync("../server.js", join(directory, "lib", "entry.js"));
    const file = join(work, `${name}.tar.gz`);
    execFileSync("tar", ["-czf", file, "-C", directory, "."]);
    return file;
  }

  beforeAll(async () => {
    let databaseUrl: string | undefined;
    if (dialect === "postgres") {
      const database = await createPostgresDatabase();
      databaseUrl = database.url;
      dropDatabase = database.drop;
    }
    test = await startTestServer({ databaseUrl, packageMaxBytes: 64 * 1024, packageKeepVersions: 3 });
    work = mkdtempSync(join(tmpdir(), "ferry-packages-"));
    env = isolatedEnv(work, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey });
  });

  afterAll(async () => {
    await test?.close();
    await dropDatabase?.();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it.sequential("pushes a tar.gz with its sha256 computed by the server, lists newest first, and never changes a version", async () => {
    const first = appArchive("web-1", "version one");
    const pushed = await ferry("package", "push", "web-app", "1.0.0", first, "--json");
    expectSuccess(pushed);
    const info = parseJson<PushedVersion>(pushed);
    expect(info).toMatchObject({ name: "web-app", version: "1.0.0", format: "tar.gz", sha256: sha256Of(first) });
    expect(info.size).toBe(readFileSync(first).length);
    // ., server.js, lib/, lib/data.txt, lib/entry.js
    expect(info.files).toBe(5);

    const second = appArchive("web-2", "version two");
    expectSuccess(await ferry("package", "push", "web-app", "1.1.0", second));
    const zipDirectory = join(work, "zip-src");
    mkdirSync(zipDirectory);
    writeFileSync(join(zipDirectory, "index.html"), "<p>docs</p>\n");
    const zip = join(work, "docs.zip");
    execFileSync("zip", ["-qr", zip, "."], { cwd: zipDirectory });
    const docs = await ferry("package", "push", "docs", "7", zip, "--json");
    expectSuccess(docs);
    expect(parseJson<PushedVersion>(docs)).toMatchObject({ format: "zip", sha256: sha256Of(zip), files: 1 });

    const listed = parseJson<PushedVersion[]>(await ferry("package", "list", "web-app", "--json"));
    expect(listed.map((item) => item.version)).toEqual(["1.1.0", "1.0.0"]);
    const all = parseJson<PushedVersion[]>(await ferry("package", "list", "--json"));
    expect(all.map((item) => `${item.name} ${item.version}`)).toEqual(["docs 7", "web-app 1.1.0", "web-app 1.0.0"]);
    const table = await ferry("package", "list", "web-app");
    expectSuccess(table);
    expect(table.stdout).toContain(sha256Of(second));

    // The same version again, even with the same bytes: refused, and the stored one is untouched.
    const again = await ferry("package", "push", "web-app", "1.0.0", second);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain("web-app 1.0.0 exists already");
    const shown = parseJson<PushedVersion>(await ferry("package", "show", "web-app", "1.0.0", "--json"));
    expect(shown.sha256).toBe(sha256Of(first));

    // What is downloaded is exactly what was pushed.
    const response = await fetch(new URL("/api/v1/packages/web-app/versions/1.0.0/content", test.server.url), {
      headers: { authorization: `Bearer ${test.apiKey}` },
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("etag")).toBe(`"${sha256Of(first)}"`);
    expect(Buffer.from(await response.arrayBuffer()).equals(readFileSync(first))).toBe(true);
  });

  it.sequential("refuses names and versions outside the rules, naming the argument", async () => {
    const file = appArchive("names", "x");
    const badName = await ferry("package", "push", "Web_App", "1.0.0", file);
    expect(badName.code).not.toBe(0);
    expect(badName.stderr).toContain("NAME:");
    const badVersion = await ferry("package", "push", "web-app", "../1", file);
    expect(badVersion.code).not.toBe(0);
    expect(badVersion.stderr).toContain("VERSION:");
    // The API checks them too (a client other than the CLI).
    const response = await fetch(new URL("/api/v1/packages/web-app/versions/-1", test.server.url), {
      method: "PUT",
      headers: { authorization: `Bearer ${test.apiKey}`, "content-type": "application/octet-stream" },
      body: readFileSync(file),
    });
    expect(response.status).toBe(400);
    const problem = (await response.json()) as { errors: { pointer: string }[] };
    expect(problem.errors.map((error) => error.pointer)).toContain("/version");
  });

  it.sequential("refuses what is not a real tar.gz or zip, saying what to push instead", async () => {
    const text = join(work, "notes.txt");
    writeFileSync(text, "just text\n");
    const plain = await ferry("package", "push", "bad", "1", text);
    expect(plain.code).not.toBe(0);
    expect(plain.stderr).toContain("neither a gzip-compressed tar (.tar.gz) nor a zip archive");

    const gzipped = join(work, "notes.txt.gz");
    writeFileSync(gzipped, execFileSync("gzip", ["-c", text]));
    const single = await ferry("package", "push", "bad", "2", gzipped);
    expect(single.code).not.toBe(0);
    expect(single.stderr).toContain("not a tar archive");

    const good = appArchive("cut", "cut short");
    const cut = join(work, "cut.tar.gz");
    writeFileSync(cut, readFileSync(good).subarray(0, Math.floor(readFileSync(good).length / 2)));
    const truncated = await ferry("package", "push", "bad", "3", cut);
    expect(truncated.code).not.toBe(0);
    expect(truncated.stderr).toMatch(/cannot be read as a \.tar\.gz|ends in the middle/);

    // Nothing of the refused pushes is listed.
    expect(parseJson<PushedVersion[]>(await ferry("package", "list", "bad", "--json"))).toEqual([]);
  });

  it.sequential("refuses archives whose entries would land outside the package: '..', absolute paths, links pointing out", async () => {
    const tarCase = (name: string, script: string) => {
      const file = join(work, `${name}.tar.gz`);
      python(
        `import io, sys, tarfile\nt = tarfile.open(sys.argv[1], "w:gz")\ndef add(name, data=b"x", kind=tarfile.REGTYPE, link=""):\n    info = tarfile.TarInfo(name); info.type = kind; info.linkname = link; info.size = len(data) if kind == tarfile.REGTYPE else 0\n    t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)\nadd("ok.txt")\n${script}\nt.close()`,
        file,
      );
      return file;
    };
    const zipCase = (name: string, script: string) => {
      const file = join(work, `${name}.zip`);
      python(
        `import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED)\nz.writestr("ok.txt", "x")\n${script}\nz.close()`,
        file,
      );
      return file;
    };
    const cases: Array<[string, string, string]> = [
      ["tar-dotdot", tarCase("tar-dotdot", 'add("app/../../evil.sh")'), "has a '..' segment"],
      ["tar-absolute", tarCase("tar-absolute", 'add("/etc/cron.d/evil")'), "has an absolute path"],
      [
        "tar-symlink-out",
        tarCase("tar-symlink-out", 'add("app/config", kind=tarfile.SYMTYPE, link="../../etc/passwd")'),
        "outside the package",
      ],
      [
        "tar-symlink-absolute",
        tarCase("tar-symlink-absolute", 'add("app/shadow", kind=tarfile.SYMTYPE, link="/etc/shadow")'),
        "points to the absolute path",
      ],
      [
        "tar-hardlink-out",
        tarCase("tar-hardlink-out", 'add("app/hard", kind=tarfile.LNKTYPE, link="../outside")'),
        "outside the package",
      ],
      ["tar-device", tarCase("tar-device", 'add("app/null", kind=tarfile.CHRTYPE)'), "device, FIFO or other special"],
      ["zip-dotdot", zipCase("zip-dotdot", 'z.writestr("../evil.sh", "x")'), "has a '..' segment"],
      ["zip-absolute", zipCase("zip-absolute", 'z.writestr("/tmp/evil.sh", "x")'), "has an absolute path"],
      [
        "zip-symlink-out",
        zipCase(
          "zip-symlink-out",
          'info = zipfile.ZipInfo("app/link"); info.create_system = 3; info.external_attr = 0o120777 << 16\nz.writestr(info, "../../etc/passwd")',
        ),
        "outside the package",
      ],
    ];
    for (const [name, file, message] of cases) {
      const pushed = await ferry("package", "push", "hostile", name, file);
      expect(pushed.code, `${name}: ${pushed.stdout}`).not.toBe(0);
      expect(pushed.stderr, name).toContain(message);
    }
    // A link that stays inside is fine (the app archives have lib/entry.js -> ../server.js).
    const inside = zipCase(
      "zip-symlink-in",
      'info = zipfile.ZipInfo("app/link"); info.create_system = 3; info.external_attr = 0o120777 << 16\nz.writestr(info, "../ok.txt")',
    );
    expectSuccess(await ferry("package", "push", "hostile", "inside", inside));
    expect(
      parseJson<PushedVersion[]>(await ferry("package", "list", "hostile", "--json")).map((item) => item.version),
    ).toEqual(["inside"]);
  });

  it.sequential("refuses an archive over FERRY_PACKAGE_MAX_BYTES and keeps nothing of it", async () => {
    const directory = join(work, "big-src");
    mkdirSync(directory);
    // Random bytes do not compress: the archive is over the test server's 64 KiB.
    writeFileSync(join(directory, "blob.bin"), execFileSync("head", ["-c", String(200 * 1024), "/dev/urandom"]));
    const big = join(work, "big.tar.gz");
    execFileSync("tar", ["-czf", big, "-C", directory, "."]);
    const pushed = await ferry("package", "push", "big", "1", big);
    expect(pushed.code).not.toBe(0);
    expect(pushed.stderr).toContain("larger than the server's limit of 65536 bytes (FERRY_PACKAGE_MAX_BYTES)");
    expect(parseJson<PushedVersion[]>(await ferry("package", "list", "big", "--json"))).toEqual([]);
  });

  it.sequential("pins package versions in releases, keeps what a deployed release pins through retention and delete", async () => {
    await admin("POST", "/api/v1/environments", { name: "pinning" });
    await admin("POST", "/api/v1/lifecycles", { name: "pinning", phases: [{ environments: ["pinning"] }] });
    await admin("POST", "/api/v1/projects", { name: "pinned-app", lifecycle: "pinning" });
    await admin("PUT", "/api/v1/projects/pinned-app/process", {
      packages: [{ name: "web-app" }],
      steps: [
        {
          name: "say",
          kind: "script",
          config: {
            script: 'echo "deploying web-app $VERSION $SHA256"',
            env: { VERSION: "#{Ferry.Package[web-app].Version}", SHA256: "#{Ferry.Package[web-app].Sha256}" },
          },
        },
      ],
    });
    // Newest by default.
    const latest = parseJson<{ packages: { name: string; version: string; sha256: string }[] }>(
      await ferry("release", "create", "--project", "pinned-app", "--version", "1", "--json"),
    );
    const shown = parseJson<PushedVersion>(await ferry("package", "show", "web-app", "1.1.0", "--json"));
    expect(latest.packages).toEqual([{ name: "web-app", version: "1.1.0", sha256: shown.sha256, size: shown.size }]);
    // Given.
    const given = await ferry(
      "release",
      "create",
      "--project",
      "pinned-app",
      "--version",
      "2",
      "--package",
      "web-app=1.0.0",
    );
    expectSuccess(given);
    expect(given.stdout).toContain("web-app 1.0.0");
    // A version that does not exist, or a package the process does not have: refused, naming the field.
    const missing = await test.call<{ errors: { pointer: string; detail: string }[] }>(
      "POST",
      "/api/v1/projects/pinned-app/releases",
      { version: "3", packages: { "web-app": "9.9.9", other: "1" } },
    );
    expect(missing.status).toBe(400);
    expect(missing.body.errors.map((error) => error.pointer).sort()).toEqual(["/packages/other", "/packages/web-app"]);

    // Release 2 (web-app 1.0.0) is deployed; then three more versions push 1.0.0 past retention (keep 3).
    const deployment = await admin<{ taskId: string }>(
      "POST",
      "/api/v1/projects/pinned-app/deployments",
      { release: "2", environment: "pinning" },
      201,
    );
    expect((await test.waitForTask(deployment.taskId)).state).toBe("succeeded");
    const log = await admin<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${deployment.taskId}/log`);
    const oldSum = parseJson<PushedVersion>(await ferry("package", "show", "web-app", "1.0.0", "--json")).sha256;
    expect(log.lines.map((line) => line.text).join("\n")).toContain(`deploying web-app 1.0.0 ${oldSum}`);
    for (const version of ["1.2.0", "1.3.0", "1.4.0"]) {
      expectSuccess(await ferry("package", "push", "web-app", version, appArchive(`web-${version}`, version)));
    }
    const kept = parseJson<PushedVersion[]>(await ferry("package", "list", "web-app", "--json")).map(
      (item) => item.version,
    );
    // 1.1.0 went (past the newest 3, pinned by release 1 which is not deployed); 1.0.0 stays.
    expect(kept).toEqual(["1.4.0", "1.3.0", "1.2.0", "1.0.0"]);

    const refused = await ferry("package", "delete", "web-app", "1.0.0");
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("pinned by a release that is deployed");
    expectSuccess(await ferry("package", "delete", "web-app", "1.2.0"));
    expect(
      parseJson<PushedVersion[]>(await ferry("package", "list", "web-app", "--json")).map((item) => item.version),
    ).toEqual(["1.4.0", "1.3.0", "1.0.0"]);
  });

  it.sequential("lists packages in ferry.yml: apply sets them, export writes them back, and a plan of the export changes nothing", async () => {
    const file = join(work, "ferry.yml");
    writeFileSync(
      file,
      [
        "project: { name: yml-app }",
        "environments: [yml-env]",
        "lifecycle: { name: yml-life, phases: [{ environments: [yml-env] }] }",
        "packages: [{ name: web-app }]",
        "steps:",
        "  - name: unpack",
        "    kind: package",
        "    config: { package: web-app }",
        "",
      ].join("\n"),
    );
    const applied = await ferry("apply", "-f", file);
    expectSuccess(applied);
    const process = await admin<{ packages: { name: string }[] }>("GET", "/api/v1/projects/yml-app/process");
    expect(process.packages).toEqual([{ name: "web-app" }]);
    const exported = await ferry("export", "--project", "yml-app");
    expectSuccess(exported);
    expect(exported.stdout).toMatch(/packages:\s*\n\s*- name: web-app/);
    const again = join(work, "exported.yml");
    writeFileSync(again, exported.stdout);
    const planned = await ferry("plan", "-f", again);
    expectSuccess(planned);
    expect(planned.stdout).toContain("No changes");
    // A package step naming no package of the feed's name rules is refused with the field.
    writeFileSync(file, readFileSync(file, "utf8").replace("config: { package: web-app }", "config: { package: Web }"));
    const refused = await ferry("apply", "-f", file);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("/steps/0/config/package");
  });
});
