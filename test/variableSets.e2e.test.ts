import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appliedServer, type VariablePreview } from "./helpers/appliedServer.js";
import { expectSuccess, parseJson, trackedResources } from "./helpers/cli.js";

/**
 * Variable sets (issue 16 part 2, ADR 0047), end to end through the real `bin/ferry` and
 * `ferry server` on SQLite and PostgreSQL: sets declared in ferry.yml and included by a
 * project in an order, `ferry vars show --explain` naming the sets' candidates and why they
 * lost, a real deployment whose script prints what it saw (the preview must be exactly
 * that), the export round trip, who may change a set, and sensitive set values never shown.
 */

const resources = trackedResources("ferry-varsets-e2e-");

afterAll(async () => {
  await resources.cleanUp();
});

const MANY_RUNS_MS = 240_000;

const TOKEN = "set-token-value-4711";

const FILE = `
project:
  name: shop
  variableSets: [common, extra]
environments: [dev, prod]
lifecycle:
  name: shop
  phases:
    - environments: [dev, prod]
targets:
  - name: web-1
    environments: [dev, prod]
    roles: [web]
  - name: web-2
    environments: [prod]
    roles: [web]
  - name: db-1
    environments: [prod]
    roles: [db]
variableSets:
  - name: common
    description: shared by every shop service
    variables:
      - name: Where
        value: from-common
      - name: Region
        value: common-region
      - name: Region
        value: common-prod-region
        scope: { environments: [prod] }
      - name: Level
        value: common-db-level
        scope: { roles: [db] }
      - name: Token
        sensitive: true
        valueFrom: { env: COMMON_TOKEN }
  - name: extra
    variables:
      - name: Region
        value: extra-prod-region
        scope: { environments: [prod] }
      - name: Level
        value: extra-level
variables:
  # One name scoped four ways (project, environment, role, target), plus the set's value.
  - name: Where
    value: from-project
  - name: Where
    value: from-environment
    scope: { environments: [prod] }
  - name: Where
    value: from-role
    scope: { roles: [web] }
  - name: Where
    value: from-target
    scope: { targets: [web-1] }
steps:
  - name: Print
    kind: script
    roles: [web, db]
    config:
      script: echo "seen target=$TARGET where=$WHERE region=$REGION level=$LEVEL token=$TOKEN"
      env:
        TARGET: "#{Ferry.Target.Name}"
        WHERE: "#{Where}"
        REGION: "#{Region}"
        LEVEL: "#{Level}"
        TOKEN: "#{Token}"
`;

interface Preview extends VariablePreview {
  variables: (VariablePreview["variables"][number] & { set: string | null })[];
}

interface Change {
  file?: string;
  action: string;
  resource: string;
  name: string;
  fields?: { field: string; from?: unknown; to?: unknown; sensitive?: true }[];
}

// The two dialects run side by side (each its own server, home and database); the tests of
// one still run in order (it.sequential), as README "Development" describes.
describe.each(["sqlite", "postgres"] as const)("variable sets on %s", { concurrent: true }, (dialect) => {
  const shop = appliedServer(resources, { dialect, file: FILE, env: { COMMON_TOKEN: TOKEN } });
  const { adminKey, ferry, valuesOf } = shop;
  const preview = shop.preview<Preview>;
  const api = async (method: string, path: string, body?: unknown, key = adminKey) => {
    // Not apiRequest: its 5 s limit is too short for a password hash on a loaded machine.
    const response = await fetch(`${shop.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body !== undefined && { "content-type": "application/json" }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(60_000),
    });
    const text = await response.text();
    return { status: response.status, text, json: text === "" ? undefined : (JSON.parse(text) as unknown) };
  };

  beforeAll(shop.start, 120_000);
  afterAll(shop.stop);

  it.sequential(
    "shows which set each value comes from, and explains why a set's candidates lost",
    async () => {
      const shown = await ferry(["vars", "show", "--project", "shop", "--env", "prod", "--target", "web-2"]);
      expectSuccess(shown);
      expect(shown.stdout).toMatch(/^Region +common-prod-region +environment: environments prod in set common$/m);
      expect(shown.stdout).toMatch(/^Level +extra-level +project: unscoped in set extra$/m);
      expect(shown.stdout).toMatch(/^Token +\*{8} \(sensitive\) +project: unscoped in set common$/m);
      expect(shown.stdout).toMatch(/^Where +from-role +role: roles web$/m);
      expect(shown.stdout + shown.stderr).not.toContain(TOKEN);

      const where = await ferry([
        "vars",
        "show",
        "--project",
        "shop",
        "--env",
        "prod",
        "--target",
        "db-1",
        "--explain",
        "Where",
      ]);
      expectSuccess(where);
      expect(where.stdout).toContain(
        "Where in prod on target db-1 = from-environment (won by its environment scope)\n",
      );
      // "  <verdict padded to 14> <scope padded to 30> <value>": "not applicable" fills its column.
      const verdicts = (text: string) =>
        text
          .split("\n")
          .filter((line) => /^ {2}\S/.test(line))
          .map((line) => {
            const match = /^ {2}(won|tied|outranked|not applicable) +(.*?) {2,}(\S.*)$/.exec(line);
            return match ? `${match[1]} | ${match[2]} | ${match[3]}` : line.trim();
          });
      expect(verdicts(where.stdout)).toEqual([
        "outranked | unscoped in set common | from-common",
        "outranked | unscoped | from-project",
        "won | environments prod | from-environment",
        "not applicable | roles web | from-role",
        "not applicable | targets web-1 | from-target",
      ]);
      // In dev nothing scoped applies: the project's unscoped value and the set's are as specific.
      const inDev = await ferry(["vars", "show", "--project", "shop", "--env", "dev", "--explain", "Where"]);
      expectSuccess(inDev);
      expect(verdicts(inDev.stdout).slice(0, 2)).toEqual([
        "outranked | unscoped in set common | from-common",
        "won | unscoped | from-project",
      ]);
      expect(inDev.stdout).toContain(
        "applies and is as specific, but the project's own value beats variable set 'common' (included #1)",
      );

      const region = await ferry(["vars", "show", "--project", "shop", "--env", "prod", "--explain", "Region"]);
      expectSuccess(region);
      expect(verdicts(region.stdout)).toEqual([
        "outranked | unscoped in set common | common-region",
        "outranked | environments prod in set extra | extra-prod-region",
        "won | environments prod in set common | common-prod-region",
      ]);
      expect(region.stdout).toContain(
        "applies and is as specific, but variable set 'common' (included #1) beats variable set 'extra' (included #2)",
      );
      expect(valuesOf(await preview(["--env", "dev"]))).toEqual({
        Level: "extra-level",
        Region: "common-region",
        Token: "********",
        Where: "from-project",
      });
    },
    MANY_RUNS_MS,
  );

  it.sequential(
    "matches what a deployment's script actually saw on each target, and never shows the set's secret",
    async () => {
      const log = await shop.deploymentLog("1.0.0", "prod");
      expect(log).not.toContain(TOKEN);
      const seen = [...log.matchAll(/seen target=(\S+) where=(\S+) region=(\S+) level=(\S+) token=(\S+)/g)].map(
        (match) => ({
          target: match[1] ?? "",
          values: { Where: match[2], Region: match[3], Level: match[4], Token: match[5] },
        }),
      );
      expect(seen.map((item) => item.target).sort()).toEqual(["db-1", "web-1", "web-2"]);
      for (const { target, values } of seen) {
        // The log masks the secret; the preview masks it too (the same mask).
        const shown = await preview(["--env", "prod", "--target", target, "--step", "Print"]);
        expect(valuesOf(shown), `target ${target}`).toEqual(values);
        const ofRelease = await preview(["--env", "prod", "--target", target, "--step", "Print", "--release", "1.0.0"]);
        expect(valuesOf(ofRelease), `target ${target}, release 1.0.0`).toEqual(values);
      }
      // Each source won somewhere: the four project scopes, the first set over the second, a set's role scope.
      expect(Object.fromEntries(seen.map((item) => [item.target, item.values]))).toEqual({
        "web-1": { Where: "from-target", Region: "common-prod-region", Level: "extra-level", Token: "********" },
        "web-2": { Where: "from-role", Region: "common-prod-region", Level: "extra-level", Token: "********" },
        "db-1": {
          Where: "from-environment",
          Region: "common-prod-region",
          Level: "common-db-level",
          Token: "********",
        },
      });
      // The script saw the real secret: it only reads as the mask in the log.
      const tokenCheck = await api("GET", "/api/v1/variable-sets/common/variables/Token");
      expect(tokenCheck.status).toBe(200);
      expect(tokenCheck.text).not.toContain(TOKEN);
      expect((tokenCheck.json as { value: string }).value).toBe("set");

      // A set edited after the release: the preview follows, the release's snapshot does not.
      const regions = parseJson<{ id: string; name: string; scope: { environments: string[] } }[]>(
        await ferry(["varset", "var", "list", "--set", "common", "--json"]),
      ).filter((variable) => variable.name === "Region");
      const prodRegion = regions.find((variable) => variable.scope.environments.includes("prod"));
      expectSuccess(
        await ferry(["varset", "var", "update", "--set", "common", prodRegion?.id ?? "", "--value", "moved-region"]),
      );
      expect(valuesOf(await preview(["--env", "prod"])).Region).toBe("moved-region");
      expect(valuesOf(await preview(["--env", "prod", "--release", "1.0.0"])).Region).toBe("common-prod-region");
      expectSuccess(
        await ferry([
          "varset",
          "var",
          "update",
          "--set",
          "common",
          prodRegion?.id ?? "",
          "--value",
          "common-prod-region",
        ]),
      );
    },
    MANY_RUNS_MS,
  );

  it.sequential(
    "exports the sets with the project, and the export plans to no change; one edited set value plans as exactly that",
    async () => {
      const exported = join(shop.directory, "exported.yml");
      expectSuccess(await ferry(["export", "--project", "shop", "-o", exported]));
      const text = await readFile(exported, "utf8");
      expect(text).toContain("variableSets:\n    - common\n    - extra\n");
      expect(text).toContain("valueFrom:\n          env: FERRY_SECRET_SET_COMMON_TOKEN");
      expect(text).not.toContain(TOKEN);
      const plan = await ferry(["plan", "-f", exported]);
      expectSuccess(plan);
      expect(plan.stdout).toMatch(/^No changes: the server matches the file \(\d+ unchanged\)\.\n$/);

      await writeFile(exported, text.replace("value: extra-level", "value: extra-level-2"));
      const changedOnes = (changes: Change[]) =>
        changes.filter((change) => change.action !== "unchanged").map(({ file: _file, ...change }) => change);
      const edited = parseJson<Change[]>(await ferry(["plan", "-f", exported, "--json"]));
      expect(changedOnes(edited)).toEqual([
        {
          action: "updated",
          resource: "variable",
          name: "extra/Level",
          detail: "value",
          fields: [{ field: "value", from: "extra-level", to: "extra-level-2" }],
        },
      ]);
      // Reordering the sets is a change too: the order is precedence.
      await writeFile(exported, text.replace("    - common\n    - extra\n", "    - extra\n    - common\n"));
      const reordered = parseJson<Change[]>(await ferry(["plan", "-f", exported, "--json"]));
      expect(changedOnes(reordered)).toEqual([
        {
          action: "updated",
          resource: "project",
          name: "shop",
          detail: "variable sets",
          fields: [{ field: "variableSets", from: ["common", "extra"], to: ["extra", "common"] }],
        },
      ]);
      // A plan changes nothing.
      expect(valuesOf(await preview(["--env", "prod"])).Region).toBe("common-prod-region");
    },
    MANY_RUNS_MS,
  );

  it.sequential(
    "lets only editVariableSets everywhere change a set; a project editor reads sets and includes them",
    async () => {
      await api("POST", "/api/v1/users", { username: "pat", password: "pat-long-password-1" });
      await api("POST", "/api/v1/teams", {
        name: "shop editors",
        members: ["pat"],
        roles: [{ role: "project-editor", projects: ["shop"] }],
      });
      const patKey = String(
        ((await api("POST", "/api/v1/api-keys", { name: "pat cli", user: "pat" })).json as { key: string }).key,
      );
      const asPat = (method: string, path: string, body?: unknown) => api(method, path, body, patKey);

      const sets = await asPat("GET", "/api/v1/variable-sets");
      expect(sets.status).toBe(200);
      expect((sets.json as { items: { slug: string }[] }).items.map((set) => set.slug)).toEqual(["common", "extra"]);
      const refused: [string, string, unknown?][] = [
        ["POST", "/api/v1/variable-sets", { name: "sneaky" }],
        ["PATCH", "/api/v1/variable-sets/common", { description: "changed" }],
        ["DELETE", "/api/v1/variable-sets/extra"],
        ["POST", "/api/v1/variable-sets/common/variables", { name: "Sneaky", value: "x" }],
        ["PATCH", "/api/v1/variable-sets/extra/variables/Level", { value: "changed" }],
        ["DELETE", "/api/v1/variable-sets/extra/variables/Level"],
      ];
      for (const [method, path, body] of refused) {
        const answer = await asPat(method, path, body);
        expect(answer.status, `${method} ${path}: ${answer.text}`).toBe(403);
        expect(answer.text).toContain("editVariableSets");
      }
      expect(valuesOf(await preview(["--env", "dev"])).Level).toBe("extra-level");

      // Including sets changes only the project: its own editVariables (in every environment) will do.
      const included = await asPat("PUT", "/api/v1/projects/shop/variable-sets", { sets: ["common", "extra"] });
      expect(included.status, included.text).toBe(200);
      const unknown = await asPat("PUT", "/api/v1/projects/shop/variable-sets", { sets: ["common", "nope"] });
      expect(unknown.status).toBe(400);
      expect(unknown.text).toContain("no variable set 'nope'");

      // A set that projects include cannot be deleted under them.
      const inUse = await api("DELETE", "/api/v1/variable-sets/extra");
      expect(inUse.status).toBe(409);
      expect(inUse.text).toContain("variable set 'extra' is included by project 'shop'");
    },
    MANY_RUNS_MS,
  );

  it.sequential(
    "manages sets from the CLI: create, add a value, include it, and the preview follows",
    async () => {
      expectSuccess(await ferry(["varset", "create", "Ops", "--description", "operations"]));
      expectSuccess(await ferry(["varset", "var", "create", "--set", "ops", "Greeting", "hello-from-ops"]));
      const secret = await ferry(["varset", "var", "create", "--set", "ops", "Pin", "1234", "--sensitive"]);
      expect(secret.code).not.toBe(0);
      expect(secret.stderr).toContain("--value-stdin");
      expectSuccess(await ferry(["varset", "include", "--project", "shop", "common", "extra", "ops"]));
      const shown = await ferry(["varset", "include", "--project", "shop"]);
      expectSuccess(shown);
      expect(shown.stdout).toBe("shop includes, first first: common, extra, ops\n");
      expect(valuesOf(await preview(["--env", "dev"])).Greeting).toBe("hello-from-ops");
      const listed = await ferry(["varset", "list"]);
      expectSuccess(listed);
      expect(listed.stdout).toMatch(/^ops +Ops +operations$/m);
      expectSuccess(await ferry(["varset", "include", "--project", "shop", "common", "extra"]));
      expectSuccess(await ferry(["varset", "delete", "ops"]));
      expect(valuesOf(await preview(["--env", "dev"])).Greeting).toBeUndefined();
    },
    MANY_RUNS_MS,
  );
});
