import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type CliResult,
  expectSuccess,
  FERRY,
  type FerryServer,
  isolatedEnv,
  parseJson,
  runFerry,
  testAdminKey,
  trackedResources,
} from "./helpers/cli.js";

/**
 * Issue 14 end to end: the real `bin/ferry` against a real `ferry server` — a runbook declared
 * in ferry.yml and published by `ferry apply`, run with `ferry runbook run --param … --wait`,
 * a bad parameter refused before anything is queued, and a freeze refusing `ferry deploy`.
 */

const { startServerInNewHome, cleanUp } = trackedResources("ferry-runbooks-e2e-");

const FERRY_YML = `
project:
  name: Shop
environments:
  - name: Staging
  - name: Prod
lifecycle:
  name: Standard
  phases:
    - environments: [staging, prod]
variables:
  - name: BackupDir
    value: /var/backups/shop
steps:
  - name: deploy
    kind: script
    config:
      script: echo deployed
runbooks:
  - name: Backup database
    description: Dumps the database to the backup directory
    environments: [prod]
    publish: true
    parameters:
      - name: Database
        type: choice
        choices: [orders, users]
      - name: Keep
        type: number
        min: 1
        max: 30
        default: 7
      - name: Token
        sensitive: true
        required: false
    steps:
      - name: dump
        kind: script
        config:
          script: 'echo "dumping $1 to $2, keeping $3 (token $TOKEN)"'
          arguments: ["#{Database}", "#{BackupDir}", "#{Keep}"]
          # A secret goes in the environment, never in argv (which any process list shows).
          env: { TOKEN: "#{Token}" }
`;

describe("ferry runbook (CLI against a ferry server)", () => {
  let server: FerryServer;
  let home: string;
  const adminKey = testAdminKey();
  const cli = (args: string[]): Promise<CliResult> =>
    runFerry(args, isolatedEnv(home, { FERRY_URL: server.url, FERRY_API_KEY: adminKey }), { timeoutMs: 30_000 });

  beforeAll(async () => {
    ({ home, server } = await startServerInNewHome(adminKey));
    await writeFile(join(home, "ferry.yml"), FERRY_YML);
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    await cleanUp();
  });

  it("applies a runbook from ferry.yml, publishes it, and runs it with parameters", async () => {
    const applied = await cli(["apply", "-f", join(home, "ferry.yml"), "--json"]);
    expectSuccess(applied);
    const changes = parseJson<{ action: string; resource: string; detail?: string }[]>(applied);
    expect(
      changes.filter((change) => change.resource === "runbook").map((change) => change.detail ?? change.action),
    ).toEqual(["created", "published version 1"]);
    // Applying again changes nothing and publishes nothing.
    const again = parseJson<{ action: string; resource: string }[]>(
      await cli(["apply", "-f", join(home, "ferry.yml"), "--json"]),
    );
    expect(again.filter((change) => change.resource === "runbook").map((change) => change.action)).toEqual([
      "unchanged",
    ]);

    const secret = "tok-e2e-very-secret-42";
    const ran = await cli([
      "runbook",
      "run",
      "--project",
      "shop",
      "--runbook",
      "backup-database",
      "--env",
      "prod",
      "--param",
      "Database=orders",
      "--param",
      `Token=${secret}`,
      "--wait",
    ]);
    expectSuccess(ran);
    expect(ran.stdout).toContain("dumping orders to /var/backups/shop, keeping 7 (token ");
    expect(ran.stdout).toContain("shop/backup-database v1 in prod: succeeded");
    expect(ran.stdout + ran.stderr).not.toContain(secret);

    const json = await cli([
      "runbook",
      "run",
      "--project",
      "shop",
      "--runbook",
      "backup-database",
      "--env",
      "prod",
      "--param",
      "Database=users",
      "--param",
      `Token=${secret}`,
      "--wait",
      "--json",
    ]);
    expectSuccess(json);
    const outcome = parseJson<{ state: string; version: number; parameters: Record<string, string> }>(json);
    expect(outcome).toMatchObject({ state: "succeeded", version: 1 });
    expect(outcome.parameters).toEqual({ Database: "users", Keep: "7", Token: "********" });

    const runs = await cli(["runbook", "runs", "--project", "shop", "--runbook", "backup-database"]);
    expectSuccess(runs);
    expect(runs.stdout.match(/succeeded/g)).toHaveLength(2);
    expect(runs.stdout).not.toContain(secret);
  }, 90_000);

  it("refuses a bad parameter before queueing, naming it, and a run outside the runbook's environments", async () => {
    const tasksBefore = parseJson<unknown[]>(await cli(["task", "list", "--json"])).length;
    const bad = await cli([
      "runbook",
      "run",
      "--project",
      "shop",
      "--runbook",
      "backup-database",
      "--env",
      "prod",
      "--param",
      "Database=payments",
      "--param",
      "Keep=99",
    ]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("/parameters/Database");
    expect(bad.stderr).toContain("is not one of orders, users");
    expect(bad.stderr).toContain("/parameters/Keep");
    const tasksAfter = parseJson<unknown[]>(await cli(["task", "list", "--json"])).length;
    expect(tasksAfter).toBe(tasksBefore);

    const malformed = await cli([
      "runbook",
      "run",
      "--project",
      "shop",
      "--runbook",
      "backup-database",
      "--env",
      "prod",
      "--param",
      "Database",
    ]);
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toContain("--param NAME=VALUE");

    const staging = await cli([
      "runbook",
      "run",
      "--project",
      "shop",
      "--runbook",
      "backup-database",
      "--env",
      "staging",
      "--param",
      "Database=orders",
    ]);
    expect(staging.code).toBe(1);
    expect(staging.stderr).toContain("does not run in Staging");
  }, 60_000);

  it("refuses ferry deploy during a freeze, naming it, and deploys with --override-freeze", async () => {
    expectSuccess(await cli(["release", "create", "--project", "shop", "--version", "1.0.0"]));
    const created = await cli([
      "freeze",
      "create",
      "--project",
      "shop",
      "--name",
      "Launch week",
      "--env",
      "prod",
      "--from",
      new Date(Date.now() - 60_000).toISOString(),
      "--until",
      new Date(Date.now() + 3_600_000).toISOString(),
    ]);
    expectSuccess(created);
    const listed = await cli(["freeze", "list", "--project", "shop"]);
    expect(listed.stdout).toContain("Launch week");

    const refused = await cli(["deploy", "--project", "shop", "--release", "1.0.0", "--env", "prod"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("deployment freeze 'Launch week' is in effect");

    const overridden = await cli([
      "deploy",
      "--project",
      "shop",
      "--release",
      "1.0.0",
      "--env",
      "prod",
      "--override-freeze",
      "hotfix for checkout",
      "--wait",
    ]);
    expectSuccess(overridden);
    expectSuccess(await cli(["freeze", "delete", "--project", "shop", "--name", "Launch week"]));
  }, 60_000);

  it("runs on only the targets --target names, and a script attaches an artifact with `ferry artifact add`", async () => {
    const api = async (method: string, path: string, body?: unknown) => {
      const response = await fetch(new URL(path, server.url), {
        method,
        headers: { authorization: `Bearer ${adminKey}`, "content-type": "application/json" },
        ...(body !== undefined && { body: JSON.stringify(body) }),
      });
      expect(response.status, `${method} ${path}`).toBeLessThan(300);
      return (await response.json()) as Record<string, unknown>;
    };
    for (const name of ["report-1", "report-2"]) {
      await api("POST", "/api/v1/targets", { name, environments: ["staging"], roles: ["reports"] });
    }
    await api("POST", "/api/v1/projects/shop/runbooks", {
      name: "Report",
      process: {
        steps: [
          {
            name: "report",
            kind: "script",
            roles: ["reports"],
            config: {
              script: [
                "set -euo pipefail",
                'printf "report from %s\\n" "$HOST" > report.txt',
                'echo "ran on $HOST sum=$(sha256sum report.txt | cut -d" " -f1)"',
                'node "$FERRY" artifact add report.txt --name "report-$HOST.txt"',
              ].join("\n"),
              env: { HOST: "#{Ferry.Target.Name}", FERRY },
            },
          },
        ],
      },
    });
    expectSuccess(await cli(["runbook", "publish", "--project", "shop", "--runbook", "report"]));
    const ran = await cli([
      "runbook",
      "run",
      "--project",
      "shop",
      "--runbook",
      "report",
      "--env",
      "staging",
      "--target",
      "report-2",
      "--wait",
    ]);
    expectSuccess(ran);
    expect(ran.stdout).toContain("ran on report-2");
    expect(ran.stdout).not.toContain("ran on report-1");
    const sum = /ran on report-2 sum=([0-9a-f]{64})/.exec(ran.stdout)?.[1];
    expect(sum).toBeDefined();

    const runs = (await api("GET", "/api/v1/projects/shop/runbooks/report/runs")) as unknown as {
      taskId: string;
    }[];
    expect(runs).toHaveLength(1);
    const task = await api("GET", `/api/v1/tasks/${runs[0]?.taskId}`);
    expect(task.runbookRun).toMatchObject({ targets: ["report-2"] });
    const listed = await cli(["artifact", "list", "--task", String(runs[0]?.taskId), "--json"]);
    expectSuccess(listed);
    const artifacts = parseJson<{ name: string; sha256: string; target: string | null }[]>(listed);
    expect(artifacts).toEqual([
      expect.objectContaining({ name: "report-report-2.txt", sha256: sum, target: "report-2" }),
    ]);
  }, 90_000);
});
