import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "./helpers/app.js";
import { dialects } from "./helpers/databases.js";
import { type RawResponse, raw } from "./helpers/rawHttp.js";
import { startTestServer, startTestServerOn, type TestServer } from "./helpers/server.js";

/**
 * Issue 5, RBAC matrix: a user whose only team grants the Administrator role (every
 * permission) limited to project "alpha" and environment "dev" calls every route of the
 * OpenAPI document for project "bravo" and for environment "prodzone". Every call answers
 * 403 or 404; the lists answer only with what lies inside alpha × dev; following the log of
 * a bravo task (SSE) is refused before any stream opens. Real server, real engine, real HTTP,
 * on SQLite and PostgreSQL (the lists are filtered in SQL).
 */

/** A request with the exact target, a bearer key and a JSON body (test/helpers/rawHttp.ts). */
function call(baseUrl: string, method: string, target: string, key: string, body?: unknown): Promise<RawResponse> {
  return raw(
    baseUrl,
    method,
    target,
    { authorization: `Bearer ${key}` },
    body === undefined ? undefined : JSON.stringify(body),
  );
}

/**
 * A valid body for every state-changing route, aimed at bravo / prodzone / what only
 * administrators change. A route added without an entry here fails the test: decide what
 * the scoped user sends to it.
 */
/** A ferry.yml that changes project bravo in prodzone. */
const BRAVO_FILE = [
  "project: { name: bravo }",
  "environments: [prodzone]",
  "lifecycle: { name: standard, phases: [{ environments: [prodzone] }] }",
  "variables: [{ name: Sneaky, value: x }]",
  "",
].join("\n");

const BODIES: Record<string, unknown> = {
  "POST /api/v1/admin/master-key/rotate": undefined,
  "POST /api/v1/environments": { name: "sneaky" },
  "PATCH /api/v1/environments/{environment}": { description: "changed" },
  "DELETE /api/v1/environments/{environment}": undefined,
  "POST /api/v1/lifecycles": { name: "sneaky", phases: [{ environments: ["dev"] }] },
  "PATCH /api/v1/lifecycles/{lifecycle}": { description: "changed" },
  "DELETE /api/v1/lifecycles/{lifecycle}": undefined,
  "POST /api/v1/projects": { name: "sneaky", lifecycle: "standard" },
  "PATCH /api/v1/projects/{project}": { description: "changed" },
  "DELETE /api/v1/projects/{project}": undefined,
  "POST /api/v1/targets": { name: "sneaky", environments: ["dev"] },
  "PATCH /api/v1/targets/{target}": { roles: ["web"] },
  "DELETE /api/v1/targets/{target}": undefined,
  "POST /api/v1/targets/{target}/trust": {},
  // An enrolment token would let the scoped user join a host of theirs to any environment.
  "POST /api/v1/agent-tokens": { expiresInMinutes: 60 },
  "DELETE /api/v1/agent-tokens/{token}": undefined,
  "POST /api/v1/targets/{target}/agent/rotate": undefined,
  "POST /api/v1/targets/{target}/agent/revoke": undefined,
  // A route's maintenance or pause on a target's router is an administrator's (ADR 0071).
  "PUT /api/v1/targets/{target}/routes/{route}/mode": { mode: "maintenance" },
  "DELETE /api/v1/targets/{target}/routes/{route}/mode": undefined,
  "POST /api/v1/feeds": { name: "sneaky", url: "http://127.0.0.1:5000" },
  "PATCH /api/v1/feeds/{feed}": { name: "changed" },
  "DELETE /api/v1/feeds/{feed}": undefined,
  "POST /api/v1/projects/{project}/variables": { name: "Sneaky", value: "x" },
  "PATCH /api/v1/projects/{project}/variables/{variable}": { value: "changed" },
  "DELETE /api/v1/projects/{project}/variables/{variable}": undefined,
  // Variable sets reach every project that includes them: editVariableSets everywhere (ADR 0047).
  "POST /api/v1/variable-sets": { name: "sneaky" },
  "PATCH /api/v1/variable-sets/{set}": { description: "changed" },
  "DELETE /api/v1/variable-sets/{set}": undefined,
  "POST /api/v1/variable-sets/{set}/variables": { name: "Sneaky", value: "x" },
  "PATCH /api/v1/variable-sets/{set}/variables/{variable}": { value: "changed" },
  "DELETE /api/v1/variable-sets/{set}/variables/{variable}": undefined,
  "PUT /api/v1/projects/{project}/variable-sets": { sets: [] },
  "PUT /api/v1/projects/{project}/process": {
    steps: [{ name: "hello", kind: "script", config: { script: "echo changed" } }],
  },
  "POST /api/v1/projects/{project}/releases": { version: "9.9.9" },
  // ferry.yml applied (or planned) on the server: each change it makes is the caller's own request.
  "POST /api/v1/config/plan": { files: [{ name: "ferry.yml", text: BRAVO_FILE }] },
  "POST /api/v1/config/apply": { files: [{ name: "ferry.yml", text: BRAVO_FILE }] },
  "POST /api/v1/projects/{project}/releases/{release}/variables-snapshot": undefined,
  "POST /api/v1/projects/{project}/deployments": { release: "1.0.0", environment: "dev" },
  "POST /api/v1/projects/{project}/promotions": { to: "dev" },
  "POST /api/v1/projects/{project}/rollbacks": { environment: "dev" },
  "POST /api/v1/projects/{project}/runbooks": { name: "sneaky" },
  "PATCH /api/v1/projects/{project}/runbooks/{runbook}": { description: "changed" },
  "DELETE /api/v1/projects/{project}/runbooks/{runbook}": undefined,
  "POST /api/v1/projects/{project}/runbooks/{runbook}/publish": undefined,
  "POST /api/v1/projects/{project}/runbooks/{runbook}/runs": { environment: "dev" },
  // Retention decides which of bravo's run artifacts are deleted (editRunbooks).
  "PUT /api/v1/projects/{project}/runbooks/{runbook}/artifact-retention": {
    policies: [{ environment: "*", keepRuns: 1 }],
  },
  "POST /api/v1/projects/{project}/runbooks/{runbook}/schedules": {
    name: "sneaky",
    environment: "dev",
    cron: "* * * * *",
  },
  "PATCH /api/v1/projects/{project}/runbooks/{runbook}/schedules/{schedule}": { cron: "* * * * *" },
  "DELETE /api/v1/projects/{project}/runbooks/{runbook}/schedules/{schedule}": undefined,
  "POST /api/v1/projects/{project}/runbooks/{runbook}/schedules/{schedule}/pause": undefined,
  "POST /api/v1/projects/{project}/runbooks/{runbook}/schedules/{schedule}/resume": undefined,
  "PUT /api/v1/projects/{project}/runbooks/{runbook}/retention": { policies: [] },
  // A freeze on bravo would stop its deployments: refused like any other change to bravo.
  "POST /api/v1/projects/{project}/freezes": {
    name: "sneaky",
    environments: ["dev"],
    window: { kind: "once", from: "2026-01-01T00:00:00Z", until: "2099-01-01T00:00:00Z" },
  },
  "DELETE /api/v1/projects/{project}/freezes/{freeze}": undefined,
  "POST /api/v1/tasks/{task}/cancel": undefined,
  "POST /api/v1/tasks/{task}/decisions": { decision: "approve" },
  "POST /api/v1/projects/{project}/webhooks": { url: "http://127.0.0.1:9/sneaky", secret: "sneaky-webhook-secret" },
  "PATCH /api/v1/projects/{project}/webhooks/{webhook}": { url: "http://127.0.0.1:9/changed" },
  "DELETE /api/v1/projects/{project}/webhooks/{webhook}": undefined,
  "POST /api/v1/projects/{project}/triggers": { name: "sneaky", image: "web", secret: "sneaky-trigger-secret-1" },
  "PATCH /api/v1/projects/{project}/triggers/{trigger}": { paused: true },
  "DELETE /api/v1/projects/{project}/triggers/{trigger}": undefined,
  "POST /api/v1/projects/{project}/scheduled-triggers": {
    name: "sneaky",
    cron: "0 2 * * *",
    from: "dev",
    to: "prodzone",
  },
  "PATCH /api/v1/projects/{project}/scheduled-triggers/{trigger}": { paused: true },
  "DELETE /api/v1/projects/{project}/scheduled-triggers/{trigger}": undefined,
  "POST /api/v1/users": { username: "sneaky", password: "a-long-sneaky-password" },
  "PATCH /api/v1/users/{user}": { isAdmin: false },
  "DELETE /api/v1/users/{user}": undefined,
  // Linking the administrator to the caller's own identity at the provider would be a takeover.
  "PUT /api/v1/users/{user}/oidc": { subject: "devon-at-the-provider" },
  "DELETE /api/v1/users/{user}/oidc": undefined,
  "POST /api/v1/users/me/password": { currentPassword: "not-the-password", newPassword: "another-long-password" },
  "DELETE /api/v1/session": undefined,
  // A key for the administrator would be their rights in the scoped user's hands.
  "POST /api/v1/api-keys": { name: "sneaky", user: "root" },
  "DELETE /api/v1/api-keys/{key}": undefined,
  "POST /api/v1/roles": { name: "Sneaky", permissions: ["administer"] },
  "PATCH /api/v1/roles/{role}": { permissions: ["administer"] },
  "DELETE /api/v1/roles/{role}": undefined,
  "POST /api/v1/teams": { name: "Sneaky", members: ["devon"], roles: [{ role: "administrator" }] },
  // Widening their own team to every project and environment.
  "PATCH /api/v1/teams/{team}": { roles: [{ role: "administrator" }] },
  "DELETE /api/v1/teams/{team}": undefined,
  // Packages are shared by every project: pushing or deleting one needs pushPackages everywhere (ADR 0044).
  "PUT /api/v1/packages/{package}/versions/{version}": undefined,
  "DELETE /api/v1/packages/{package}/versions/{version}": undefined,
};

/** Shared configuration any signed-in caller reads (ADR 0020); it names environments by slug. */
const SHARED_READS = new Set([
  "GET /api/v1/lifecycles",
  "GET /api/v1/lifecycles/{lifecycle}",
  "GET /api/v1/feeds",
  "GET /api/v1/feeds/{feed}",
  // The package feed, shared by every project like feeds (ADR 0044).
  "GET /api/v1/packages",
  "GET /api/v1/packages/{package}/versions",
  "GET /api/v1/packages/{package}/versions/{version}",
  "GET /api/v1/packages/{package}/versions/{version}/content",
  // Variable sets name no project; their sensitive values read as "set" (ADR 0047).
  "GET /api/v1/variable-sets",
  "GET /api/v1/variable-sets/{set}",
  "GET /api/v1/variable-sets/{set}/variables",
  "GET /api/v1/openapi.json",
  "GET /api/v1/schema/ferry.json",
]);

/** Lists that answer 200 with what the caller may see. */
const FILTERED_LISTS = new Set([
  "GET /api/v1/projects",
  "GET /api/v1/environments",
  "GET /api/v1/targets",
  "GET /api/v1/tasks",
  "GET /api/v1/dashboard",
  // The dashboard's live stream (issue 13): the active tasks the caller may view, filtered in SQL.
  "GET /api/v1/dashboard/events",
  "GET /api/v1/dora",
  "GET /api/v1/api-keys",
]);

const PUBLIC = new Set([
  // ferry agent's enrolment: the one-time token is the credential.
  "POST /api/v1/agent/enrol",
  // A registry's notification: the feed trigger's secret (Authorization: Bearer) is the credential.
  "POST /api/v1/hooks/registry/{trigger}",
  "GET /healthz",
  "GET /readyz",
  "POST /api/v1/session",
  // Which sign-in methods the server offers (the web sign-in page asks it signed out).
  "GET /api/v1/session/methods",
  "GET /api/v1/session/oidc/start",
  "GET /api/v1/session/oidc/callback",
]);

describe.each(dialects)("RBAC matrix on %s: a user scoped to project alpha / environment dev", (dialect) => {
  let test: TestServer;
  let devonKey = "";
  const ids: Record<string, string> = {};
  let operations: Array<{ method: string; template: string }> = [];

  const admin = async (method: string, path: string, body?: unknown) => {
    const response = await test.call(method, path, body);
    expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
    return response.body as Record<string, unknown>;
  };
  const asDevon = (method: string, path: string, body?: unknown) => call(test.server.url, method, path, devonKey, body);
  const deploy = async (project: string, environment: string) => {
    const created = await admin("POST", `/api/v1/projects/${project}/deployments`, { release: "1.0.0", environment });
    const taskId = String(created.taskId);
    expect((await test.waitForTask(taskId)).state).toBe("succeeded");
    return taskId;
  };

  /**
   * Everything of bravo and of prodzone, which must never show up in devon's answers, other
   * than what the request itself named (a 404 repeats the name asked for, as it does for a
   * name that does not exist).
   */
  const leaksIn = (response: RawResponse, request: string) =>
    forbiddenTokens().filter((token) => token && response.body.includes(token) && !request.includes(token));
  const forbiddenTokens = () => [
    "bravo",
    "ProdOnly",
    ids.bravo,
    ids.prodzone,
    ids.bravoTask,
    ids.alphaProdTask,
    ids.bravoRelease,
    ids.bravoVariable,
    ids.bravoWebhook,
    ids.prodTarget,
  ];

  beforeAll(async () => {
    test = await startTestServerOn(dialect);
    for (const name of ["dev", "test", "prodzone"])
      ids[name] = String((await admin("POST", "/api/v1/environments", { name })).id);
    await admin("POST", "/api/v1/lifecycles", {
      name: "standard",
      phases: [{ environments: ["dev", "test", "prodzone"] }],
    });
    await admin("POST", "/api/v1/feeds", { name: "registry", url: "http://127.0.0.1:5000" });
    ids.prodTarget = String(
      (await admin("POST", "/api/v1/targets", { name: "prod-box", environments: ["prodzone"] })).id,
    );
    await admin("POST", "/api/v1/targets", { name: "dev-box", environments: ["dev"] });
    for (const project of ["alpha", "bravo"]) {
      ids[project] = String((await admin("POST", "/api/v1/projects", { name: project, lifecycle: "standard" })).id);
      await admin("PUT", `/api/v1/projects/${project}/process`, {
        steps: [
          {
            name: "hello",
            kind: "script",
            // Each deployment attaches a file: a bravo artifact is one more thing devon must not reach.
            config: {
              script: `echo hello from ${project}; echo hi > h.txt; echo "##ferry[artifact path='h.txt' name='hello.txt']"`,
            },
          },
        ],
      });
      const release = await admin("POST", `/api/v1/projects/${project}/releases`, { version: "1.0.0" });
      ids[`${project}Release`] = String(release.id);
    }
    ids.alphaDevTask = await deploy("alpha", "dev");
    ids.alphaProdTask = await deploy("alpha", "prodzone");
    ids.bravoTask = await deploy("bravo", "dev");
    ids.bravoArtifact = String(
      ((await admin("GET", `/api/v1/tasks/${ids.bravoTask}/artifacts`)) as unknown as { id: string }[])[0]?.id,
    );
    expect(ids.bravoArtifact).toMatch(/^art_/);
    // A package version (a real .tar.gz) that the scoped user may read but neither replace nor delete.
    const packageSource = mkdtempSync(join(tmpdir(), "ferry-rbac-package-"));
    writeFileSync(join(packageSource, "app.txt"), "shared\n");
    const pushed = await fetch(new URL("/api/v1/packages/shared-app/versions/1.0.0", test.server.url), {
      method: "PUT",
      headers: { authorization: `Bearer ${test.apiKey}`, "content-type": "application/octet-stream" },
      body: execFileSync("tar", ["-cz", "-C", packageSource, "app.txt"]),
    });
    rmSync(packageSource, { recursive: true, force: true });
    expect(pushed.status, await pushed.clone().text()).toBe(201);
    await admin("POST", "/api/v1/projects/alpha/variables", { name: "Greeting", value: "hello" });
    await admin("POST", "/api/v1/projects/alpha/variables", {
      name: "ProdOnly",
      value: "prod-value",
      scope: { environments: ["prodzone"] },
    });
    await admin("POST", "/api/v1/projects/alpha/variables", {
      name: "DevSecret",
      value: "dev-secret-value",
      sensitive: true,
      scope: { environments: ["dev"] },
    });
    ids.bravoVariable = String(
      (await admin("POST", "/api/v1/projects/bravo/variables", { name: "Bv", value: "b" })).id,
    );
    await admin("POST", "/api/v1/variable-sets", { name: "shared" });
    await admin("POST", "/api/v1/variable-sets/shared/variables", {
      name: "SetSecret",
      value: "set-secret-value",
      sensitive: true,
    });
    await admin("PUT", "/api/v1/projects/bravo/variable-sets", { sets: ["shared"] });
    ids.bravoWebhook = String(
      (
        await admin("POST", "/api/v1/projects/bravo/webhooks", {
          url: "http://127.0.0.1:9/b",
          secret: "bravo-webhook-secret-1",
        })
      ).id,
    );

    await admin("POST", "/api/v1/projects/bravo/runbooks", {
      name: "bravo ops",
      process: { steps: [{ name: "hello", kind: "script", config: { script: "echo ops" } }] },
    });
    await admin("POST", "/api/v1/projects/bravo/runbooks/bravo-ops/schedules", {
      name: "bravo-nightly",
      environment: "test",
      cron: "0 3 * * *",
      paused: true,
    });
    await admin("POST", "/api/v1/projects/bravo/freezes", {
      name: "bravo-freeze",
      environments: ["test"],
      window: { kind: "once", from: "2026-01-01T00:00:00Z", until: "2026-01-02T00:00:00Z" },
    });

    ids.root = String(
      (await admin("POST", "/api/v1/users", { username: "root", password: "root-long-password", isAdmin: true })).id,
    );
    ids.rootKey = String((await admin("POST", "/api/v1/api-keys", { name: "root key", user: "root" })).id);
    await admin("POST", "/api/v1/users", { username: "devon", password: "devon-long-password" });
    await admin("POST", "/api/v1/teams", {
      name: "alpha devs",
      members: ["devon"],
      roles: [{ role: "administrator", projects: ["alpha"], environments: ["dev"] }],
    });
    devonKey = String((await admin("POST", "/api/v1/api-keys", { name: "devon cli", user: "devon" })).key);

    const document = await test.call<{ paths: Record<string, Record<string, unknown>> }>("GET", "/api/v1/openapi.json");
    operations = Object.entries(document.body.paths).flatMap(([template, methods]) =>
      Object.keys(methods).map((method) => ({ method: method.toUpperCase(), template })),
    );
  }, 90_000);

  afterAll(async () => {
    await test?.close();
  });

  it("can do its own work: sees alpha, deploys it to dev, reads its dev task and variables", async () => {
    const projects = JSON.parse((await asDevon("GET", "/api/v1/projects")).body) as { items: { slug: string }[] };
    expect(projects.items.map((project) => project.slug)).toEqual(["alpha"]);
    const environments = JSON.parse((await asDevon("GET", "/api/v1/environments")).body) as {
      items: { slug: string }[];
    };
    expect(environments.items.map((environment) => environment.slug)).toEqual(["dev"]);
    expect((await asDevon("GET", "/api/v1/environments/dev")).status).toBe(200);
    expect((await asDevon("GET", "/api/v1/projects/alpha")).status).toBe(200);
    expect((await asDevon("GET", "/api/v1/targets/dev-box")).status).toBe(200);

    const deployed = await asDevon("POST", "/api/v1/projects/alpha/deployments", {
      release: "1.0.0",
      environment: "dev",
    });
    expect(deployed.status, deployed.body).toBe(201);
    const taskId = String((JSON.parse(deployed.body) as { taskId: string }).taskId);
    expect((await test.waitForTask(taskId)).state).toBe("succeeded");
    const log = await asDevon("GET", `/api/v1/tasks/${taskId}/log`);
    expect(log.status).toBe(200);
    expect(log.body).toContain("hello from alpha");

    const variables = JSON.parse((await asDevon("GET", "/api/v1/projects/alpha/variables")).body) as {
      items: { name: string }[];
      total: number;
    };
    expect(variables.items.map((variable) => variable.name).sort()).toEqual(["DevSecret", "Greeting"]);
    expect(variables.total).toBe(2);
    const created = await asDevon("POST", "/api/v1/projects/alpha/variables", {
      name: "DevOnly",
      value: "x",
      scope: { environments: ["dev"] },
    });
    expect(created.status, created.body).toBe(201);
  });

  it("answers 403 or 404 to every route for project bravo and environment prodzone", async () => {
    const fill: Record<string, string> = {
      project: "bravo",
      environment: "prodzone",
      task: ids.bravoTask ?? "",
      release: "1.0.0",
      variable: ids.bravoVariable ?? "",
      webhook: ids.bravoWebhook ?? "",
      user: ids.root ?? "",
      key: ids.rootKey ?? "",
      role: "deployer",
      team: "alpha-devs",
      lifecycle: "standard",
      feed: "registry",
      target: "prod-box",
      runbook: "bravo-ops",
      freeze: "bravo-freeze",
      schedule: "bravo-nightly",
      trigger: "bravo-trigger",
      artifact: ids.bravoArtifact ?? "",
      package: "shared-app",
      version: "1.0.0",
      set: "shared",
    };
    const answers: string[] = [];
    for (const { method, template } of operations) {
      const operation = `${method} ${template}`;
      if (PUBLIC.has(operation)) continue;
      const path = template.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(fill[name] ?? name));
      if (method !== "GET") expect(Object.keys(BODIES), `add a body for ${operation}`).toContain(operation);
      const response = await asDevon(method, path, BODIES[operation]);
      answers.push(`${operation} → ${response.status}`);
      const leaks = leaksIn(response, `${path} ${JSON.stringify(BODIES[operation] ?? null)}`);
      if (SHARED_READS.has(operation) || FILTERED_LISTS.has(operation)) {
        expect(response.status, `${operation}: ${response.body.slice(0, 300)}`).toBe(200);
        expect(leaks, `${operation} shows ${leaks.join(", ")}`).toEqual([]);
        continue;
      }
      expect([403, 404], `${operation} → ${response.status} ${response.body.slice(0, 300)}`).toContain(response.status);
      expect(leaks, `${operation} problem shows ${leaks.join(", ")}`).toEqual([]);
    }
    // The matrix really covered the API (and not a handful of routes).
    expect(answers.length, answers.join("\n")).toBeGreaterThan(60);

    // Nothing was changed by any of it.
    const team = await admin("GET", "/api/v1/teams/alpha-devs");
    expect(team.roles).toEqual([{ role: "administrator", projects: ["alpha"], environments: ["dev"] }]);
    expect((await admin("GET", "/api/v1/projects/bravo")).description).toBe("");
    expect((await test.call("GET", "/api/v1/users/sneaky")).status).toBe(404);
    expect((await test.call("GET", "/api/v1/packages/shared-app/versions/1.0.0")).status).toBe(200);
  });

  it("refuses alpha's prodzone too: deploy, promote, roll back, plan, its task, its variables", async () => {
    const refused: Array<[string, string, unknown?]> = [
      ["POST", "/api/v1/projects/alpha/deployments", { release: "1.0.0", environment: "prodzone" }],
      ["POST", "/api/v1/projects/alpha/promotions", { to: "prodzone" }],
      ["POST", "/api/v1/projects/alpha/rollbacks", { environment: "prodzone" }],
      ["GET", "/api/v1/projects/alpha/plan?release=1.0.0&environment=prodzone"],
      ["GET", "/api/v1/dashboard?environment=prodzone"],
      ["GET", "/api/v1/dora?project=alpha&environment=prodzone"],
      ["GET", `/api/v1/tasks/${ids.alphaProdTask}`],
      ["GET", `/api/v1/tasks/${ids.alphaProdTask}/log`],
      ["GET", `/api/v1/tasks/${ids.alphaProdTask}/decisions`],
      ["POST", `/api/v1/tasks/${ids.alphaProdTask}/cancel`],
      ["GET", "/api/v1/projects/alpha/variables/ProdOnly"],
      ["PATCH", "/api/v1/projects/alpha/variables/ProdOnly", { value: "changed" }],
      ["DELETE", "/api/v1/projects/alpha/variables/ProdOnly"],
      // Including a set changes the project's variables in every environment, prodzone too.
      ["PUT", "/api/v1/projects/alpha/variable-sets", { sets: ["shared"] }],
      // Creating a prod-scoped variable, or changing one that applies everywhere (prod too).
      [
        "POST",
        "/api/v1/projects/alpha/variables",
        { name: "Sneaky", value: "x", scope: { environments: ["prodzone"] } },
      ],
      ["PATCH", "/api/v1/projects/alpha/variables/Greeting", { value: "changed" }],
      ["POST", "/api/v1/projects/alpha/releases/1.0.0/variables-snapshot"],
      // A bind mount is root on the host: administrators only, whatever the project role.
      [
        "PUT",
        "/api/v1/projects/alpha/process",
        {
          steps: [
            {
              name: "web",
              kind: "container",
              config: { image: "127.0.0.1:5000/shop:1.0.0", volumes: [{ source: "/etc", target: "/host-etc" }] },
            },
          ],
        },
      ],
    ];
    for (const [method, path, body] of refused) {
      const response = await asDevon(method, path, body);
      expect([403, 404], `${method} ${path} → ${response.status} ${response.body.slice(0, 300)}`).toContain(
        response.status,
      );
      const leaks = leaksIn(response, `${path} ${JSON.stringify(body ?? null)}`);
      expect(leaks, `${method} ${path} shows ${leaks.join(", ")}`).toEqual([]);
    }
    expect((await admin("GET", "/api/v1/projects/alpha/variables/ProdOnly")).value).toBe("prod-value");
    expect((await admin("GET", "/api/v1/projects/alpha/variables/Greeting")).value).toBe("hello");
  });

  it("refuses to stream the log of a bravo task or a prodzone task (SSE), before any stream opens", async () => {
    for (const taskId of [ids.bravoTask, ids.alphaProdTask]) {
      const response = await asDevon("GET", `/api/v1/tasks/${taskId}/log?follow=1`);
      expect(response.status).toBe(404);
      expect(String(response.headers["content-type"] ?? "")).toMatch(/^application\/problem\+json/);
      expect(response.body).not.toContain("hello from");
    }
    // Their own dev task streams (the control: the refusal is about scope, not about SSE).
    const own = await asDevon("GET", `/api/v1/tasks/${ids.alphaDevTask}/log?follow=1`);
    expect(own.status).toBe(200);
    expect(String(own.headers["content-type"] ?? "")).toMatch(/^text\/event-stream/);
    expect(own.body).toContain("hello from alpha");
  });

  it("lists only alpha × dev: tasks, dashboard, DORA, targets", async () => {
    const tasks = JSON.parse((await asDevon("GET", "/api/v1/tasks?limit=500")).body) as {
      items: { id: string }[];
      total: number;
    };
    expect(tasks.items.map((task) => task.id)).toContain(ids.alphaDevTask);
    expect(tasks.items.map((task) => task.id)).not.toContain(ids.alphaProdTask);
    expect(tasks.total).toBe(tasks.items.length);
    const succeeded = JSON.parse((await asDevon("GET", "/api/v1/tasks?state=succeeded")).body) as { total: number };
    expect(succeeded.total).toBe(tasks.total);

    const dashboard = JSON.parse((await asDevon("GET", "/api/v1/dashboard")).body) as {
      environments: { slug: string }[];
      items: { project: { slug: string }; environments: { environment: string }[] }[];
    };
    expect(dashboard.environments.map((environment) => environment.slug)).toEqual(["dev"]);
    expect(dashboard.items.map((row) => [row.project.slug, row.environments.map((cell) => cell.environment)])).toEqual([
      ["alpha", ["dev"]],
    ]);

    const targets = JSON.parse((await asDevon("GET", "/api/v1/targets")).body) as { items: { slug: string }[] };
    expect(targets.items.map((target) => target.slug)).toEqual(["dev-box"]);
  });
});

describe.each(dialects)("teams and roles API on %s", (dialect) => {
  let test: TestApp;

  beforeAll(async () => {
    test = await startTestApp(dialect);
    await test.app.inject({
      method: "POST",
      url: "/api/v1/environments",
      headers: test.auth,
      payload: { name: "dev" },
    });
    await test.app.inject({
      method: "POST",
      url: "/api/v1/users",
      headers: test.auth,
      payload: { username: "ana", password: "ana-long-password" },
    });
  });

  afterAll(async () => {
    await test?.close();
  });

  const call = (method: "GET" | "POST" | "PATCH" | "DELETE", url: string, payload?: object) =>
    test.app.inject({ method, url, headers: test.auth, ...(payload && { payload }) });

  it("names the field of an unknown permission, user, role, project or environment", async () => {
    const role = await call("POST", "/api/v1/roles", { name: "Odd", permissions: ["view", "fly"] });
    expect(role.statusCode).toBe(400);
    expect(role.json().errors[0].pointer).toBe("/permissions/1");

    const team = await call("POST", "/api/v1/teams", {
      name: "Team",
      members: ["ana", "nobody"],
      roles: [{ role: "nothing", projects: ["nowhere"], environments: ["dev", "moon"] }],
    });
    expect(team.statusCode).toBe(400);
    expect(
      team
        .json()
        .errors.map((issue: { pointer: string }) => issue.pointer)
        .sort(),
    ).toEqual(["/members/1", "/roles/0/environments/1", "/roles/0/projects/0", "/roles/0/role"]);
    // Nothing was half-created.
    expect((await call("GET", "/api/v1/teams")).json().total).toBe(0);
  });

  it("keeps built-in roles, refuses to delete a role a team holds, and shows scopes by slug", async () => {
    for (const response of [
      await call("PATCH", "/api/v1/roles/viewer", { permissions: ["administer"] }),
      await call("DELETE", "/api/v1/roles/administrator"),
    ]) {
      expect(response.statusCode).toBe(409);
      expect(response.json().detail).toContain("built-in role");
    }
    expect((await call("GET", "/api/v1/roles/viewer")).json().permissions).toEqual(["view"]);
    const role = await call("POST", "/api/v1/roles", { name: "Approver", permissions: ["view", "approve"] });
    expect(role.statusCode, role.body).toBe(201);
    const team = await call("POST", "/api/v1/teams", {
      name: "Approvers",
      members: ["ana"],
      roles: [{ role: "approver", environments: ["dev"] }],
    });
    expect(team.statusCode, team.body).toBe(201);
    expect(team.json()).toMatchObject({
      slug: "approvers",
      members: ["ana"],
      roles: [{ role: "approver", projects: null, environments: ["dev"] }],
    });
    const refused = await call("DELETE", "/api/v1/roles/approver");
    expect(refused.statusCode).toBe(409);
    expect(refused.body).toContain("approvers");
    expect((await call("PATCH", "/api/v1/teams/approvers", { roles: [] })).statusCode).toBe(200);
    expect((await call("DELETE", "/api/v1/roles/approver")).statusCode).toBe(204);
  });
});

/**
 * The issue's example: developers deploy to dev and test, release managers approve and
 * deploy to prod. Built-in roles, real engine: a production deployment waits for approval,
 * which a developer may see but not give.
 */
describe("roles at work: developers deploy to dev and test, release managers approve prod", () => {
  let test: TestServer;
  const keys: Record<string, string> = {};

  const as = async (who: string, method: string, path: string, body?: unknown) => {
    const response = await call(test.server.url, method, path, keys[who] ?? "", body);
    return {
      status: response.status,
      body: response.body ? (JSON.parse(response.body) as Record<string, unknown>) : {},
    };
  };

  beforeAll(async () => {
    test = await startTestServer();
    const admin = async (method: string, path: string, body?: unknown) => {
      const response = await test.call(method, path, body);
      expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
      return response.body;
    };
    for (const name of ["dev", "test", "prod"]) await admin("POST", "/api/v1/environments", { name });
    await admin("POST", "/api/v1/lifecycles", {
      name: "any order",
      phases: [{ environments: ["dev", "test", "prod"] }],
    });
    await admin("POST", "/api/v1/projects", { name: "shop", lifecycle: "any-order" });
    await admin("PUT", "/api/v1/projects/shop/process", {
      steps: [
        { name: "sign-off", kind: "approval", config: { instructions: "check the shop" }, environments: ["prod"] },
        { name: "deploy", kind: "script", config: { script: "echo deployed" } },
      ],
    });
    await admin("POST", "/api/v1/projects/shop/releases", { version: "1.0.0" });
    for (const username of ["dana", "rita", "vic"]) {
      await admin("POST", "/api/v1/users", { username, password: `${username}-long-password` });
      keys[username] = String((await admin("POST", "/api/v1/api-keys", { name: "key", user: username })).key);
    }
    await admin("POST", "/api/v1/teams", {
      name: "Developers",
      members: ["dana"],
      roles: [{ role: "deployer", environments: ["dev", "test"] }, { role: "viewer" }],
    });
    await admin("POST", "/api/v1/teams", {
      name: "Release managers",
      members: ["rita"],
      roles: [{ role: "release-manager" }],
    });
    await admin("POST", "/api/v1/teams", { name: "Auditors", members: ["vic"], roles: [{ role: "viewer" }] });
  }, 60_000);

  afterAll(async () => {
    await test?.close();
  });

  it("lets each do their part and nothing more", async () => {
    for (const environment of ["dev", "test"]) {
      const deployed = await as("dana", "POST", "/api/v1/projects/shop/deployments", { release: "1.0.0", environment });
      expect(deployed.status, JSON.stringify(deployed.body)).toBe(201);
      expect((await test.waitForTask(String(deployed.body.taskId))).state).toBe("succeeded");
    }
    // Dana sees prod (viewer everywhere) but may not deploy there: 403, not 404.
    const refused = await as("dana", "POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "prod",
    });
    expect(refused.status).toBe(403);
    expect(String(refused.body.detail)).toContain("'deploy'");
    expect(
      (await as("vic", "POST", "/api/v1/projects/shop/deployments", { release: "1.0.0", environment: "dev" })).status,
    ).toBe(403);

    const prod = await as("rita", "POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "prod",
    });
    expect(prod.status, JSON.stringify(prod.body)).toBe(201);
    const taskId = String(prod.body.taskId);
    for (;;) {
      const task = await as("dana", "GET", `/api/v1/tasks/${taskId}`);
      expect(task.status).toBe(200);
      if (task.body.state === "waiting") break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // A developer and an auditor may see the question, not answer it; the release manager may.
    for (const who of ["dana", "vic"]) {
      const answer = await as(who, "POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "approve" });
      expect(answer.status, who).toBe(403);
      expect(String(answer.body.detail)).toContain("'approve'");
    }
    expect((await as("vic", "POST", `/api/v1/tasks/${taskId}/cancel`)).status).toBe(403);
    const approved = await as("rita", "POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "approve" });
    expect(approved.status, JSON.stringify(approved.body)).toBe(200);
    expect((await test.waitForTask(taskId)).state).toBe("succeeded");

    // Changing the process needs editProcess, which none of these roles has.
    const process = await as("rita", "PUT", "/api/v1/projects/shop/process", {
      steps: [{ name: "deploy", kind: "script", config: { script: "echo changed" } }],
    });
    expect(process.status).toBe(403);
    expect(String(process.body.detail)).toContain("'editProcess'");
  });
});
