import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { addApplyCommand } from "../src/cli/apply.js";
import { ApiClient } from "../src/cli/client.js";
import { type AppliedChange, applyFerryFile, describeChange } from "../src/config/apply.js";
import { exportProject } from "../src/config/export.js";
import { ferryFileJsonSchema, parseFerryFile } from "../src/config/ferryFile.js";
import { InputError } from "../src/domain/errors.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/**
 * End to end: ferry.yml applied through the real REST API of a real server (SQLite data
 * directory of its own), then read back through the API.
 */

const FERRY_YML = `
project:
  name: hello
  description: The hello-world app
environments: [dev, test, prod]
lifecycle:
  name: hello
  phases:
    - environments: [dev]
      autoDeploy: true
    - environments: [test]
    - name: Production
      environments: [prod]
feeds:
  - name: local
    url: http://127.0.0.1:5000
    username: ci
    passwordFrom: { env: FEED_PASSWORD }
targets:
  - name: web-1
    environments: [dev, test, prod]
    roles: [web]
    runtimes: [process]
images:
  - name: web
    feed: local
    repository: demo/app
    version: { semver: ">=1.0.0" }
variables:
  - name: Greeting
    value: Hello
  - name: Greeting
    value: Hello from production
    scope: { environments: [prod] }
  - name: DbPassword
    sensitive: true
    valueFrom: { env: HELLO_DB_PASSWORD }
versionPattern: "1.0.#{n}"
steps:
  - name: Say hello
    kind: script
    roles: [web]
    config:
      script: echo "$GREETING"
      env: { GREETING: "#{Greeting}" }
  - name: Smoke test
    kind: script
    excludeEnvironments: [dev]
    config:
      script: echo smoke
`;

const SECRETS = { FEED_PASSWORD: "registry-password", HELLO_DB_PASSWORD: "db-password" };

const changed = (changes: readonly AppliedChange[]) =>
  changes.filter((change) => change.action !== "unchanged" && change.action !== "skipped").map(describeChange);

describe("ferry apply", () => {
  let server: TestServer;
  let client: ApiClient;
  const apply = (text: string, environment: Record<string, string | undefined> = SECRETS, updateSecrets = false) =>
    applyFerryFile(client, parseFerryFile(text, "ferry.yml"), environment, { updateSecrets });
  const get = async <T>(path: string) => {
    const response = await server.call<T>("GET", path);
    expect(response.status, path).toBe(200);
    return response.body;
  };

  beforeEach(async () => {
    server = await startTestServer();
    client = new ApiClient(server.server.url, server.apiKey);
  });
  afterEach(async () => {
    await server?.close();
  });

  it("creates everything the file describes", async () => {
    const changes = await apply(FERRY_YML);

    expect(changes.map(describeChange)).toEqual([
      "created environment dev",
      "created environment test",
      "created environment prod",
      "created feed local (password from $FEED_PASSWORD)",
      "created target web-1",
      "created lifecycle hello",
      "created project hello",
      "created process hello (2 steps, 1 image)",
      "created variable Greeting",
      "created variable Greeting [environments prod]",
      "created variable DbPassword (sensitive, from $HELLO_DB_PASSWORD)",
    ]);
    expect(await get("/api/v1/projects/hello")).toMatchObject({ versionPattern: "1.0.#{n}" });
    const environments = await get<{ items: { slug: string }[] }>("/api/v1/environments");
    expect(environments.items.map((environment) => environment.slug)).toEqual(["dev", "test", "prod"]);
    expect(await get("/api/v1/lifecycles/hello")).toMatchObject({
      phases: [
        { name: "dev", environments: ["dev"], autoDeploy: true, optional: false },
        { name: "test", environments: ["test"], autoDeploy: false, optional: false },
        { name: "Production", environments: ["prod"], autoDeploy: false, optional: false },
      ],
    });
    expect(await get("/api/v1/feeds/local")).toMatchObject({
      url: "http://127.0.0.1:5000",
      username: "ci",
      password: "set",
    });
    expect(await get("/api/v1/targets/web-1")).toMatchObject({
      environments: ["dev", "test", "prod"],
      roles: ["web"],
      runtimes: ["process"],
    });
    expect(await get("/api/v1/projects/hello")).toMatchObject({
      name: "hello",
      description: "The hello-world app",
      lifecycle: "hello",
    });
    const process = await get<{ images: unknown[]; steps: { name: string; config: Record<string, unknown> }[] }>(
      "/api/v1/projects/hello/process",
    );
    expect(process.images).toEqual([
      { name: "web", feed: "local", repository: "demo/app", version: { kind: "semver", range: ">=1.0.0" } },
    ]);
    expect(process.steps.map((step) => step.name)).toEqual(["Say hello", "Smoke test"]);
    expect(process.steps[0]?.config).toMatchObject({ script: 'echo "$GREETING"', interpreter: "bash" });
    const variables = await get<{ items: { name: string; value: string; sensitive: boolean }[] }>(
      "/api/v1/projects/hello/variables",
    );
    expect(variables.items.map(({ name, value, sensitive }) => ({ name, value, sensitive }))).toEqual([
      { name: "DbPassword", value: "set", sensitive: true },
      { name: "Greeting", value: "Hello", sensitive: false },
      { name: "Greeting", value: "Hello from production", sensitive: false },
    ]);
  });

  it("changes nothing when the same file is applied again", async () => {
    await apply(FERRY_YML);
    const again = await apply(FERRY_YML);

    expect(changed(again)).toEqual([]);
    expect(again.filter((change) => change.action === "unchanged").map(describeChange)).toEqual([
      "unchanged environment dev",
      "unchanged environment test",
      "unchanged environment prod",
      "unchanged feed local (password kept; --update-secrets writes $FEED_PASSWORD)",
      "unchanged target web-1",
      "unchanged lifecycle hello",
      "unchanged project hello",
      "unchanged process hello",
      "unchanged variable Greeting",
      "unchanged variable Greeting [environments prod]",
      "unchanged variable DbPassword (sensitive value kept; --update-secrets writes $HELLO_DB_PASSWORD)",
    ]);
    // Without the secrets in the environment, the stored ones are kept as they are.
    expect(changed(await apply(FERRY_YML, {}))).toEqual([]);
    // A section the file leaves out is left as it is: here the process's images.
    const withoutImages = FERRY_YML.replace(/\nimages:\n[\s\S]*?\nvariables:/, "\nvariables:");
    expect(withoutImages).not.toContain("demo/app");
    expect(changed(await apply(withoutImages))).toEqual([]);
  });

  it("updates only the process when a step changed", async () => {
    await apply(FERRY_YML);
    const before = await get<{ updatedAt: string }>("/api/v1/projects/hello/variables/DbPassword");

    const changes = await apply(FERRY_YML.replace('script: echo "$GREETING"', 'script: echo "$GREETING, world"'));

    expect(changed(changes)).toEqual(["updated process hello (2 steps, 1 image)"]);
    const process = await get<{ steps: { config: Record<string, unknown> }[] }>("/api/v1/projects/hello/process");
    expect(process.steps[0]?.config.script).toBe('echo "$GREETING, world"');
    expect(await get("/api/v1/projects/hello/variables/DbPassword")).toMatchObject({ updatedAt: before.updatedAt });
  });

  it("sets an environment's policy for unavailable targets and a step's rolling window, and leaves them on a second apply", async () => {
    await apply(FERRY_YML);
    const file = FERRY_YML.replace(
      "environments: [dev, test, prod]",
      "environments: [dev, test, { name: prod, unavailableTargets: skip }]",
    ).replace(
      "    roles: [web]\n    config:",
      "    roles: [web]\n    rolling: { window: 50%, pauseSeconds: 5 }\n    config:",
    );
    const changes = await apply(file);
    expect(changed(changes)).toEqual([
      "updated environment prod (unavailableTargets)",
      "updated process hello (2 steps, 1 image)",
    ]);
    expect(await get("/api/v1/environments/prod")).toMatchObject({ unavailableTargets: "skip" });
    expect(await get("/api/v1/environments/dev")).toMatchObject({ unavailableTargets: "fail" });
    const process = await get<{ steps: { rolling?: unknown }[] }>("/api/v1/projects/hello/process");
    expect(process.steps[0]?.rolling).toEqual({ window: "50%", pauseSeconds: 5 });
    expect(changed(await apply(file))).toEqual([]);
  });

  it("makes the project's variables exactly the file's, and says what it deleted", async () => {
    await apply(FERRY_YML);
    const extra = await server.call("POST", "/api/v1/projects/hello/variables", { name: "MadeByHand", value: "x" });
    expect(extra.status).toBe(201);

    const edited = FERRY_YML.replace("value: Hello\n", "value: Hi\n").replace(
      "    valueFrom: { env: HELLO_DB_PASSWORD }\n",
      "    valueFrom: { env: HELLO_DB_PASSWORD }\n    scope: { environments: [prod] }\n",
    );
    // No secrets in the environment: the sensitive variable's scope moves, its stored value stays.
    const changes = await apply(edited, {});

    expect(changed(changes)).toEqual([
      "updated variable Greeting (value)",
      "updated variable DbPassword [environments prod] (scope was DbPassword)",
      "deleted variable MadeByHand (not in ferry.yml)",
    ]);
    const variables = await get<{ items: { name: string; sensitive: boolean; scope: { environments: string[] } }[] }>(
      "/api/v1/projects/hello/variables",
    );
    expect(variables.items.map((variable) => variable.name)).toEqual(["DbPassword", "Greeting", "Greeting"]);
    expect(variables.items[0]).toMatchObject({ sensitive: true, scope: { environments: ["prod"] } });
  });

  it("writes secrets only when it has them, and rewrites them when asked", async () => {
    const withoutSecrets = await apply(FERRY_YML, {});
    expect(
      withoutSecrets.filter((change) => change.warning).map((change) => [describeChange(change), change.warning]),
    ).toEqual([
      ["created feed local", "$FEED_PASSWORD is not set, so the feed's password was not set; set it and apply again"],
      [
        "skipped variable DbPassword",
        "$HELLO_DB_PASSWORD is not set, so the sensitive variable was not created; set it and apply again",
      ],
    ]);
    expect(await get("/api/v1/feeds/local")).toMatchObject({ password: null });

    // Once the secrets are there, the missing ones are written.
    expect(changed(await apply(FERRY_YML))).toEqual([
      "updated feed local (password from $FEED_PASSWORD)",
      "created variable DbPassword (sensitive, from $HELLO_DB_PASSWORD)",
    ]);
    expect(await get("/api/v1/feeds/local")).toMatchObject({ password: "set" });

    // Rotation: --update-secrets writes the stored ones again.
    expect(changed(await apply(FERRY_YML, SECRETS, true))).toEqual([
      "updated feed local (password from $FEED_PASSWORD)",
      "updated variable DbPassword (value from $HELLO_DB_PASSWORD)",
    ]);
  });

  it("writes a schedule's sensitive parameter from its variable only when it must, and keeps it otherwise", async () => {
    const withSchedule = (cron: string, days: number) =>
      `${FERRY_YML}runbooks:
  - name: Backup
    publish: true
    parameters:
      - { name: Days, type: number }
      - { name: Token, sensitive: true }
    steps:
      - { name: dump, kind: script, config: { script: echo dump } }
    schedules:
      - name: nightly
        environment: prod
        cron: "${cron}"
        parameters: { Days: ${days} }
        parametersFrom: { Token: { env: BACKUP_TOKEN } }
`;
    const stored = async () => {
      const { openScheduleParameters } = await import("../src/store/runbookSchedules.js");
      const row = await server.server.context.db
        .selectFrom("runbook_schedules")
        .selectAll()
        .where("name", "=", "nightly")
        .executeTakeFirstOrThrow();
      return openScheduleParameters(server.server.context, row);
    };
    const schedules = "/api/v1/projects/hello/runbooks/backup/schedules";
    // Without the variable: not created (it would have no token), and said so.
    const skipped = await apply(withSchedule("0 3 * * *", 7));
    expect(skipped.filter((change) => change.resource === "schedule")).toEqual([
      {
        action: "skipped",
        resource: "schedule",
        name: "backup/nightly",
        warning: "$BACKUP_TOKEN is not set, so the schedule was not created; set it and apply again",
      },
    ]);
    expect(await get(schedules)).toEqual([]);
    // With it: created with the value, shown masked.
    const withToken = { ...SECRETS, BACKUP_TOKEN: "token-one" };
    expect(changed(await apply(withSchedule("0 3 * * *", 7), withToken))).toContain(
      "created schedule backup/nightly (sensitive parameters from $BACKUP_TOKEN)",
    );
    expect(await stored()).toEqual({ Days: 7, Token: "token-one" });
    expect(await get<{ parameters: unknown }[]>(schedules)).toMatchObject([
      { parameters: { Days: 7, Token: "********" } },
    ]);
    // Another cron without the variable: changed, token kept. Other parameters without it: left, with a warning.
    expect(changed(await apply(withSchedule("0 4 * * *", 7)))).toContain("updated schedule backup/nightly (cron)");
    const kept = await apply(withSchedule("0 4 * * *", 9));
    expect(kept.filter((change) => change.resource === "schedule")).toEqual([
      {
        action: "unchanged",
        resource: "schedule",
        name: "backup/nightly",
        warning:
          "$BACKUP_TOKEN is not set, so the schedule's parameters were left as they are (they are sent whole, sensitive values too); set it and apply again",
      },
    ]);
    expect(await stored()).toEqual({ Days: 7, Token: "token-one" });
    // With it, the parameters go whole; --update-secrets rewrites the token alone.
    await apply(withSchedule("0 4 * * *", 9), { ...SECRETS, BACKUP_TOKEN: "token-two" });
    expect(await stored()).toEqual({ Days: 9, Token: "token-two" });
    expect(changed(await apply(withSchedule("0 4 * * *", 9), { ...SECRETS, BACKUP_TOKEN: "token-3" }))).toEqual([]);
    await apply(withSchedule("0 4 * * *", 9), { ...SECRETS, BACKUP_TOKEN: "token-3" }, true);
    expect(await stored()).toEqual({ Days: 9, Token: "token-3" });
  });

  it("declares a runbook's images and packages, exports them, and changes nothing when the export is applied", async () => {
    const withRunbook = `${FERRY_YML}runbooks:
  - name: Backup
    images:
      - { name: tools, feed: local, repository: ops/tools, version: { semver: "^2.0.0" } }
    packages:
      - { name: backup-scripts }
    steps:
      - { name: unpack, kind: package, config: { package: backup-scripts } }
      - { name: dump, kind: script, config: { script: 'echo "$TOOLS"', env: { TOOLS: "#{Ferry.Image[tools]}" } } }
`;
    expect(changed(await apply(withRunbook))).toContain("created runbook backup");
    const runbook = await get<{ process: { images: unknown[]; packages: unknown[] } }>(
      "/api/v1/projects/hello/runbooks/backup",
    );
    expect(runbook.process.images).toEqual([
      { name: "tools", feed: "local", repository: "ops/tools", version: { kind: "semver", range: "^2.0.0" } },
    ]);
    expect(runbook.process.packages).toEqual([{ name: "backup-scripts" }]);
    expect(changed(await apply(withRunbook))).toEqual([]);

    const exported = await exportProject(client, "hello");
    const parsed = parseFerryFile(exported, "exported.yml");
    expect(parsed.runbooks?.[0]).toMatchObject({
      images: [{ name: "tools", feed: "local", repository: "ops/tools" }],
      packages: [{ name: "backup-scripts" }],
    });
    expect(changed(await applyFerryFile(client, parsed, SECRETS, { updateSecrets: false }))).toEqual([]);

    // A file that leaves the images out keeps them; one that gives others replaces them.
    const stepsOnly = withRunbook.replace(/\n {4}images:\n.*\n/, "\n");
    expect(stepsOnly).not.toContain("ops/tools");
    expect(changed(await apply(stepsOnly))).toEqual([]);
    expect(changed(await apply(withRunbook.replace("^2.0.0", "^3.0.0")))).toEqual(["updated runbook backup (process)"]);
  });

  it("inserts missing environments in the file's order next to existing ones", async () => {
    for (const name of ["prod", "staging"]) {
      expect((await server.call("POST", "/api/v1/environments", { name })).status).toBe(201);
    }

    await apply(FERRY_YML);

    const environments = await get<{ items: { slug: string }[] }>("/api/v1/environments");
    expect(environments.items.map((environment) => environment.slug)).toEqual(["dev", "test", "prod", "staging"]);
  });

  it("stops at the first refused request and lists what it had done", async () => {
    expect((await server.call("POST", "/api/v1/feeds", { name: "other", slug: "x", url: "http://x" })).status).toBe(
      201,
    );
    // The feed's name is taken by a feed with another slug: the server refuses to create it.
    const clash = FERRY_YML.replace("  - name: local\n", "  - name: other\n    slug: local\n");

    const error = await apply(clash).catch((failure: unknown) => failure);

    expect(error).toMatchObject({ message: expect.stringMatching(/^could not apply feed local: .*already exists/) });
    expect((error as { details: string[] }).details).toEqual(
      expect.arrayContaining(["  created environment dev", "  created environment prod"]),
    );
  });
});

describe("GET /api/v1/schema/ferry.json", () => {
  it("serves the JSON Schema of ferry.yml to API keys only", async () => {
    const server = await startTestServer();
    try {
      const anonymous = await fetch(new URL("/api/v1/schema/ferry.json", server.server.url));
      expect(anonymous.status).toBe(401);
      const { status, body } = await server.call<Record<string, unknown>>("GET", "/api/v1/schema/ferry.json");
      expect(status).toBe(200);
      expect(body).toMatchObject({ title: "ferry.yml", type: "object", additionalProperties: false });
      expect(body).toEqual(ferryFileJsonSchema());
    } finally {
      await server.close();
    }
  });
});

describe("ferry apply (command)", () => {
  let server: TestServer;
  let directory: string;
  let output: string[];
  let errors: string[];

  const run = async (...argv: string[]) => {
    const program = new Command("ferry").exitOverride();
    addApplyCommand(program, { client: async () => new ApiClient(server.server.url, server.apiKey) }, SECRETS);
    await program.parseAsync(argv, { from: "user" });
  };

  beforeEach(async () => {
    server = await startTestServer();
    directory = await mkdtemp(join(tmpdir(), "ferry-apply-"));
    output = [];
    errors = [];
    vi.spyOn(process.stdout, "write").mockImplementation((chunk) => {
      output.push(String(chunk));
      return true;
    });
    vi.spyOn(process.stderr, "write").mockImplementation((chunk) => {
      errors.push(String(chunk));
      return true;
    });
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    await server?.close();
    await rm(directory, { recursive: true, force: true });
  });

  it("prints the changes and a summary, or JSON", async () => {
    const file = join(directory, "ferry.yml");
    await writeFile(file, FERRY_YML);

    await run("apply", "-f", file);
    const text = output.join("");
    expect(text).toContain("created environment dev\n");
    expect(text).toMatch(/applied: 11 created, 0 updated, 0 deleted, 0 unchanged\n$/);
    expect(errors.join("")).toBe(""); // every secret is available: nothing to warn about

    output.length = 0;
    await run("apply", "-f", file, "--json");
    const changes = JSON.parse(output.join("")) as AppliedChange[];
    expect(changes.every((change) => change.action === "unchanged" || change.action === "skipped")).toBe(true);
  });

  it("refuses an invalid file before sending anything, with file:line:column lines", async () => {
    const file = join(directory, "ferry.yml");
    await writeFile(file, FERRY_YML.replace("  description: The hello-world app\n", "  descripton: typo\n"));

    const error = await run("apply", "-f", file).catch((failure: unknown) => failure);

    expect(error).toBeInstanceOf(InputError);
    expect((error as Error).message.split("\n").slice(1)).toEqual([
      `${file}:4:3 /project/descripton: unknown field; remove it or fix its spelling (docs/ferry-yml.md lists the fields)`,
    ]);
    expect((await server.call<{ total: number }>("GET", "/api/v1/environments")).body.total).toBe(0);
  });
});

describe("ferry.yml runbook schedules and retention (validation)", () => {
  const withRunbook = (runbook: string) =>
    `${FERRY_YML}runbooks:\n  - name: Backup\n    parameters:\n      - { name: Days, type: number, default: 7 }\n      - { name: Token, sensitive: true, required: false }\n${runbook}`;
  const problems = (text: string) => {
    try {
      parseFerryFile(text, "ferry.yml");
    } catch (error) {
      return (error as Error).message.split("\n").slice(1);
    }
    return [];
  };

  it("names the field of a sensitive value written in a schedule, a reference to a plain parameter, and a bad policy", () => {
    expect(
      problems(
        withRunbook(
          [
            "    schedules:",
            "      - name: nightly",
            "        environment: prod",
            "        cron: '0 3 * * *'",
            "        parameters: { Token: abc }",
            "        parametersFrom: { Days: { env: DAYS }, Nope: { env: NOPE } }",
            "    artifactRetention:",
            "      - { environment: staging, keepRuns: 0 }",
            "",
          ].join("\n"),
        ),
      ),
    ).toEqual([
      "ferry.yml:60:30 /runbooks/0/schedules/0/parameters/Token: 'Token' is a sensitive parameter: its value is a secret and never goes in a file; move it to parametersFrom: { Token: { env: NAME } }, which `ferry apply` reads from its environment",
      "ferry.yml:61:33 /runbooks/0/schedules/0/parametersFrom/Days: 'Days' is not a sensitive parameter: write its value under parameters instead",
      "ferry.yml:61:54 /runbooks/0/schedules/0/parametersFrom/Nope: the runbook has no parameter 'Nope'; remove it or add the parameter (sensitive: true)",
      "ferry.yml:63:24 /runbooks/0/artifactRetention/0/environment: no environment 'staging' under environments; refer to one by its slug: dev, test, prod",
      "ferry.yml:63:43 /runbooks/0/artifactRetention/0/keepRuns: Too small: expected number to be >=1",
    ]);
  });

  it("accepts schedules with a sensitive parameter by reference, and both retentions", () => {
    const file = parseFerryFile(
      withRunbook(
        [
          "    schedules:",
          "      - name: nightly",
          "        environment: prod",
          "        cron: '0 3 * * *'",
          "        parameters: { Days: 3 }",
          "        parametersFrom: { Token: { env: BACKUP_TOKEN } }",
          "    retention: [{ keepRuns: 30 }]",
          "    artifactRetention: [{ environment: prod, keepDays: 7 }]",
          "",
        ].join("\n"),
      ),
      "ferry.yml",
    );
    const runbook = file.runbooks?.[0];
    expect(runbook?.schedules?.[0]).toMatchObject({
      parameters: { Days: 3 },
      parametersFrom: { Token: { env: "BACKUP_TOKEN" } },
    });
    expect(runbook?.artifactRetention).toEqual([{ environment: "prod", keepRuns: null, keepDays: 7 }]);
  });
});
