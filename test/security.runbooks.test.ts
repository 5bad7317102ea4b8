import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConflictError } from "../src/domain/errors.js";
import { createRunbookSchema } from "../src/domain/runbooks.js";
import { findNamed } from "../src/store/common.js";
import { createEnvironment } from "../src/store/environments.js";
import { createLifecycle } from "../src/store/lifecycles.js";
import { createProject } from "../src/store/projects.js";
import {
  createRunbook,
  deleteRunbook,
  getRunbook,
  getRunbookRow,
  publishRunbook,
  updateRunbook,
} from "../src/store/runbooks.js";
import { dialects, openTestDatabase, type TestDatabase } from "./helpers/databases.js";
import { slowestHealthCheckWhile } from "./helpers/healthProbe.js";
import { startTestServerOn, type TestServer } from "./helpers/server.js";

/**
 * Issue 11 for runbooks, attacked against a real server (real engine, real HTTP; SQLite and
 * PostgreSQL side by side, each on its own server and database):
 *
 * - finding 2 for `editRunbooks`: a person who may edit runbooks of dev only creates or changes
 *   a runbook that can run in prod (or, having no environments, in every one of them);
 * - finding 5 for runbook parameters: a parameter's `pattern` is a user-supplied regular
 *   expression every run's value is checked against; `^(a+)+$` against "aaa…a!" would hold
 *   the event loop for as long as JavaScript's backtracking takes.
 */

interface Problem {
  detail: string;
  errors?: { pointer: string; detail: string }[];
}

describe.each(dialects)("runbook security on %s", { concurrent: true }, (dialect) => {
  let test: TestServer;
  let eddieKey = "";

  const admin = async (method: string, path: string, body?: unknown) => {
    const response = await test.call(method, path, body);
    expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
    return response.body;
  };
  const eddie = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${test.server.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${eddieKey}`,
        ...(body !== undefined && { "content-type": "application/json" }),
      },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    return {
      status: response.status,
      body: (text === "" ? {} : JSON.parse(text)) as Problem & Record<string, unknown>,
    };
  };
  const runbooks = "/api/v1/projects/shop/runbooks";

  beforeAll(async () => {
    test = await startTestServerOn(dialect);
    for (const name of ["dev", "prod"]) await admin("POST", "/api/v1/environments", { name });
    await admin("POST", "/api/v1/lifecycles", {
      name: "standard",
      phases: [{ environments: ["dev"] }, { environments: ["prod"] }],
    });
    await admin("POST", "/api/v1/projects", { name: "shop", lifecycle: "standard" });
    await admin("POST", "/api/v1/users", { username: "eddie", password: "eddie-long-password" });
    eddieKey = String((await admin("POST", "/api/v1/api-keys", { name: "eddie cli", user: "eddie" })).key);
    await admin("POST", "/api/v1/teams", {
      name: "dev editors",
      members: ["eddie"],
      roles: [{ role: "project-editor", environments: ["dev"] }],
    });
  });
  afterAll(async () => {
    await test?.close();
  });

  it.sequential("editRunbooks on dev alone never creates a runbook that can run in prod or everywhere", async () => {
    const prodStep = { name: "exfiltrate", kind: "script", config: { script: 'echo "$SECRET" | rev > /tmp/stolen' } };
    const create = (environments: string[]) =>
      eddie("POST", runbooks, {
        name: `sneaky ${environments.join(" ")}`,
        environments,
        process: { steps: [prodStep] },
      });

    const everywhere = await create([]);
    expect(everywhere.status).toBe(403);
    expect(everywhere.body.detail).toContain("every environment");
    expect(everywhere.body.detail).toContain("'editRunbooks'");
    for (const environments of [["prod"], ["dev", "prod"]]) {
      const refused = await create(environments);
      expect(refused.status).toBe(403);
      expect(refused.body.detail).toContain("'prod'");
    }
    // An environment that does not exist yet could be created (or renamed to) later.
    const planted = await create(["production"]);
    expect(planted.status).toBe(403);
    expect(planted.body.detail).toContain("does not exist yet");
    const listed = (await admin("GET", runbooks)) as unknown as { slug: string }[];
    expect(listed).toEqual([]);

    // A dev-only runbook is theirs to create, change, publish and delete.
    const created = await create(["dev"]);
    expect(created.status).toBe(201);
    const slug = String(created.body.slug);
    expect((await eddie("PATCH", `${runbooks}/${slug}`, { description: "seeds dev" })).status).toBe(200);
    expect((await eddie("POST", `${runbooks}/${slug}/publish`)).status).toBe(200);
    // Widening it to prod, or to every environment, is a change in prod.
    for (const environments of [["dev", "prod"], []]) {
      const widened = await eddie("PATCH", `${runbooks}/${slug}`, { environments });
      expect(widened.status).toBe(403);
    }
    expect(((await admin("GET", `${runbooks}/${slug}`)) as { environments: string[] }).environments).toEqual(["dev"]);
    expect((await eddie("DELETE", `${runbooks}/${slug}`)).status).toBe(204);
  });

  it.sequential("editRunbooks on dev alone changes nothing of a runbook that runs in prod", async () => {
    for (const [name, environments] of [
      ["prod backup", ["prod"]],
      ["restart", []],
    ] as const) {
      const runbook = (await admin("POST", runbooks, {
        name,
        environments,
        process: { steps: [{ name: "work", kind: "script", config: { script: "echo working" } }] },
      })) as { slug: string };
      const path = `${runbooks}/${runbook.slug}`;
      await admin("POST", `${path}/publish`);
      const before = await admin("GET", path);
      const attempts = [
        eddie("PATCH", path, {
          process: { steps: [{ name: "work", kind: "script", config: { script: "cat /etc/shadow" } }] },
        }),
        // Narrowing a prod runbook to dev is a change in prod too: its next publish would take it from prod.
        eddie("PATCH", path, { environments: ["dev"] }),
        eddie("POST", `${path}/publish`),
        eddie("PUT", `${path}/artifact-retention`, { policies: [] }),
        eddie("PUT", `${path}/retention`, { policies: [] }),
        eddie("DELETE", path),
      ];
      for (const attempt of await Promise.all(attempts)) {
        expect(attempt.status, JSON.stringify(attempt.body)).toBe(403);
        expect(attempt.body.detail).toContain("'editRunbooks'");
      }
      expect(await admin("GET", path)).toEqual(before);
    }
  });

  it.sequential("refuses a parameter pattern RE2 cannot run when the runbook is saved, naming the field", async () => {
    const refused = await test.call<Problem>("POST", runbooks, {
      name: "patterns",
      environments: ["dev"],
      parameters: [
        { name: "Lookahead", pattern: "\\d+(?=-alpine)" },
        { name: "Backreference", pattern: "(ab)\\1" },
        { name: "Huge", pattern: ".{0,1000}".repeat(10) },
        { name: "Escape", pattern: "a)|(b" },
      ],
    });
    expect(refused.status).toBe(400);
    const issues = refused.body.errors ?? [];
    expect(issues.map((issue) => issue.pointer)).toEqual([
      "/parameters/0/pattern",
      "/parameters/1/pattern",
      "/parameters/2/pattern",
      "/parameters/3/pattern",
    ]);
    expect(issues[0]?.detail).toMatch(/^lookahead and lookbehind/);
    expect(issues[1]?.detail).toMatch(/^backreferences such as \\1/);
    expect(issues[2]?.detail).toMatch(/^the pattern is too large/);
  });

  it.sequential("checks ^(a+)+$ against 8,191 a's and a '!' at once, and /healthz answers meanwhile", async () => {
    await admin("POST", runbooks, {
      name: "nested",
      environments: ["dev"],
      parameters: [{ name: "Word", pattern: "^(a+)+$" }],
    });
    await admin("POST", `${runbooks}/nested/publish`);
    const started = performance.now();
    const { result: refused, slowestMs } = await slowestHealthCheckWhile(
      test.server.url,
      test.call<Problem>("POST", `${runbooks}/nested/runs`, {
        environment: "dev",
        parameters: { Word: `${"a".repeat(8191)}!` },
      }),
    );
    expect(refused.status).toBe(400);
    expect(refused.body.errors).toEqual([
      { pointer: "/parameters/Word", detail: expect.stringMatching(/ does not match the pattern \^\(a\+\)\+\$$/) },
    ]);
    // JavaScript's RegExp would still be backtracking (2^8191 ways); RE2 answers in milliseconds.
    expect(performance.now() - started).toBeLessThan(5_000);
    // A liveness bound, as in security.dos.test.ts; the figure itself is the attack-flood benchmark's.
    expect(slowestMs).toBeLessThan(2_000);
  });

  it.sequential("checks 50 values against a pattern slow even for RE2 off the event loop, within 2 s", async () => {
    const parameters = Array.from({ length: 50 }, (_, index) => ({
      name: `P${index}`,
      pattern: "[ab]*(?:[ab]{0,900})b",
    }));
    await admin("POST", runbooks, { name: "costly", environments: ["dev"], parameters });
    await admin("POST", `${runbooks}/costly/publish`);
    // Every thread of the 1,800-instruction program stays alive to the last character: some
    // 50 ms a value on a quiet machine, so 2.5 s or more for the 50 of them.
    const value = `${"ab".repeat(4095)}c`;
    const started = performance.now();
    const { result: refused, slowestMs } = await slowestHealthCheckWhile(
      test.server.url,
      test.call<Problem>("POST", `${runbooks}/costly/runs`, {
        environment: "dev",
        parameters: Object.fromEntries(parameters.map((parameter) => [parameter.name, value])),
      }),
    );
    expect(refused.status).toBe(400);
    const issues = refused.body.errors ?? [];
    expect(issues.map((issue) => issue.pointer)).toEqual(
      parameters.map((parameter) => `/parameters/${parameter.name}`),
    );
    for (const issue of issues) {
      expect(issue.detail).toMatch(
        /(does not match the pattern|could not be checked against the pattern \[ab\]\*\(\?:\[ab\]\{0,900\}\)b within 2 s: simplify the pattern)/,
      );
    }
    // 2 s of checking, plus compiling the pattern once and the worker's start on a busy machine.
    expect(performance.now() - started).toBeLessThan(8_000);
    expect(slowestMs).toBeLessThan(2_000);
  });
});

/**
 * The scope check reads a runbook, then the change writes it: an administrator who widens
 * the runbook to prod in between must not have that overwritten (or published, or deleted)
 * by a change a dev-only editor was allowed on the runbook as it was. The store functions
 * the routes call, with the version the check read, on SQLite and PostgreSQL.
 */
describe.each(dialects)("a runbook change decided on an old version (store on %s)", (dialect) => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await openTestDatabase(dialect);
    for (const name of ["dev", "prod"]) await createEnvironment(database.context, { name, description: "" });
    await createLifecycle(database.context, {
      name: "standard",
      description: "",
      phases: [{ environments: ["dev", "prod"], autoDeploy: false, optional: false }],
    });
    await createProject(database.context, { name: "shop", description: "", lifecycle: "standard" });
  });
  afterAll(async () => {
    await database?.dispose();
  });

  it("is refused with 409 for change, publish and delete, and the newer version stays", async () => {
    const checked = await createRunbook(
      database.context,
      "shop",
      createRunbookSchema.parse({ name: "seed", environments: ["dev"] }),
      "eddie",
    );
    // An administrator widens it after the editor's check read it…
    await sleep(5);
    await updateRunbook(database.context, "shop", "seed", { environments: [] }, "admin");
    // …so what the editor was allowed on the old version is refused.
    const expected = { expectedUpdatedAt: checked.updatedAt };
    await expect(
      updateRunbook(database.context, "shop", "seed", { description: "mine" }, "eddie", expected),
    ).rejects.toThrow(ConflictError);
    // The draft it would pin is the current one: only the version check can refuse it.
    const project = await findNamed(database.context.db, "projects", "shop");
    const { draft } = await getRunbookRow(database.context.db, project.id, "seed");
    const pins = { images: [], packages: {}, pinnedDraft: draft };
    await expect(publishRunbook(database.context, "shop", "seed", "eddie", pins, expected)).rejects.toThrow(
      ConflictError,
    );
    await expect(deleteRunbook(database.context, "shop", "seed", expected)).rejects.toThrow(ConflictError);
    const now = await getRunbook(database.context, "shop", "seed");
    expect(now).toMatchObject({ environments: [], description: "", published: null });
    // Decided on the version as it is now, the same change goes through.
    await updateRunbook(database.context, "shop", "seed", { description: "mine" }, "admin", {
      expectedUpdatedAt: now.updatedAt,
    });
  });
});
