import { execFile } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  apiRequest,
  type CliResult,
  expectSuccess,
  type FerryServer,
  isolatedEnv,
  parseJson,
  runFerry,
  testAdminKey,
  trackedResources,
} from "./helpers/cli.js";
import { createPostgresDatabase } from "./helpers/databases.js";

/**
 * Configuration as code both ways (issue 16 part 1), end to end: the real `bin/ferry` talking
 * to a real `ferry server`, on SQLite and on PostgreSQL. `plan -f` says what `apply -f` would
 * change and changes nothing; `apply -f` is all or nothing; `export` writes a file that
 * plans to no change.
 */

const { makeTemporaryDirectory, startServerInNewHome, cleanUp } = trackedResources("ferry-config-e2e-");

afterAll(async () => {
  await cleanUp();
});

/** A test of many CLI runs one after another: on a loaded machine (two cores, shared) it takes minutes. */
const MANY_RUNS_MS = 180_000;

const DB_PASSWORD = "s3cret-db-password-value";
const ROTATED_PASSWORD = "rotated-db-password-value";

const SHOP = `
project:
  name: shop
  description: The shop
environments: [dev, test, prod]
lifecycle:
  name: shop
  phases:
    - environments: [dev]
      autoDeploy: true
    - environments: [test]
    - name: Production
      environments: [prod]
targets:
  - name: shop-web
    environments: [dev, test, prod]
    roles: [web]
    runtimes: [process]
variables:
  - name: Greeting
    value: Hello
  - name: Greeting
    value: Hello from production
    scope: { environments: [prod] }
  - name: Port
    value: "8080"
    scope: { roles: [web] }
  - name: DbPassword
    sensitive: true
    valueFrom: { env: SHOP_DB_PASSWORD }
steps:
  - name: Say hello
    kind: script
    roles: [web]
    config:
      script: echo "$GREETING"
      env: { GREETING: "#{Greeting}" }
runbooks:
  - name: Backup
    steps:
      - name: dump
        kind: script
        config: { script: echo dump }
`;

/** A second project sharing the environments (a directory of files applies together). */
const BLOG = `
project: { name: blog }
environments: [dev, test, prod]
lifecycle:
  name: blog
  phases:
    - environments: [dev, test, prod]
variables:
  - name: Title
    value: My blog
`;

/** The template file beside EVERYTHING's ferry.yml (ADR 0051). */
const APPSETTINGS = '{\n  "Logging": { "Level": "Information" },\n  "Banner": "Greeting: #{Greeting}"\n}\n';

/** A project using every step kind and every scope, a secret of each kind, and a published runbook. */
const EVERYTHING = `
project:
  name: everything
  description: Every step kind and every scope
environments:
  - every-dev
  - name: Every production
    slug: every-prod
    description: Where customers are
    unavailableTargets: skip
lifecycle:
  name: everything
  phases:
    - environments: [every-dev]
      autoDeploy: true
    - name: Live
      environments: [every-prod]
      separateApprover: true
feeds:
  - name: everything-registry
    url: http://127.0.0.1:5000
    username: ci
    passwordFrom: { env: EVERYTHING_FEED_PASSWORD }
targets:
  - name: every-web
    environments: [every-dev, every-prod]
    roles: [web]
    runtimes: [docker, process]
  - name: every-remote
    environments: [every-prod]
    roles: [web, edge]
    transport: ssh
    ssh:
      host: 127.0.0.1
      port: 2222
      user: deploy
      privateKeyFrom: { file: id_ed25519 }
images:
  - name: web
    feed: everything-registry
    repository: demo/everything
    version: { semver: "^1.0.0" }
packages:
  - name: everything-app
variables:
  - name: Greeting
    value: Hello
  - name: Greeting
    value: Hello from production
    scope: { environments: [every-prod] }
  - name: Greeting
    value: Hello web
    scope: { roles: [web] }
  - name: Greeting
    value: Hello remote
    scope: { targets: [every-remote] }
  - name: Port
    value: "8080"
    scope: { environments: [every-prod], roles: [edge] }
  - name: ApiToken
    sensitive: true
    valueFrom: { env: EVERYTHING_API_TOKEN }
    scope: { environments: [every-prod] }
versionPattern: "2.#{n}.0"
steps:
  - name: Migrate
    kind: script
    excludeEnvironments: [every-dev]
    condition: { variable: "Greeting" }
    config:
      script: echo "$GREETING"
      env: { GREETING: "#{Greeting}" }
    files:
      - file: config/appsettings.json
        path: /srv/everything/#{Ferry.Environment.Slug}/appsettings.json
        replace: { "Logging:Level": "#{Greeting}" }
  - name: Run web
    kind: container
    roles: [web]
    rolling: { window: 50%, pauseSeconds: 5 }
    config:
      image: "#{Ferry.Image[web]}"
      strategy: blueGreen
      route: { host: "#{Ferry.Environment.Slug}.everything.test", port: 8080 }
      blueGreen: { healthCheck: { path: /health }, bakeSeconds: 2 }
  - name: Unpack
    kind: package
    roles: [web]
    config: { package: everything-app }
    files:
      - { file: settings.yml, package: everything-app, substitute: false, replace: { services.web.port: "#{Port}" } }
  - name: Worker
    kind: process
    roles: [web]
    config:
      command: node
      args: [worker.js]
      env: { PORT_HINT: "#{Port}" }
  - name: Healthy
    kind: health-check
    config:
      url: http://127.0.0.1:8080/health
      deadlineSeconds: 30
  - name: Smoke
    kind: http-test
    required: false
    config:
      url: http://127.0.0.1:8080/
      assertions: { status: 200 }
  - name: Sign off
    kind: approval
    environments: [every-prod]
    config: { instructions: "Check #{Ferry.Environment.Name}" }
  - name: Tag latest
    kind: registry-retag
    environments: [every-prod]
    config: { image: "#{Ferry.Image[web]}", tags: ["#{Ferry.Release.Number}", latest] }
  - name: Functional
    kind: isolated
    environments: [every-dev]
    config:
      limits: { cpus: 0.5, memoryMb: 128, pids: 64 }
      services:
        - { name: web, image: "#{Ferry.Image[web]}", port: 8080, healthCheck: { path: /health } }
      steps:
        - name: suite
          kind: run-container
          config: { image: "#{Ferry.Image[web]}", command: [/bin/true], env: { BASE_URL: "#{Ferry.Isolated.Service[web].InternalUrl}" } }
  - name: Shop app
    kind: compose
    environments: [every-dev]
    config:
      compose:
        services:
          cache:
            image: "#{Ferry.Image[web]}"
            environment: { MODE: "#{Ferry.Environment.Slug}" }
  - name: Shop app from a file
    kind: compose
    environments: [every-prod]
    files: [{ file: docker-compose.yml }]
    config: { composeFile: docker-compose.yml }
runbooks:
  - name: Restart
    environments: [every-prod]
    parameters:
      - { name: Reason, type: string }
      - { name: Token, type: string, sensitive: true, required: false }
    steps:
      - name: restart
        kind: script
        config: { script: echo restart }
      - name: down
        kind: compose-down
        config: { stopTimeoutSeconds: 5 }
      - name: logs
        kind: collect-logs
        config: { since: 12h }
      - name: backup
        kind: postgres-backup
        config: { database: shop, user: backup, password: "#{DbPassword}" }
      - name: dump
        kind: mysql-backup
        config: { database: shop, user: backup }
      - name: verify
        kind: restore-verify
        config:
          engine: postgres
          file: "#{Ferry.Step[backup].Output.file}"
          sha256: "#{Ferry.Step[backup].Output.sha256}"
          database: shop
          user: backup
      - name: bounce
        kind: restart
        config: { drainSeconds: 10 }
      - name: migrate
        kind: exec
        config: { command: [./migrate, --check] }
    publish: true
    schedules:
      - name: nightly
        environment: every-prod
        cron: "0 3 * * *"
        timeZone: Europe/Berlin
        parameters: { Reason: nightly }
        parametersFrom: { Token: { env: EVERYTHING_RUNBOOK_TOKEN } }
        missed: runOnce
      - name: weekly
        environment: every-prod
        cron: "0 4 * * 0"
        parameters: { Reason: weekly }
        paused: true
    retention:
      - { environment: every-prod, keepRuns: 30 }
      - { keepDays: 90 }
    artifactRetention:
      - { keepRuns: 5, keepDays: 7 }
webhooks:
  - url: http://127.0.0.1:9/hooks/everything/path-is-a-credential
    events: [deployment.failed, deployment.succeeded]
    secretFrom: { env: EVERYTHING_WEBHOOK_SECRET }
teams:
  - team: everything-ops
    role: deployer
    environments: [every-prod]
  - team: everything-ops
    role: viewer
  - team: everything-devs
    role: project-editor
`;

interface Change {
  file: string;
  action: string;
  resource: string;
  name: string;
  fields?: { field: string; from?: unknown; to?: unknown; sensitive?: true }[];
}

const changed = (changes: readonly Change[]) => changes.filter((change) => change.action !== "unchanged");

// The two dialects run side by side (each its own server, home and database); the tests of
// one still run in order (it.sequential), as README "Development" describes. Each test runs
// several `ferry` commands (~1 s of CPU each): 2 minutes each, for a machine under load.
describe.each(["sqlite", "postgres"] as const)(
  "ferry plan / apply -f on %s",
  { concurrent: true, timeout: 120_000 },
  (dialect) => {
    const adminKey = testAdminKey();
    let server: FerryServer;
    let home: string;
    let directory: string;
    let dropDatabase: (() => Promise<void>) | undefined;

    const ferry = (args: string[], extra: Record<string, string> = {}): Promise<CliResult> =>
      runFerry(
        args,
        isolatedEnv(home, { FERRY_URL: server.url, FERRY_API_KEY: adminKey, SHOP_DB_PASSWORD: DB_PASSWORD, ...extra }),
        { timeoutMs: 30_000 },
      );
    const total = async (path: string) => {
      const response = await apiRequest(`${server.url}${path}`, adminKey);
      return ((await response.json()) as { total: number }).total;
    };
    const write = async (name: string, text: string) => {
      const path = join(directory, name);
      await writeFile(path, text);
      return path;
    };

    beforeAll(async () => {
      let extraArgs: string[] = [];
      if (dialect === "postgres") {
        const database = await createPostgresDatabase();
        dropDatabase = database.drop;
        extraArgs = ["--db", database.url];
      }
      ({ home, server } = await startServerInNewHome(adminKey, extraArgs));
      directory = await makeTemporaryDirectory();
    });
    afterAll(async () => {
      await server?.stop();
      await dropDatabase?.();
    });

    it.sequential("plans creating everything and changes nothing on the server", async () => {
      const file = await write("ferry.yml", SHOP);
      const result = await ferry(["plan", "-f", file]);
      expectSuccess(result);
      expect(result.stdout).toContain("+ create environment dev\n");
      expect(result.stdout).toContain("+ create variable DbPassword (sensitive, from $SHOP_DB_PASSWORD)\n");
      expect(result.stdout).toContain("+ create runbook backup\n");
      expect(result.stdout).toMatch(/Plan: 12 to create, 0 to update, 0 to delete, 0 unchanged\.\n$/);
      expect(result.stdout + result.stderr).not.toContain(DB_PASSWORD);
      // A plan is an apply rolled back: nothing stays.
      expect(await total("/api/v1/environments")).toBe(0);
      expect(await total("/api/v1/projects")).toBe(0);
      expect(await total("/api/v1/targets")).toBe(0);
    });

    it.sequential(
      "applies, and then plans no change (idempotent)",
      async () => {
        const file = join(directory, "ferry.yml");
        expectSuccess(await ferry(["apply", "-f", file]));
        expect(await total("/api/v1/projects")).toBe(1);

        const again = await ferry(["plan", "-f", file]);
        expectSuccess(again);
        expect(again.stdout).toBe("No changes: the server matches the file (12 unchanged).\n");
        const json = parseJson<Change[]>(await ferry(["plan", "-f", file, "--json"]));
        expect(changed(json)).toEqual([]);
        expect(json.length).toBe(12);
      },
      MANY_RUNS_MS,
    );

    it.sequential(
      "plans exactly the one variable edited, field by field, and a rotated secret only as changed",
      async () => {
        const file = await write("edited.yml", SHOP.replace("value: Hello from production", "value: Welcome to prod"));
        const plan = parseJson<Change[]>(
          await ferry(["plan", "-f", file, "--json", "--update-secrets"], { SHOP_DB_PASSWORD: ROTATED_PASSWORD }),
        );
        expect(changed(plan).map(({ action, resource, name, fields }) => ({ action, resource, name, fields }))).toEqual(
          [
            {
              action: "updated",
              resource: "variable",
              name: "Greeting [environments prod]",
              fields: [{ field: "value", from: "Hello from production", to: "Welcome to prod" }],
            },
            {
              action: "updated",
              resource: "variable",
              name: "DbPassword",
              fields: [{ field: "value", sensitive: true }],
            },
          ],
        );
        const text = await ferry(["plan", "-f", file, "--update-secrets"], { SHOP_DB_PASSWORD: ROTATED_PASSWORD });
        expectSuccess(text);
        expect(text.stdout).toContain(
          '~ update variable Greeting [environments prod] (value)\n    value: "Hello from production" → "Welcome to prod"\n',
        );
        expect(text.stdout).toContain("    value: changed (sensitive, not shown)\n");
        expect(text.stdout + text.stderr).not.toContain(ROTATED_PASSWORD);
        expect(text.stdout + text.stderr).not.toContain(DB_PASSWORD);
      },
      MANY_RUNS_MS,
    );

    it.sequential("applies nothing at all when a later object of the file is refused", async () => {
      const before = await (await apiRequest(`${server.url}/api/v1/projects/shop/variables`, adminKey)).json();
      // Valid as a file; the 3rd object (after the new environment and the variable change) is
      // a feed whose address the server refuses (a metadata address).
      const file = await write(
        "refused.yml",
        SHOP.replace("environments: [dev, test, prod]\n", "environments: [dev, test, prod, qa]\n")
          .replace("value: Hello from production", "value: Changed but undone")
          .replace("targets:\n", "feeds:\n  - name: metadata\n    url: http://169.254.169.254/\ntargets:\n"),
      );
      const result = await ferry(["apply", "-f", file]);
      expect(result.code, result.stderr).toBe(1);
      expect(result.stderr).toContain("could not apply feed metadata");
      expect(result.stderr).toContain("nothing was changed: the apply is all or nothing");
      expect(await total("/api/v1/environments")).toBe(3); // qa, created before the feed, was undone
      expect(await total("/api/v1/feeds")).toBe(0);
      expect(await (await apiRequest(`${server.url}/api/v1/projects/shop/variables`, adminKey)).json()).toEqual(before);
    });

    it.sequential(
      "applies nothing at all when the file's last object is refused",
      async () => {
        const variablesBefore = await (
          await apiRequest(`${server.url}/api/v1/projects/shop/variables`, adminKey)
        ).json();
        const runbooksBefore = await (await apiRequest(`${server.url}/api/v1/projects/shop/runbooks`, adminKey)).json();
        // Everything before the last object is valid and changes the server (a new environment, a
        // variable, a runbook, a webhook, a team and its grant); the last one, a grant of a role
        // that does not exist, is refused by the server after all of them were written.
        const file = await write(
          "last-refused.yml",
          `${SHOP.replace("environments: [dev, test, prod]\n", "environments: [dev, test, prod, staging]\n")
            .replace("value: Hello from production", "value: Changed but undone")
            .replace("      - name: dump\n", "      - name: dump-changed\n")}webhooks:
  - url: http://127.0.0.1:9/hooks/shop
    secretFrom: { env: SHOP_WEBHOOK_SECRET }
teams:
  - team: shop-ops
    role: deployer
    environments: [staging]
  - team: shop-support
    role: no-such-role
`,
        );
        // The plan is the same apply rolled back: it says so too.
        const plan = await ferry(["plan", "-f", file], { SHOP_WEBHOOK_SECRET: "shop-webhook-secret-value" });
        expect(plan.code, plan.stderr).toBe(1);
        expect(plan.stderr).toContain("no-such-role");
        const result = await ferry(["apply", "-f", file], { SHOP_WEBHOOK_SECRET: "shop-webhook-secret-value" });
        expect(result.code, result.stderr).toBe(1);
        expect(result.stderr).toContain("could not apply team grants on shop");
        expect(result.stderr).toContain("no-such-role");
        expect(result.stderr).toContain("nothing was changed: the apply is all or nothing");
        expect(result.stdout + result.stderr).not.toContain("shop-webhook-secret-value");
        expect(await total("/api/v1/environments")).toBe(3); // staging was undone
        expect(await total("/api/v1/projects/shop/webhooks")).toBe(0);
        expect(await total("/api/v1/teams")).toBe(0); // shop-ops, created before the refusal, was undone
        expect(await (await apiRequest(`${server.url}/api/v1/projects/shop/variables`, adminKey)).json()).toEqual(
          variablesBefore,
        );
        expect(await (await apiRequest(`${server.url}/api/v1/projects/shop/runbooks`, adminKey)).json()).toEqual(
          runbooksBefore,
        );
      },
      MANY_RUNS_MS,
    );

    it.sequential(
      "applies several files (a directory) together, or none of them when one conflicts",
      async () => {
        const projects = join(directory, "projects");
        await mkdir(projects);
        await writeFile(join(projects, "a-shop.yml"), SHOP);
        await writeFile(join(projects, "b-blog.yml"), BLOG);
        const plan = parseJson<Change[]>(await ferry(["plan", "-f", projects, "--json"]));
        expect(
          changed(plan).map((change) => `${change.file}: ${change.action} ${change.resource} ${change.name}`),
        ).toEqual([
          `${join(projects, "b-blog.yml")}: created lifecycle blog`,
          `${join(projects, "b-blog.yml")}: created project blog`,
          `${join(projects, "b-blog.yml")}: created variable Title`,
        ]);

        // A third file whose project takes a name another project has: the whole apply is refused.
        await writeFile(
          join(projects, "c-clash.yml"),
          BLOG.replace("project: { name: blog }", "project: { name: shop, slug: shop-two }").replaceAll(
            "blog",
            "clash",
          ),
        );
        const refused = await ferry(["apply", "-f", projects]);
        expect(refused.code, refused.stderr).toBe(1);
        expect(refused.stderr).toContain("nothing was changed");
        expect(await total("/api/v1/projects")).toBe(1);
        expect(await total("/api/v1/lifecycles")).toBe(1);

        // Two files that describe a shared environment differently contradict each other.
        const contradicting = await write(
          "blog-contradicting.yml",
          BLOG.replace(
            "environments: [dev, test, prod]",
            "environments: [dev, test, { name: Production, slug: prod }]",
          ),
        );
        const contradiction = await ferry(["apply", "-f", join(projects, "a-shop.yml"), "-f", contradicting]);
        expect(contradiction.code, contradiction.stderr).toBe(1);
        expect(contradiction.stderr).toContain(
          `the files contradict each other: applied after the others, ${join(projects, "a-shop.yml")} would change environment prod (name) back`,
        );
        expect(await total("/api/v1/projects")).toBe(1);

        await ferry(["apply", "-f", join(projects, "a-shop.yml"), "-f", join(projects, "b-blog.yml")]).then(
          expectSuccess,
        );
        expect(await total("/api/v1/projects")).toBe(2);
      },
      MANY_RUNS_MS,
    );

    it.sequential(
      "exports a project using every step kind and scope as a file that plans to no change",
      async () => {
        const everything = join(directory, "everything");
        await mkdir(everything);
        await promisify(execFile)("ssh-keygen", [
          "-q",
          "-t",
          "ed25519",
          "-N",
          "",
          "-f",
          join(everything, "id_ed25519"),
        ]);
        await writeFile(join(everything, "ferry.yml"), EVERYTHING);
        await mkdir(join(everything, "config"));
        await writeFile(join(everything, "config", "appsettings.json"), APPSETTINGS);
        await writeFile(
          join(everything, "docker-compose.yml"),
          'services:\n  cache:\n    image: "#{Ferry.Image[web]}"\n    environment: { MODE: "#{Ferry.Environment.Slug}" }\n',
        );
        const secrets = {
          EVERYTHING_FEED_PASSWORD: "feed-password-1",
          EVERYTHING_API_TOKEN: "api-token-1",
          EVERYTHING_RUNBOOK_TOKEN: "runbook-token-1",
          EVERYTHING_WEBHOOK_SECRET: "webhook-signing-secret-1",
        };
        // A team with a grant of its own (every project): apply manages only the grants on this project alone.
        const team = await apiRequest(`${server.url}/api/v1/teams`, adminKey, "POST", {
          name: "everything-ops",
          roles: [{ role: "viewer" }],
        });
        expect(team.status, await team.text()).toBe(201);
        const applied = await ferry(["apply", "-f", join(everything, "ferry.yml")], secrets);
        expectSuccess(applied);
        expect(applied.stderr).toBe("");
        const ops = (await (await apiRequest(`${server.url}/api/v1/teams/everything-ops`, adminKey)).json()) as {
          roles: unknown[];
        };
        expect(ops.roles).toEqual(
          expect.arrayContaining([
            { role: "viewer", projects: null, environments: null },
            { role: "deployer", projects: ["everything"], environments: ["every-prod"] },
            { role: "viewer", projects: ["everything"], environments: null },
          ]),
        );
        expect(ops.roles).toHaveLength(3);
        const hooks = (await (
          await apiRequest(`${server.url}/api/v1/projects/everything/webhooks`, adminKey)
        ).json()) as {
          items: { url: string; events: string[] }[];
        };
        expect(hooks.items.map(({ url, events }) => ({ url, events: [...events].sort() }))).toEqual([
          {
            url: "http://127.0.0.1:9/hooks/everything/path-is-a-credential",
            events: ["deployment.failed", "deployment.succeeded"],
          },
        ]);
        // The plan and apply name a webhook by its URL's origin: its path may be a credential.
        expect(applied.stdout).not.toContain("path-is-a-credential");
        // Every step kind the server knows (its refusal of an unknown one lists them) is in the file.
        const unknownKind = await apiRequest(`${server.url}/api/v1/projects/everything/process`, adminKey, "PUT", {
          steps: [{ name: "x", kind: "no-such-kind", config: {} }],
        });
        const kinds = /use one of: ([a-z, -]+)/.exec(await unknownKind.text())?.[1]?.split(", ") ?? [];
        expect(kinds.length).toBeGreaterThan(5);
        for (const kind of kinds) expect(EVERYTHING, `step kind ${kind}`).toContain(`kind: ${kind}\n`);

        const exported = join(directory, "exported.yml");
        expectSuccess(await ferry(["export", "--project", "everything", "-o", exported]));
        const text = await readFile(exported, "utf8");
        // Secrets as references, never values (the key file's content is not in it either).
        expect(text).toContain("valueFrom:\n      env: FERRY_SECRET_APITOKEN\n");
        expect(text).toContain("passwordFrom:\n      env: FERRY_SECRET_FEED_EVERYTHING_REGISTRY_PASSWORD\n");
        expect(text).toContain("privateKeyFrom:\n        env: FERRY_SECRET_TARGET_EVERY_REMOTE_PRIVATE_KEY\n");
        // Schedules (a sensitive parameter as a reference), run and artifact retention (ADR 0043).
        expect(text).toContain(
          "parametersFrom:\n          Token:\n            env: FERRY_SECRET_SCHEDULE_RESTART_NIGHTLY_TOKEN\n",
        );
        expect(text).toContain("cron: 0 4 * * 0\n");
        // Webhooks (the signing secret as a reference) and the teams' grants on this project alone (ADR 0070).
        expect(text).toContain(
          "webhooks:\n  - url: http://127.0.0.1:9/hooks/everything/path-is-a-credential\n    events:\n      - deployment.failed\n      - deployment.succeeded\n    secretFrom:\n      env: FERRY_SECRET_WEBHOOK_127_0_0_1_9_SECRET\n",
        );
        expect(text).toContain(
          "teams:\n  - team: everything-devs\n    role: project-editor\n  - team: everything-ops\n    role: deployer\n    environments:\n      - every-prod\n  - team: everything-ops\n    role: viewer\n",
        );
        expect(text).toContain(
          'artifactRetention:\n      - environment: "*"\n        keepRuns: 5\n        keepDays: 7\n',
        );
        for (const secret of Object.values(secrets)) expect(text).not.toContain(secret);
        expect(text).not.toContain("PRIVATE KEY-----");
        // A template file beside ferry.yml was captured at apply: it comes back as its text (ADR 0051).
        expect(text).toContain("file: config/appsettings.json\n");
        expect(text).toContain('"Greeting: #{Greeting}"');

        // Round trip: without any secret in the environment, the stored ones are kept.
        const plan = await ferry(["plan", "-f", exported]);
        expectSuccess(plan);
        expect(plan.stdout).toMatch(/^No changes: the server matches the file \(\d+ unchanged\)\.\n$/);

        // One value edited: exactly that one change.
        await writeFile(exported, text.replace("value: Hello remote", "value: Hi remote"));
        const edited = parseJson<Change[]>(await ferry(["plan", "-f", exported, "--json"]));
        expect(
          changed(edited).map(({ action, resource, name, fields }) => ({ action, resource, name, fields })),
        ).toEqual([
          {
            action: "updated",
            resource: "variable",
            name: "Greeting [targets every-remote]",
            fields: [{ field: "value", from: "Hello remote", to: "Hi remote" }],
          },
        ]);

        // A webhook's events and a team's grant edited: exactly those, and the stored signing secret is kept.
        const grantsEdited = text
          .replace("      - deployment.failed\n      - deployment.succeeded\n", "      - deployment.failed\n")
          .replace(
            "    role: deployer\n    environments:\n      - every-prod\n",
            "    role: release-manager\n    environments:\n      - every-prod\n",
          );
        await writeFile(exported, grantsEdited);
        const grantsPlan = parseJson<Change[]>(await ferry(["plan", "-f", exported, "--json"]));
        expect(
          changed(grantsPlan).map(({ action, resource, name, fields }) => ({ action, resource, name, fields })),
        ).toEqual([
          {
            action: "updated",
            resource: "webhook",
            name: "http://127.0.0.1:9/…",
            fields: [
              { field: "events", from: ["deployment.failed", "deployment.succeeded"], to: ["deployment.failed"] },
            ],
          },
          {
            action: "updated",
            resource: "team",
            name: "everything-ops",
            fields: [
              {
                field: "grants[everything]",
                from: ["deployer [environments every-prod]", "viewer"],
                to: ["release-manager [environments every-prod]", "viewer"],
              },
            ],
          },
        ]);

        // A schedule's time and the artifacts' limit edited: those two changes, and the stored
        // sensitive parameter is kept (its variable is not set, and the parameters did not change).
        const operations = text
          .replace("cron: 0 3 * * *\n", "cron: 30 2 * * *\n")
          .replace("keepRuns: 5\n", "keepRuns: 8\n");
        await writeFile(exported, operations);
        const applied2 = parseJson<Change[]>(await ferry(["apply", "-f", exported, "--json"]));
        expect(
          changed(applied2).map(({ action, resource, name, fields }) => ({ action, resource, name, fields })),
        ).toEqual([
          {
            action: "updated",
            resource: "schedule",
            name: "restart/nightly",
            fields: [{ field: "cron", from: "0 3 * * *", to: "30 2 * * *" }],
          },
          {
            action: "updated",
            resource: "artifact-retention",
            name: "restart",
            fields: [{ field: "*.keepRuns", from: 5, to: 8 }],
          },
        ]);
        const schedules = (await (
          await apiRequest(`${server.url}/api/v1/projects/everything/runbooks/restart/schedules`, adminKey)
        ).json()) as { name: string; cron: string; parameters: Record<string, unknown>; paused: boolean }[];
        expect(schedules.map(({ name, cron, parameters, paused }) => ({ name, cron, parameters, paused }))).toEqual([
          { name: "nightly", cron: "30 2 * * *", parameters: { Reason: "nightly", Token: "********" }, paused: false },
          { name: "weekly", cron: "0 4 * * 0", parameters: { Reason: "weekly" }, paused: true },
        ]);
        const replan = await ferry(["plan", "-f", exported]);
        expect(replan.stdout).toMatch(/^No changes: the server matches the file \(\d+ unchanged\)\.\n$/);

        // The template beside the original ferry.yml edited: the process changes at the next
        // plan, in that step's files only (releases made before keep their own).
        await writeFile(join(everything, "config", "appsettings.json"), APPSETTINGS.replace("Greeting:", "Hello:"));
        const templateEdited = parseJson<Change[]>(
          await ferry(["plan", "-f", join(everything, "ferry.yml"), "--json"]),
        );
        // (The schedule and retention edited through the exported file above show as changes back too.)
        expect(
          changed(templateEdited)
            .filter(({ resource }) => resource !== "schedule" && resource !== "artifact-retention")
            .map(({ resource, fields }) => ({ resource, fields: fields?.map((f) => f.field) })),
        ).toEqual([{ resource: "process", fields: ["steps[Migrate].files"] }]);

        // A template file that is not there is refused naming it, and nothing is applied.
        await rm(join(everything, "docker-compose.yml"));
        const missing = await ferry(["apply", "-f", join(everything, "ferry.yml")]);
        expect(missing.code).toBe(1);
        expect(missing.stderr).toContain("cannot read template file docker-compose.yml beside the ferry.yml");
      },
      MANY_RUNS_MS,
    );

    it.sequential("tells a file plan from a deployment plan, and refuses a mix of the two", async () => {
      const file = join(directory, "ferry.yml");
      const mixed = await ferry(["plan", "-f", file, "--project", "shop"]);
      expect(mixed.code).toBe(2);
      expect(mixed.stderr).toContain(
        "plan -f plans applying files; --project plan a deployment: give one or the other",
      );
      const neither = await ferry(["plan", "--project", "shop"]);
      expect(neither.code).toBe(2);
      expect(neither.stderr).toContain("required: --release, --env (to plan a deployment), or -f ferry.yml");
      const prune = await ferry(["plan", "--project", "shop", "--release", "1", "--env", "dev", "--prune"]);
      expect(prune.code).toBe(2);
      expect(prune.stderr).toContain("--prune only goes with -f ferry.yml");
    });

    it.sequential("deletes the runbooks a file does not list only with --prune", async () => {
      const file = await write("no-runbooks.yml", SHOP.slice(0, SHOP.indexOf("runbooks:")));
      const without = parseJson<Change[]>(await ferry(["apply", "-f", file, "--json"]));
      expect(changed(without)).toEqual([]);
      const pruned = parseJson<Change[]>(await ferry(["apply", "-f", file, "--prune", "--json"]));
      expect(changed(pruned).map((change) => `${change.action} ${change.resource} ${change.name}`)).toEqual([
        "deleted runbook backup",
      ]);
      const runbooks = await (await apiRequest(`${server.url}/api/v1/projects/shop/runbooks`, adminKey)).json();
      expect(runbooks).toEqual([]);
    });
  },
);
