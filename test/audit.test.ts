import { createHash, randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AuditEvent, AuditVerification } from "../src/domain/audit.js";
import { appendAuditEvent } from "../src/store/audit.js";
import { openStore } from "../src/store/db.js";
import type { AuditEventRow } from "../src/store/schema.js";
import { dialects } from "./helpers/databases.js";
import { type ObservedApp, startObservedApp } from "./helpers/observedApp.js";

interface AuditList {
  items: AuditEvent[];
  total: number;
  limit: number;
  next: number | null;
}

/**
 * The audit log through the real API over both databases: what is recorded for changes and
 * tasks, that no secret ever reaches it, and that an entry edited, deleted or forged
 * directly in the database is found by the chain's verification.
 */
describe.each(dialects)("audit log on %s", (dialect) => {
  let test: ObservedApp;
  const canaries = {
    variable: `audit-var-canary-${randomBytes(8).toString("hex")}`,
    rotated: `audit-var-rotated-${randomBytes(8).toString("hex")}`,
    becameSensitive: `audit-var-became-${randomBytes(8).toString("hex")}`,
    feed: `audit-feed-canary-${randomBytes(8).toString("hex")}`,
    webhook: `audit-webhook-canary-${randomBytes(8).toString("hex")}`,
  };

  const call = <T = Record<string, unknown>>(method: string, path: string, body?: unknown) =>
    test.call<T>(method, path, body);
  const ok = async <T = Record<string, unknown>>(method: string, path: string, body?: unknown) => {
    const response = await call<T>(method, path, body);
    expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
    return response.body;
  };
  const entries = async (query = "") => {
    const all: AuditEvent[] = [];
    for (let after: number | null = 0; after !== null; ) {
      const page: AuditList = await ok<AuditList>("GET", `/api/v1/audit?limit=500&after=${after}${query}`);
      all.push(...page.items);
      after = page.next;
    }
    return all;
  };
  const verify = () => ok<AuditVerification>("GET", "/api/v1/audit/verify");
  const db = () => test.database.store.db;
  const rowAt = (seq: number) =>
    db().selectFrom("audit_events").selectAll().where("seq", "=", seq).executeTakeFirstOrThrow();
  const head = () => db().selectFrom("audit_chain").selectAll().executeTakeFirstOrThrow();

  beforeAll(async () => {
    test = await startObservedApp(dialect);
    await ok("POST", "/api/v1/environments", { name: "prod" });
    await ok("POST", "/api/v1/lifecycles", { name: "straight", phases: [{ environments: ["prod"] }] });
    await ok("POST", "/api/v1/projects", { name: "shop", lifecycle: "straight" });
  });
  afterAll(async () => {
    await test?.close();
  });

  it("records each change with who, from where and a field-level diff", async () => {
    await ok("PATCH", "/api/v1/projects/shop", { description: "Online shop" });
    await ok("POST", "/api/v1/environments", { name: "scratch", description: "to delete" });
    expect((await call("DELETE", "/api/v1/environments/scratch")).status).toBe(204);
    // A refused request changes nothing and records nothing.
    expect((await call("PATCH", "/api/v1/projects/no-such-project", { description: "x" })).status).toBe(404);

    const project = await entries("&resource=project:shop");
    expect(project.map((entry) => entry.action)).toEqual(["project.create", "project.update"]);
    const update = project[1];
    expect(update).toMatchObject({
      actor: { name: "test admin", id: expect.stringMatching(/^key_/) },
      source: "127.0.0.1",
      resource: { type: "project", id: expect.stringMatching(/^prj_/), name: "shop" },
      diff: { description: { from: "", to: "Online shop" } },
    });
    expect(update?.at).toMatch(/^\d{4}-\d\d-\d\dT/);

    const scratch = await entries("&resource=environment:scratch");
    expect(scratch.map((entry) => entry.action)).toEqual(["environment.create", "environment.delete"]);
    expect(scratch[1]?.diff).toMatchObject({
      name: { from: "scratch", to: null },
      description: { from: "to delete", to: null },
    });
    expect((await entries()).some((entry) => entry.resource.name === "no-such-project")).toBe(false);

    const page = await ok<AuditList>("GET", "/api/v1/audit?limit=2");
    expect(page.items.map((entry) => entry.seq)).toEqual([1, 2]);
    expect(page.next).toBe(2);
    const second = await ok<AuditList>("GET", `/api/v1/audit?limit=2&after=${page.next}`);
    expect(second.items[0]?.seq).toBe(3);
    expect((await ok<AuditList>("GET", "/api/v1/audit?action=project.update")).total).toBe(1);
  });

  it("never writes a sensitive value: variables, feed passwords, webhook secrets", async () => {
    const secret = await ok<{ id: string }>("POST", "/api/v1/projects/shop/variables", {
      name: "DbPassword",
      value: canaries.variable,
      sensitive: true,
    });
    await ok("PATCH", `/api/v1/projects/shop/variables/${secret.id}`, { value: canaries.rotated });
    const plain = await ok<{ id: string }>("POST", "/api/v1/projects/shop/variables", {
      name: "Greeting",
      value: "hello",
    });
    await ok("PATCH", `/api/v1/projects/shop/variables/${plain.id}`, {
      value: canaries.becameSensitive,
      sensitive: true,
    });
    await ok("DELETE", `/api/v1/projects/shop/variables/${plain.id}`);
    // Private addresses: allowed by the outbound guard, and nothing is called when saving.
    await ok("POST", "/api/v1/feeds", {
      name: "Private registry",
      url: "http://10.20.30.40:5000",
      username: "ci",
      password: canaries.feed,
    });
    await ok("PATCH", "/api/v1/feeds/private-registry", { password: `${canaries.feed}-2` });
    await ok("PATCH", "/api/v1/feeds/private-registry", { password: null });
    const hook = await ok<{ id: string }>("POST", "/api/v1/projects/shop/webhooks", {
      url: "http://10.20.30.40/hook",
      secret: canaries.webhook,
    });
    await ok("PATCH", `/api/v1/projects/shop/webhooks/${hook.id}`, { secret: `${canaries.webhook}-rotated` });

    const all = await entries();
    const byAction = (action: string, name?: string) =>
      all.filter((entry) => entry.action === action && (name === undefined || entry.resource.name === name));
    expect(byAction("variable.create", "shop/DbPassword")[0]?.diff).toMatchObject({
      name: { from: null, to: "DbPassword" },
      sensitive: { from: null, to: true },
      value: { from: null, to: "(sensitive)" },
    });
    expect(byAction("variable.update", "shop/DbPassword")[0]?.diff).toEqual({
      value: { from: "(sensitive)", to: "(changed)" },
    });
    expect(byAction("variable.update", "shop/Greeting")[0]?.diff).toEqual({
      sensitive: { from: false, to: true },
      value: { from: "(sensitive)", to: "(changed)" },
    });
    expect(byAction("feed.create")[0]?.diff).toMatchObject({ password: { from: null, to: "(sensitive)" } });
    expect(byAction("feed.update").map((entry) => entry.diff.password)).toEqual([
      { from: "(sensitive)", to: "(changed)" },
      { from: "(sensitive)", to: null },
    ]);
    expect(byAction("webhook.update")[0]?.diff).toEqual({ secret: { from: "(sensitive)", to: "(changed)" } });

    const exported = await test.app.inject({ method: "GET", url: "/api/v1/audit/export", headers: test.auth });
    expect(exported.statusCode).toBe(200);
    expect(exported.headers["content-type"]).toContain("application/x-ndjson");
    const lines = exported.body.trimEnd().split("\n");
    expect(lines.map((line) => (JSON.parse(line) as AuditEvent).seq)).toEqual(all.map((entry) => entry.seq));
    const rows = await db().selectFrom("audit_events").selectAll().execute();
    const everything = [exported.body, JSON.stringify(all), JSON.stringify(rows)].join("\n");
    for (const canary of Object.values(canaries)) expect(everything).not.toContain(canary);
  });

  it("records deployments and each task's start and end", async () => {
    await ok("PUT", "/api/v1/projects/shop/process", {
      steps: [{ name: "ship", kind: "script", config: { script: "echo shipped" } }],
    });
    await ok("POST", "/api/v1/projects/shop/releases", { version: "1.0.0" });
    const queued = await ok<{ taskId: string; deploymentId: string }>("POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "prod",
    });
    expect((await test.waitForTask(queued.taskId)).state).toBe("succeeded");
    let task: AuditEvent[] = [];
    for (const deadline = Date.now() + 10_000; task.length < 2 && Date.now() < deadline; await sleep(25)) {
      task = await entries(`&resource=task:${queued.taskId}`);
    }
    expect(task.map((entry) => [entry.action, entry.diff.state])).toEqual([
      ["task.start", { from: "queued", to: "running" }],
      ["task.finish", { from: "running", to: "succeeded" }],
    ]);
    expect(task[0]).toMatchObject({ actor: { id: null, name: "engine" }, source: "engine" });
    expect((await entries("&resource=process:shop")).map((entry) => Object.keys(entry.diff))).toEqual([["steps"]]);
    expect((await entries("&resource=release:shop/1.0.0")).map((entry) => entry.action)).toEqual(["release.create"]);
    expect(await entries(`&resource=deployment:${queued.deploymentId}`)).toEqual([
      expect.objectContaining({
        action: "deployment.create",
        diff: expect.objectContaining({
          environment: { from: null, to: "prod" },
          taskId: { from: null, to: queued.taskId },
        }),
      }),
    ]);
    await ok("POST", "/api/v1/projects/shop/releases/1.0.0/variables-snapshot");
    const snapshot = await entries("&action=release.variables-snapshot");
    expect(snapshot[0]?.diff.variablesUpdatedBy).toEqual({ from: null, to: "test admin" });
  });

  it("verifies an untouched chain, and names an entry edited in the database", async () => {
    const sound = await verify();
    expect(sound.ok).toBe(true);
    expect(sound.firstBad).toBeUndefined();
    expect(sound.checked).toBe(sound.head?.seq);
    expect(sound.checked).toBeGreaterThan(10);

    const target = await rowAt(3);
    await db()
      .updateTable("audit_events")
      .set({ diff: '{"description":{"from":"","to":"forged"}}' })
      .where("seq", "=", 3)
      .execute();
    const edited = await verify();
    expect(edited).toMatchObject({ ok: false, checked: 2, firstBad: { seq: 3, id: target.id } });
    expect(edited.firstBad?.reason).toContain("edited");

    // Re-computing the edited entry's hash without the server's key does not help.
    const plain = createHash("sha256").update(`${target.prev_hash}forged`).digest("hex");
    await db().updateTable("audit_events").set({ hash: plain }).where("seq", "=", 3).execute();
    expect((await verify()).firstBad).toMatchObject({ seq: 3, id: target.id });

    await db().updateTable("audit_events").set({ diff: target.diff, hash: target.hash }).where("seq", "=", 3).execute();
    expect((await verify()).ok).toBe(true);
  });

  it("finds a deleted entry, a forged one and a deleted end", async () => {
    const middle = await rowAt(4);
    await db().deleteFrom("audit_events").where("seq", "=", 4).execute();
    const deleted = await verify();
    expect(deleted.ok).toBe(false);
    expect(deleted.firstBad).toMatchObject({ seq: 5, id: (await rowAt(5)).id });
    expect(deleted.firstBad?.reason).toContain("entry 4 is missing");
    await db().insertInto("audit_events").values(middle).execute();
    expect((await verify()).ok).toBe(true);

    // An entry appended through the database, with the head moved to it.
    const { seq, hash } = await head();
    const newest = await rowAt(seq);
    const forged: AuditEventRow = {
      ...newest,
      seq: seq + 1,
      id: "aud_forged",
      action: "project.delete",
      prev_hash: hash,
      hash: createHash("sha256").update(`${hash}forged`).digest("hex"),
    };
    await db().insertInto("audit_events").values(forged).execute();
    await db()
      .updateTable("audit_chain")
      .set({ seq: seq + 1, hash: forged.hash })
      .execute();
    expect((await verify()).firstBad).toMatchObject({ seq: seq + 1, id: "aud_forged" });
    await db().deleteFrom("audit_events").where("id", "=", "aud_forged").execute();
    await db().updateTable("audit_chain").set({ seq, hash }).execute();
    expect((await verify()).ok).toBe(true);

    // The newest entry deleted: the head still counts it.
    await db().deleteFrom("audit_events").where("seq", "=", seq).execute();
    const truncated = await verify();
    expect(truncated.firstBad).toMatchObject({ seq, id: null });
    expect(truncated.firstBad?.reason).toContain("newest");
    await db().insertInto("audit_events").values(newest).execute();
    expect((await verify()).ok).toBe(true);
  });

  it("keeps one linear chain when appends race, also from a second server node", async () => {
    const second =
      dialect === "postgres" && test.database.url
        ? await openStore({ dataDir: test.database.dataDir, databaseUrl: test.database.url })
        : undefined;
    try {
      const contexts = [test.database.context, ...(second ? [{ ...test.database.context, db: second.db }] : [])];
      const before = (await head()).seq;
      await Promise.all(
        Array.from({ length: 40 }, (_, index) =>
          appendAuditEvent(contexts[index % contexts.length] ?? test.database.context, {
            actor: { id: null, name: `racer ${index}` },
            source: "test",
            action: "test.race",
            resource: { type: "test", name: String(index) },
          }),
        ),
      );
      expect((await head()).seq).toBe(before + 40);
      const result = await verify();
      expect(result).toMatchObject({ ok: true, checked: before + 40 });
      const seqs = (await db().selectFrom("audit_events").select("seq").execute()).map((row) => Number(row.seq));
      expect(new Set(seqs).size).toBe(before + 40);
    } finally {
      await second?.close();
    }
  });
});
