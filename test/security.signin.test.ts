import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../src/api/app.js";
import { generateApiKey } from "../src/security/apiKeys.js";
import { insertApiKey } from "../src/store/apiKeys.js";
import { openStore } from "../src/store/db.js";
import { startTestApp, type TestApp } from "./helpers/app.js";
import { createPostgresDatabase, dialects, openTestDatabase, type TestDatabase } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/**
 * Security issue 11, findings 3 and 11, and the sign-in audit: the attacks as the attack
 * pass made them, each now failing, on SQLite and PostgreSQL.
 */

const PASSWORD = "the right long password";

interface AuditEntry {
  actor: { id: string | null; name: string };
  source: string;
  action: string;
  resource: { type: string; id: string | null; name: string | null };
  diff: Record<string, { from: unknown; to: unknown }>;
}

/** How many answers had each status: { 401: 5, 429: 95 }. */
function tally(statuses: number[]): Record<number, number> {
  const counts: Record<number, number> = {};
  for (const status of statuses) counts[status] = (counts[status] ?? 0) + 1;
  return counts;
}

/** A problem document without its requestId (every answer has its own). */
function withoutRequestId(body: string): Record<string, unknown> {
  const { requestId: _requestId, ...problem } = JSON.parse(body) as Record<string, unknown>;
  return problem;
}

describe.each(dialects)("sign-in hardening on %s", (dialect) => {
  let test: TestApp;

  const signIn = (username: string, password: string, remoteAddress: string) =>
    test.app.inject({ method: "POST", url: "/api/v1/session", payload: { username, password }, remoteAddress });

  const createUser = async (username: string, isAdmin = false) => {
    const response = await test.app.inject({
      method: "POST",
      url: "/api/v1/users",
      headers: test.auth,
      payload: { username, password: PASSWORD, isAdmin },
    });
    expect(response.statusCode, response.body).toBe(201);
    return response.json() as { id: string; username: string };
  };

  const auditEntries = async (query: string): Promise<AuditEntry[]> => {
    const response = await test.app.inject({ url: `/api/v1/audit?limit=500&${query}`, headers: test.auth });
    expect(response.statusCode, response.body).toBe(200);
    return (response.json() as { items: AuditEntry[] }).items;
  };

  const passwordHashOf = async (username: string) =>
    (
      await test.database.context.db
        .selectFrom("users")
        .select("password_hash")
        .where("username", "=", username)
        .executeTakeFirstOrThrow()
    ).password_hash;

  beforeAll(async () => {
    test = await startTestApp(dialect);
  });

  afterAll(async () => {
    await test?.close();
  });

  describe("finding 3: the sign-in limit holds against guesses sent all at once", () => {
    let server: TestServer;
    let dropDatabase: (() => Promise<void>) | undefined;

    beforeAll(async () => {
      if (dialect === "postgres") {
        const database = await createPostgresDatabase();
        dropDatabase = database.drop;
        server = await startTestServer({ databaseUrl: database.url });
      } else {
        server = await startTestServer();
      }
    }, 60_000);

    afterAll(async () => {
      await server?.close();
      await dropDatabase?.();
    });

    it("checks exactly 5 of 100 parallel guesses for one user on a real server (the right one among them); the rest get 429", async () => {
      expect((await server.call("POST", "/api/v1/users", { username: "victim", password: PASSWORD })).status).toBe(201);
      const guesses = Array.from({ length: 100 }, (_, index) => (index === 57 ? PASSWORD : `wrong guess ${index}`));
      const answers = await Promise.all(
        guesses.map(async (password) => {
          const response = await fetch(new URL("/api/v1/session", server.server.url), {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ username: "victim", password }),
          });
          return {
            status: response.status,
            retryAfter: response.headers.get("retry-after"),
            body: await response.text(),
          };
        }),
      );
      const counts = tally(answers.map((answer) => answer.status));
      // Before: 99 × 401 and the right one 200, every guess checked.
      expect(
        Object.keys(counts).every((status) => ["200", "401", "429"].includes(status)),
        JSON.stringify(counts),
      ).toBe(true);
      const checked = (counts[401] ?? 0) + (counts[200] ?? 0);
      // Exactly the limit: fewer would mean the reservation refuses checks it owes the user.
      expect(checked, JSON.stringify(counts)).toBe(5);
      expect(counts[429], JSON.stringify(counts)).toBe(95);
      for (const answer of answers.filter((one) => one.status === 429)) {
        expect(Number(answer.retryAfter)).toBeGreaterThan(0);
        expect(JSON.parse(answer.body)).toMatchObject({ type: "urn:ferry:problem:rate-limited" });
        expect(answer.body).not.toContain("wrong guess");
      }
      // The audit log shows the checks that were made, and only those.
      const audit = await server.call<{ items: AuditEntry[] }>(
        "GET",
        "/api/v1/audit?limit=500&resource=session:victim",
      );
      const signIns = audit.body.items.filter((entry) => entry.action.startsWith("session.sign-in"));
      expect(signIns).toHaveLength(checked);
      expect(JSON.stringify(audit.body)).not.toContain("wrong guess");
    });
  });

  it("lets 5 of 100 parallel wrong guesses for one user be checked, then refuses even the right password", async () => {
    await createUser("target-one");
    const answers = await Promise.all(
      Array.from({ length: 100 }, (_, index) => signIn("target-one", `wrong guess ${index}`, `192.0.2.${index + 1}`)),
    );
    // Guesses from 100 addresses: only the per-user limit applies.
    expect(tally(answers.map((answer) => answer.statusCode))).toEqual({ 401: 5, 429: 95 });
    const right = await signIn("target-one", PASSWORD, "192.0.2.200");
    expect(right.statusCode).toBe(429);
    const retryAfter = Number(right.headers["retry-after"]);
    expect(retryAfter).toBeGreaterThan(800);
    expect(retryAfter).toBeLessThanOrEqual(900);
    expect(right.json().detail).toMatch(/try again in \d+ seconds/);
    expect(await auditEntries("action=session.sign-in-failed&resource=session:target-one")).toHaveLength(5);
  });

  it("lets 20 of 100 parallel guesses from one address be checked, whatever usernames they try", async () => {
    const answers = await Promise.all(
      Array.from({ length: 100 }, (_, index) => signIn(`someone-${index}`, "wrong guess", "198.51.100.23")),
    );
    expect(tally(answers.map((answer) => answer.statusCode))).toEqual({ 401: 20, 429: 80 });
    // Another address is not held back.
    expect((await signIn("someone-0", "wrong guess", "198.51.100.24")).statusCode).toBe(401);
  });

  it("keeps the documented limits one guess at a time: the 6th for a user and the 21st from an address get 429", async () => {
    await createUser("target-two");
    const statuses: number[] = [];
    for (let index = 0; index < 6; index++) {
      statuses.push((await signIn("target-two", "wrong guess", `203.0.113.${index + 1}`)).statusCode);
    }
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429]);
    // A success clears the user's own typos: four wrong, one right, four wrong again are all checked.
    await createUser("typist");
    const typist: number[] = [];
    for (const password of [...Array(4).fill("typo"), PASSWORD, ...Array(4).fill("typo")] as string[]) {
      typist.push((await signIn("typist", password, "203.0.113.50")).statusCode);
    }
    expect(typist).toEqual([401, 401, 401, 401, 200, 401, 401, 401, 401]);
  });

  it("gives a guesser no new attempts when the user signs in while their username is being refused", async () => {
    await createUser("besieged");
    for (let index = 0; index < 5; index++) {
      expect((await signIn("besieged", `guess ${index}`, "203.0.113.60")).statusCode).toBe(401);
    }
    expect((await signIn("besieged", "guess 5", "203.0.113.60")).statusCode).toBe(429);
    // Time passes for the oldest failure only: it leaves the 15-minute window, one attempt fits again.
    const db = test.database.context.db;
    const oldest = await db
      .selectFrom("login_failures")
      .select(["id", "at"])
      .where("subject", "=", "user:besieged")
      .orderBy("at")
      .executeTakeFirstOrThrow();
    await db
      .updateTable("login_failures")
      .set({ at: new Date(Date.parse(oldest.at) - 16 * 60 * 1000).toISOString() })
      .where("id", "=", oldest.id)
      .execute();
    // The user gets in, from their own address…
    expect((await signIn("besieged", PASSWORD, "198.51.100.90")).statusCode).toBe(200);
    // …but the failures stay: the guesser, refused a minute ago, is still refused.
    expect((await signIn("besieged", "guess 6", "203.0.113.61")).statusCode).toBe(429);
  });

  it("limits wrong current passwords on POST /api/v1/users/me/password the same way, counted with sign-ins", async () => {
    await createUser("changer");
    const hashBefore = await passwordHashOf("changer");
    const session = await signIn("changer", PASSWORD, "203.0.113.80");
    expect(session.statusCode).toBe(200);
    const cookie = /ferry_session=[^;]+/.exec(String(session.headers["set-cookie"]))?.[0] ?? "";
    const headers = { cookie, "x-csrf-token": (session.json() as { csrfToken: string }).csrfToken };
    const change = (currentPassword: string) =>
      test.app.inject({
        method: "POST",
        url: "/api/v1/users/me/password",
        headers,
        payload: { currentPassword, newPassword: "a password the attacker chose" },
        remoteAddress: "203.0.113.80",
      });
    // Before: 60 wrong current passwords in 3.6 s, never a 429.
    const answers = await Promise.all(Array.from({ length: 60 }, (_, index) => change(`wrong current ${index}`)));
    expect(tally(answers.map((answer) => answer.statusCode))).toEqual({ 403: 5, 429: 55 });
    const limited = answers.find((answer) => answer.statusCode === 429);
    expect(Number(limited?.headers["retry-after"])).toBeGreaterThan(800);
    // The right current password is refused too now, and the password stays what it was.
    expect((await change(PASSWORD)).statusCode).toBe(429);
    // The same count as sign-ins: guessing through one route does not reset or double the other.
    expect((await signIn("changer", PASSWORD, "203.0.113.81")).statusCode).toBe(429);
    expect(await passwordHashOf("changer")).toBe(hashBefore);
  });

  it("finding 11: a user who may not see users gets the same answer for an existing user as for a missing one", async () => {
    const target = await createUser("existing-person");
    const viewer = await createUser("curious");
    const session = await signIn("curious", PASSWORD, "203.0.113.90");
    const cookie = /ferry_session=[^;]+/.exec(String(session.headers["set-cookie"]))?.[0] ?? "";
    const keyResponse = await test.app.inject({
      method: "POST",
      url: "/api/v1/api-keys",
      headers: { cookie, "x-csrf-token": (session.json() as { csrfToken: string }).csrfToken },
      payload: { name: "curious key" },
    });
    expect(keyResponse.statusCode, keyResponse.body).toBe(201);
    const byKey = { authorization: `Bearer ${(keyResponse.json() as { key: string }).key}` };
    const read = (reference: string, headers: Record<string, string>) =>
      test.app.inject({ url: `/api/v1/users/${reference}`, headers });

    for (const headers of [{ cookie }, byKey]) {
      // Before: 403 for existing-person, 404 for a name nobody has.
      for (const [existing, missing, otherName] of [
        ["existing-person", "missing-person", target.id],
        [target.id, "usr_00000000000000000000", "existing-person"],
      ] as const) {
        const existingAnswer = await read(existing, headers);
        const missingAnswer = await read(missing, headers);
        expect(existingAnswer.statusCode).toBe(404);
        expect(missingAnswer.statusCode).toBe(404);
        // Word for word the same, apart from the name or id the caller sent (and the request's own id).
        expect(withoutRequestId(existingAnswer.body.replace(existing, "<user>"))).toEqual(
          withoutRequestId(missingAnswer.body.replace(missing, "<user>")),
        );
        expect(existingAnswer.headers["content-type"]).toBe(missingAnswer.headers["content-type"]);
        expect(existingAnswer.body).not.toContain(otherName);
      }
      // Themself, by every name.
      for (const reference of ["me", "curious", viewer.id]) {
        const own = await read(reference, headers);
        expect(own.statusCode, own.body).toBe(200);
        expect(own.json()).toMatchObject({ id: viewer.id, username: "curious" });
      }
    }
    // An administrator still tells them apart.
    expect((await read("existing-person", test.auth)).statusCode).toBe(200);
    expect((await read("missing-person", test.auth)).statusCode).toBe(404);
  });

  it("writes password sign-ins, successful and failed, to the audit log with the username tried and the address, never the password", async () => {
    const user = await createUser("audited");
    const secretGuess = "Tr0ub4dor&3-not-it";
    expect((await signIn("audited", secretGuess, "192.0.2.77")).statusCode).toBe(401);
    expect((await signIn("no-such-person", secretGuess, "192.0.2.78")).statusCode).toBe(401);
    const success = await signIn("audited", PASSWORD, "192.0.2.79");
    expect(success.statusCode).toBe(200);

    const failed = await auditEntries("action=session.sign-in-failed");
    expect(failed.find((entry) => entry.resource.name === "audited")).toEqual(
      expect.objectContaining({
        actor: { id: null, name: "anonymous" },
        source: "192.0.2.77",
        resource: { type: "session", id: null, name: "audited" },
        diff: { method: { from: null, to: "password" } },
      }),
    );
    expect(failed.find((entry) => entry.resource.name === "no-such-person")).toMatchObject({
      source: "192.0.2.78",
      actor: { name: "anonymous" },
    });
    const signedIn = (await auditEntries("action=session.sign-in&resource=session:audited")).at(-1);
    expect(signedIn).toMatchObject({
      actor: { id: user.id, name: "audited" },
      source: "192.0.2.79",
      resource: { type: "session", name: "audited" },
      diff: { method: { from: null, to: "password" } },
    });
    expect(signedIn?.resource.id).toMatch(/^ses_/);

    // A refused (429) attempt checked nothing and writes nothing.
    const before = (await auditEntries("resource=session:locked-out")).length;
    for (let index = 0; index < 7; index++) await signIn("locked-out", secretGuess, `192.0.2.${100 + index}`);
    expect((await auditEntries("resource=session:locked-out")).length - before).toBe(5);

    const exported = await test.app.inject({ url: "/api/v1/audit/export", headers: test.auth });
    expect(exported.body).toContain("no-such-person");
    expect(exported.body).not.toContain(secretGuess);
    expect(exported.body).not.toContain(PASSWORD);
    const verified = await test.app.inject({ url: "/api/v1/audit/verify", headers: test.auth });
    expect(verified.json()).toMatchObject({ ok: true });
  });
});

/**
 * Two server nodes on one PostgreSQL database (each its own connection pool, as two
 * processes would have): the limit is one limit, kept in the database, not one per node.
 */
describe("sign-in limit shared by two nodes on one PostgreSQL database", () => {
  let database: TestDatabase;
  const nodes: FastifyInstance[] = [];
  const closers: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    database = await openTestDatabase("postgres");
    if (!database.url) throw new Error("a PostgreSQL test database has a URL");
    for (let index = 0; index < 2; index++) {
      const store =
        index === 0 ? database.store : await openStore({ dataDir: database.dataDir, databaseUrl: database.url });
      if (index > 0) closers.push(() => store.close());
      const node = await buildApp({
        store,
        context: { db: store.db, secrets: database.context.secrets },
        logger: pino({ level: "silent" }),
        version: "test",
      });
      await node.ready();
      nodes.push(node);
    }
  });

  afterAll(async () => {
    for (const node of nodes) await node.close();
    for (const close of closers) await close();
    await database?.dispose();
  });

  it("checks 5 of 100 guesses for one user spread over both nodes at once", async () => {
    const [first, second] = nodes;
    if (!first || !second) throw new Error("two nodes expected");
    const key = generateApiKey();
    await insertApiKey(database.context, key, { name: "test admin", role: "admin" });
    const created = await first.inject({
      method: "POST",
      url: "/api/v1/users",
      headers: { authorization: `Bearer ${key}` },
      payload: { username: "shared-target", password: PASSWORD },
    });
    expect(created.statusCode, created.body).toBe(201);
    const answers = await Promise.all(
      Array.from({ length: 100 }, (_, index) =>
        (index % 2 === 0 ? first : second).inject({
          method: "POST",
          url: "/api/v1/session",
          payload: { username: "shared-target", password: `wrong guess ${index}` },
          remoteAddress: `192.0.2.${index + 1}`,
        }),
      ),
    );
    expect(tally(answers.map((answer) => answer.statusCode))).toEqual({ 401: 5, 429: 95 });
    for (const node of nodes) {
      const right = await node.inject({
        method: "POST",
        url: "/api/v1/session",
        payload: { username: "shared-target", password: PASSWORD },
        remoteAddress: "192.0.2.250",
      });
      expect(right.statusCode).toBe(429);
    }
  });
});
