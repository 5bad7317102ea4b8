import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  type CliResult,
  expectSuccess,
  type FerryServer,
  isolatedEnv,
  parseJson,
  runFerry,
  type TrackedResources,
  testAdminKey,
} from "./cli.js";
import { createPostgresDatabase } from "./databases.js";

/** What `ferry vars show --json` answers, as far as these suites read it. */
export interface VariablePreview {
  variables: { name: string; value: string; sensitive: boolean; rank: string }[];
}

/**
 * A real `ferry server` (on SQLite, or on a fresh PostgreSQL database) with `file` applied
 * as its ferry.yml, and the CLI bound to it as the admin: the set-up the variable suites
 * share. `start` and `stop` go to beforeAll / afterAll; the rest is for the tests.
 */
export function appliedServer(
  resources: TrackedResources,
  options: { dialect: "sqlite" | "postgres"; file: string; env?: Record<string, string> },
) {
  const adminKey = testAdminKey();
  let server: FerryServer | undefined;
  let home = "";
  let directory = "";
  let dropDatabase: (() => Promise<void>) | undefined;

  const running = (): FerryServer => {
    if (!server) throw new Error("the server has not started: call start() in beforeAll");
    return server;
  };
  const ferry = (args: string[], extra: Record<string, string> = {}): Promise<CliResult> =>
    runFerry(args, isolatedEnv(home, { FERRY_URL: running().url, FERRY_API_KEY: adminKey, ...options.env, ...extra }), {
      timeoutMs: 60_000,
    });
  /** `ferry vars show --project shop … --json`. */
  const preview = async <Preview extends VariablePreview = VariablePreview>(args: string[]) => {
    const result = await ferry(["vars", "show", "--project", "shop", ...args, "--json"]);
    expectSuccess(result);
    return parseJson<Preview>(result);
  };
  /** The preview's values by name, without the system's (Ferry.*). */
  const valuesOf = (shown: VariablePreview) =>
    Object.fromEntries(
      shown.variables.filter((variable) => !variable.name.startsWith("Ferry.")).map((v) => [v.name, v.value]),
    );

  /** Creates shop's release `version`, deploys it to `environment` and waits; that deployment's task log. */
  const deploymentLog = async (version: string, environment: string): Promise<string> => {
    const created = await ferry([
      "release",
      "create",
      "--project",
      "shop",
      "--version",
      version,
      "--deploy-to",
      environment,
      "--wait",
      "--json",
    ]);
    expectSuccess(created);
    const { deployments } = parseJson<{ deployments: { taskId: string; environment: string }[] }>(created);
    const deployment = deployments.find((item) => item.environment === environment);
    if (!deployment) throw new Error(`release ${version} was not deployed to ${environment}: ${created.stdout}`);
    const log = await ferry(["task", "logs", deployment.taskId]);
    expectSuccess(log);
    return log.stdout;
  };

  return {
    adminKey,
    ferry,
    preview,
    valuesOf,
    deploymentLog,
    get url() {
      return running().url;
    },
    /** The directory the ferry.yml was written to (the test may write more there). */
    get directory() {
      return directory;
    },
    async start() {
      let extraArgs: string[] = [];
      if (options.dialect === "postgres") {
        const database = await createPostgresDatabase();
        dropDatabase = database.drop;
        extraArgs = ["--db", database.url];
      }
      ({ home, server } = await resources.startServerInNewHome(adminKey, extraArgs));
      directory = await resources.makeTemporaryDirectory();
      await writeFile(join(directory, "ferry.yml"), options.file);
      expectSuccess(await ferry(["apply", "-f", join(directory, "ferry.yml")]));
    },
    async stop() {
      await server?.stop();
      await dropDatabase?.();
    },
  };
}
