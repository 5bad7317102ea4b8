import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { SecretBox } from "../src/security/secretBox.js";
import {
  apiRequest,
  expectSuccess,
  isolatedEnv,
  parseJson,
  runFerry,
  testAdminKey,
  trackedResources,
} from "./helpers/cli.js";
import { createPostgresDatabase } from "./helpers/databases.js";

/*
 * `ferry admin rotate-master-key` against a real `ferry server` (bin/ferry) on SQLite and on
 * PostgreSQL (ADR 0046): the server keeps answering while it rotates, every kind of stored
 * secret still works afterwards (a deployment reads the sensitive variable, the SSH key and
 * feed password are still there), no stored value opens under the old key any more, the
 * audit log still verifies, and the database started with a key that is not its own stops
 * the server with a message that names the key to restore.
 */

const resources = trackedResources("ferry-rotate-");
afterAll(() => resources.cleanUp());

const SECRET = "s3cret-value-for-rotation";

const FERRY_YML = `
project: { name: rotation, variableSets: [shared] }
environments: [dev]
lifecycle: { name: rotation, phases: [{ environments: [dev] }] }
feeds:
  - name: registry
    url: http://127.0.0.1:5999
    username: ci
    passwordFrom: { env: FEED_PASSWORD }
targets:
  - name: here
    environments: [dev]
    roles: [app]
  - name: remote
    environments: [dev]
    roles: [elsewhere]
    transport: ssh
    ssh: { host: 127.0.0.1, port: 1, user: nobody, privateKeyFrom: { file: id_ed25519 } }
variableSets:
  - name: shared
    variables:
      - name: SetToken
        sensitive: true
        valueFrom: { env: ROTATION_TOKEN }
variables:
  - name: Token
    sensitive: true
    valueFrom: { env: ROTATION_TOKEN }
steps:
  - name: check
    kind: script
    roles: [app]
    config:
      script: |
        test "$TOKEN" = "${SECRET}" && test "$SET_TOKEN" = "${SECRET}" && echo "token matches"
      env: { TOKEN: "#{Token}", SET_TOKEN: "#{SetToken}" }
`;

/** Every sealed text stored in the database, whatever its table (JSON documents included). */
async function sealedValues(dialect: string, dataDir: string, url: string | undefined): Promise<string[]> {
  const queries = [
    "SELECT value_sealed AS v FROM variables",
    "SELECT value_sealed AS v FROM variable_set_variables",
    "SELECT password_sealed AS v FROM feeds",
    "SELECT ssh_private_key_sealed AS v FROM targets",
    "SELECT secret_sealed AS v FROM webhooks",
    "SELECT snapshot AS v FROM releases",
  ];
  const texts: string[] = [];
  if (dialect === "sqlite") {
    const db = new Database(join(dataDir, "ferry.db"), { readonly: true });
    for (const query of queries)
      for (const row of db.prepare(query).all() as { v: string | null }[]) texts.push(row.v ?? "");
    db.close();
  } else {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    for (const query of queries)
      for (const row of (await client.query(query)).rows as { v: string | null }[]) texts.push(row.v ?? "");
    await client.end();
  }
  return texts.flatMap((text) => text.match(/v1:[0-9a-f]{12}:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]*/g) ?? []);
}

const keyOf = async (dataDir: string) =>
  Buffer.from((await readFile(join(dataDir, "master.key"), "utf8")).trim(), "base64");

// The two dialects run side by side: each has its own server, home and database.
describe.each(["sqlite", "postgres"])("master key rotation on %s", { concurrent: true }, (dialect) => {
  it("re-encrypts every secret under a running server, finishes an interrupted rotation at start, and a database without its key stops the start", async () => {
    const home = await resources.makeTemporaryDirectory();
    const dataDir = join(home, "data");
    const database = dialect === "postgres" ? await createPostgresDatabase() : undefined;
    try {
      const adminKey = testAdminKey();
      const env = isolatedEnv(home, {
        FERRY_ADMIN_API_KEY: adminKey,
        ...(database && { FERRY_DATABASE_URL: database.url }),
      });
      const server = await resources.startFerryServer({ dataDir, env });
      const cli = isolatedEnv(home, { FERRY_URL: server.url, FERRY_API_KEY: adminKey });
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(home, "id_ed25519")]);
      await writeFile(join(home, "ferry.yml"), FERRY_YML);
      expectSuccess(
        await runFerry(["apply", "-f", join(home, "ferry.yml")], {
          ...cli,
          FEED_PASSWORD: "feed-password",
          ROTATION_TOKEN: SECRET,
        }),
      );
      const call = (method: string, path: string, body?: unknown) =>
        apiRequest(new URL(path, server.url).toString(), adminKey, method, body);
      expect(
        (
          await call("POST", "/api/v1/projects/rotation/webhooks", {
            url: "http://127.0.0.1:5998/hook",
            secret: "webhook-secret-0123456789",
          })
        ).status,
      ).toBe(201);
      expect((await call("POST", "/api/v1/projects/rotation/releases", { version: "1.0.0" })).status).toBe(201);

      const oldKey = await keyOf(dataDir);
      const oldBox = new SecretBox(oldKey);
      const before = await sealedValues(dialect, dataDir, database?.url);
      expect(before.length).toBeGreaterThanOrEqual(5);
      expect(before.every((sealed) => sealed.startsWith(`v1:${oldBox.keyId}:`))).toBe(true);

      // Requests keep being answered (and secrets keep being written) while the rotation runs.
      let stop = false;
      const traffic = (async () => {
        const statuses: number[] = [];
        for (let index = 0; !stop; index += 1) {
          const response = await call("POST", "/api/v1/projects/rotation/variables", {
            name: `During${index}`,
            value: `during-${index}`,
            sensitive: true,
          });
          statuses.push(response.status);
          statuses.push((await call("GET", "/api/v1/projects/rotation/variables")).status);
        }
        return statuses;
      })();
      const rotated = await runFerry(["admin", "rotate-master-key", "--json"], cli);
      stop = true;
      const statuses = await traffic;
      expectSuccess(rotated);
      const result = parseJson<{ from: string; to: string; resealed: { values: Record<string, number> } }>(rotated);
      expect(result.from).toBe(oldBox.keyId);
      expect(result.to).not.toBe(oldBox.keyId);
      expect(result.resealed.values["feeds.password_sealed"]).toBe(1);
      expect(result.resealed.values["targets.ssh_private_key_sealed"]).toBe(1);
      expect(result.resealed.values["webhooks.secret_sealed"]).toBe(1);
      expect(result.resealed.values["variable_set_variables.value_sealed"]).toBe(1);
      // The release's snapshot holds the project's Token and the set's SetToken.
      expect(result.resealed.values["releases.snapshot"]).toBe(2);
      expect(statuses.length).toBeGreaterThan(0);
      expect(statuses.every((status) => status === 201 || status === 200)).toBe(true);

      // The new key is the data directory's; no rotation is left half done.
      const newBox = new SecretBox(await keyOf(dataDir));
      expect(newBox.keyId).toBe(result.to);
      expect(existsSync(join(dataDir, "master.key.next"))).toBe(false);

      // No stored value names the old key, and none opens under it (named as old, GCM refuses).
      const after = await sealedValues(dialect, dataDir, database?.url);
      expect(after.length).toBeGreaterThanOrEqual(before.length);
      for (const sealed of after) {
        expect(sealed.startsWith(`v1:${result.to}:`), sealed).toBe(true);
        const posing = sealed.replace(`v1:${result.to}:`, `v1:${oldBox.keyId}:`);
        expect(() => oldBox.open(posing, "variable:any")).toThrow();
      }

      // Every kind still works: the deployment reads the sensitive variable, the audit log verifies.
      const deployment = await call("POST", "/api/v1/projects/rotation/deployments", {
        release: "1.0.0",
        environment: "dev",
      });
      expect(deployment.status).toBe(201);
      const { taskId } = (await deployment.json()) as { taskId: string };
      const logs = await runFerry(["task", "logs", taskId, "--follow"], cli, { timeoutMs: 60_000 });
      expectSuccess(logs);
      expect(logs.stdout).toContain("token matches");
      expect(logs.stdout).not.toContain(SECRET);
      expectSuccess(await runFerry(["admin", "verify-audit"], cli));
      // The rotation is in the audit log, by key id only.
      const audit = (await (await call("GET", "/api/v1/audit?action=master-key.rotate")).json()) as {
        items: { diff: Record<string, { from: unknown; to: unknown }> }[];
      };
      expect(audit.items[0]?.diff.keyId).toEqual({ from: oldBox.keyId, to: result.to });
      await server.stop();

      // A rotation interrupted right after it wrote its new key: the next start finishes it.
      const interruptedKey = randomBytes(32);
      await writeFile(join(dataDir, "master.key.next"), `${interruptedKey.toString("base64")}\n`, { mode: 0o600 });
      const resumed = await resources.startFerryServer({ dataDir, env, port: server.port });
      const resumedBox = new SecretBox(interruptedKey);
      expect(resumed.stdout()).toContain("finished an interrupted master key rotation");
      expect(existsSync(join(dataDir, "master.key.next"))).toBe(false);
      expect((await keyOf(dataDir)).equals(interruptedKey)).toBe(true);
      for (const sealed of await sealedValues(dialect, dataDir, database?.url)) {
        expect(sealed.startsWith(`v1:${resumedBox.keyId}:`), sealed).toBe(true);
      }
      const again = await call("POST", "/api/v1/projects/rotation/deployments", {
        release: "1.0.0",
        environment: "dev",
      });
      expect(again.status).toBe(201);
      const againLogs = await runFerry(
        ["task", "logs", ((await again.json()) as { taskId: string }).taskId, "--follow"],
        cli,
        {
          timeoutMs: 60_000,
        },
      );
      expectSuccess(againLogs);
      expect(againLogs.stdout).toContain("token matches");
      expectSuccess(await runFerry(["admin", "verify-audit"], cli));
      await resumed.stop();

      // The database (a backup of it) started with a data directory that does not hold its key.
      const restored = join(home, "restored");
      await mkdir(restored, { recursive: true, mode: 0o700 });
      if (dialect === "sqlite") await copyFile(join(dataDir, "ferry.db"), join(restored, "ferry.db"));
      await writeFile(join(restored, "master.key"), `${oldKey.toString("base64")}\n`, { mode: 0o600 });
      const refused = await runFerry(["server", "--port", "0", "--data-dir", restored], env, { timeoutMs: 30_000 });
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain(`were encrypted with master key ${resumedBox.keyId}`);
      expect(refused.stderr).toContain(`is key ${oldBox.keyId}`);
      expect(refused.stderr).toContain("restore the master.key that was backed up with this database");

      // A backup whose only secrets are inside JSON documents (a release's snapshot) is refused
      // as well, naming the document: the start reads those too, not only the sealed columns.
      if (dialect === "sqlite") {
        const db = new Database(join(restored, "ferry.db"));
        for (const [table, column] of [
          ["variables", "value_sealed"],
          ["variable_set_variables", "value_sealed"],
          ["feeds", "password_sealed"],
          ["targets", "ssh_private_key_sealed"],
          ["targets", "ssh_passphrase_sealed"],
          ["agents", "next_credential_sealed"],
        ]) {
          db.prepare(`UPDATE ${table} SET ${column} = NULL`).run();
        }
        for (const table of ["webhooks", "feed_triggers"]) db.prepare(`DELETE FROM ${table}`).run();
        db.close();
        const onlyDocuments = await runFerry(["server", "--port", "0", "--data-dir", restored], env, {
          timeoutMs: 30_000,
        });
        expect(onlyDocuments.code).not.toBe(0);
        expect(onlyDocuments.stderr).toContain(
          `the database's secrets (releases.snapshot) were encrypted with master key ${resumedBox.keyId}`,
        );
      }
    } finally {
      await database?.drop();
    }
  }, 180_000);
});
