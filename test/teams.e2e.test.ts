import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AccessRole, Team } from "../src/domain/access.js";
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

/** The real `bin/ferry role …` and `ferry team …` against a real `ferry server` (SQLite). */

const { startServerInNewHome, cleanUp } = trackedResources("ferry-teams-e2e-");

afterAll(async () => {
  await cleanUp();
});

// Each test runs a dozen or more `ferry` commands (~1 s of CPU each): 2 minutes each, as the
// 30 s default ran out in CI under load.
describe("ferry role and ferry team (real bin/ferry)", { timeout: 120_000 }, () => {
  let server: FerryServer;
  let home: string;
  const adminKey = testAdminKey();
  const cliWith = (apiKey: string, args: string[]): Promise<CliResult> =>
    runFerry(args, isolatedEnv(home, { FERRY_URL: server.url, FERRY_API_KEY: apiKey }), { timeoutMs: 15_000 });
  const cli = (args: string[]) => cliWith(adminKey, args);

  async function post(path: string, body: unknown): Promise<void> {
    const response = await apiRequest(`${server.url}${path}`, adminKey, "POST", body);
    expect(response.status, await response.text()).toBe(201);
  }

  /** The project slugs a user's key lists: what that user's teams let them see. */
  async function projectsSeenWith(apiKey: string): Promise<string[]> {
    const result = await cliWith(apiKey, ["project", "list", "--json"]);
    expectSuccess(result);
    return parseJson<{ slug: string }[]>(result).map((project) => project.slug);
  }

  beforeAll(async () => {
    ({ home, server } = await startServerInNewHome(adminKey));
    for (const name of ["dev", "test", "prod"]) await post("/api/v1/environments", { name });
    await post("/api/v1/lifecycles", {
      name: "default",
      phases: [{ environments: ["dev"] }, { environments: ["test"] }, { environments: ["prod"] }],
    });
    await post("/api/v1/projects", { name: "shop", lifecycle: "default" });
    for (const username of ["ana", "ben"]) {
      await post("/api/v1/users", { username, password: "a long enough password" });
    }
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("creates a role and a team, changes members and grants, and the user's access follows", async () => {
    const role = await cli([
      "role",
      "create",
      "--name",
      "Tester",
      "--permission",
      "view",
      "--permission",
      "approve",
      "--description",
      "approves in prod",
      "--json",
    ]);
    expectSuccess(role);
    expect(parseJson<AccessRole>(role)).toMatchObject({ slug: "tester", permissions: ["view", "approve"] });

    const roles = await cli(["role", "list", "--json"]);
    expectSuccess(roles);
    expect(parseJson<AccessRole[]>(roles).map((listed) => listed.slug)).toEqual(
      expect.arrayContaining(["deployer", "tester"]),
    );
    const roleTable = await cli(["role", "list"]);
    expectSuccess(roleTable);
    expect(roleTable.stdout).toMatch(/^tester\s+Tester\s+view, approve\s+-\s+approves in prod$/m);

    // Ana's own key: before any team she sees no project.
    const anaKey = await cli(["api-key", "create", "--name", "ana-cli", "--user", "ana", "--json"]);
    expectSuccess(anaKey);
    const anaApiKey = parseJson<{ key: string }>(anaKey).key;
    expect(await projectsSeenWith(anaApiKey)).toEqual([]);

    const created = await cli([
      "team",
      "create",
      "--name",
      "Developers",
      "--member",
      "ana",
      "--grant",
      "deployer:*:dev,test",
      "--json",
    ]);
    expectSuccess(created);
    expect(parseJson<Team>(created)).toMatchObject({
      slug: "developers",
      members: ["ana"],
      roles: [{ role: "deployer", projects: null, environments: ["dev", "test"] }],
    });
    expect(await projectsSeenWith(anaApiKey)).toEqual(["shop"]);

    const added = await cli(["team", "add-member", "developers", "ben"]);
    expectSuccess(added);
    expect(added.stdout).toMatch(/^members:\s+ana, ben$/m);

    const granted = await cli([
      "team",
      "grant",
      "developers",
      "tester",
      "--projects",
      "shop",
      "--environments",
      "prod",
    ]);
    expectSuccess(granted);
    expect(granted.stdout).toContain("tester [projects: shop; environments: prod]");

    // The team as a table and as JSON.
    const teamTable = await cli(["team", "list"]);
    expectSuccess(teamTable);
    expect(teamTable.stdout).toMatch(/^SLUG\s+NAME\s+MEMBERS\s+ROLES$/m);
    expect(teamTable.stdout).toContain(
      "developers  Developers  ana, ben  deployer [projects: all; environments: dev, test]; tester [projects: shop; environments: prod]",
    );
    const teams = await cli(["team", "list", "--json"]);
    expectSuccess(teams);
    expect(parseJson<Team[]>(teams)).toEqual([
      expect.objectContaining({
        slug: "developers",
        members: ["ana", "ben"],
        roles: [
          { role: "deployer", projects: null, environments: ["dev", "test"] },
          { role: "tester", projects: ["shop"], environments: ["prod"] },
        ],
      }),
    ]);

    // Revoking deployer leaves tester (view on shop in prod): Ana still sees shop.
    const revoked = await cli(["team", "revoke", "developers", "deployer", "--json"]);
    expectSuccess(revoked);
    expect(parseJson<Team>(revoked).roles).toEqual([{ role: "tester", projects: ["shop"], environments: ["prod"] }]);
    expect(await projectsSeenWith(anaApiKey)).toEqual(["shop"]);

    // Out of the team, she sees nothing again.
    const removed = await cli(["team", "remove-member", "developers", "ana", "--json"]);
    expectSuccess(removed);
    expect(parseJson<Team>(removed).members).toEqual(["ben"]);
    expect(await projectsSeenWith(anaApiKey)).toEqual([]);

    const notMember = await cli(["team", "remove-member", "developers", "ana"]);
    expect(notMember.code).toBe(1);
    expect(notMember.stderr).toContain("ana is not a member of team developers");
    const notGranted = await cli(["team", "revoke", "developers", "deployer"]);
    expect(notGranted.code).toBe(1);
    expect(notGranted.stderr).toContain("has no grant of role deployer");

    // A role still granted cannot be deleted; once the team is gone it can.
    const inUse = await cli(["role", "delete", "tester"]);
    expect(inUse.code).toBe(1);
    expect(inUse.stderr).toContain("role 'tester' is granted to teams");
    expect(inUse.stderr).toContain("used by team developers");
    expectSuccess(await cli(["team", "delete", "developers"]));
    expectSuccess(await cli(["role", "delete", "tester"]));
    expect(parseJson<Team[]>(await cli(["team", "list", "--json"]))).toEqual([]);
  });

  it("exits 2 naming the flag on a malformed --grant or --permission, and creates nothing", async () => {
    for (const grant of ["deployer:shop:dev:extra", "deployer:*:dev,,test", ":shop"]) {
      const result = await cli(["team", "create", "--name", "Broken", "--grant", grant]);
      expect(result.code, result.stderr).toBe(2);
      expect(result.stderr).toContain("--grant");
    }
    const badScope = await cli(["team", "grant", "anything", "viewer", "--environments", "dev,*"]);
    expect(badScope.code).toBe(2);
    expect(badScope.stderr).toContain("--environments");
    const badPermission = await cli(["role", "create", "--name", "Pilot", "--permission", "fly"]);
    expect(badPermission.code).toBe(2);
    expect(badPermission.stderr).toContain("--permission");
    expect(badPermission.stderr).toContain("editVariables");

    const teams = await cli(["team", "list", "--json"]);
    expectSuccess(teams);
    expect(parseJson<Team[]>(teams).map((team) => team.slug)).not.toContain("broken");
    const roles = await cli(["role", "list", "--json"]);
    expectSuccess(roles);
    expect(parseJson<AccessRole[]>(roles).map((role) => role.slug)).not.toContain("pilot");
  });
});
