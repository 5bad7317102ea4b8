import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appliedServer, type VariablePreview } from "./helpers/appliedServer.js";
import { expectSuccess, parseJson, trackedResources } from "./helpers/cli.js";

/**
 * Variable preview (issue 16 part 3), end to end through the real `bin/ferry` and `ferry
 * server` on SQLite and PostgreSQL: `ferry vars show` before any release, then a real
 * deployment whose script prints what it got on each target — the preview must be exactly that.
 */

const resources = trackedResources("ferry-vars-e2e-");

afterAll(async () => {
  await resources.cleanUp();
});

/** A test of many CLI runs one after another: on a loaded machine (two cores, shared) it takes minutes. */
const MANY_RUNS_MS = 180_000;

const SECRET = "preview-secret-value-123";

const FILE = `
project: { name: shop }
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
variables:
  # One name scoped four ways: project, environment, role, target.
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
  - name: Port
    value: "80"
  - name: Port
    value: "5432"
    scope: { roles: [db] }
  - name: Secret
    sensitive: true
    valueFrom: { env: SHOP_SECRET }
steps:
  - name: Print
    kind: script
    roles: [web, db]
    config:
      script: echo "seen target=$TARGET where=$WHERE port=$PORT secret=$SECRET"
      env:
        TARGET: "#{Ferry.Target.Name}"
        WHERE: "#{Where}"
        PORT: "#{Port}"
        SECRET: "#{Secret}"
`;

interface Preview extends VariablePreview {
  target: string | null;
}

describe.each(["sqlite", "postgres"] as const)("ferry vars show on %s", (dialect) => {
  const shop = appliedServer(resources, { dialect, file: FILE, env: { SHOP_SECRET: SECRET } });
  const { ferry, valuesOf } = shop;
  const preview = shop.preview<Preview>;

  beforeAll(shop.start);
  afterAll(shop.stop);

  it("shows each effective value and the scope that won, before any release exists", async () => {
    const result = await ferry(["vars", "show", "--project", "shop", "--env", "prod", "--target", "web-2"]);
    expectSuccess(result);
    expect(result.stdout.split("\n").slice(0, 1)).toEqual(["Variables of shop in prod on target web-2:"]);
    expect(result.stdout).toMatch(/^Port +80 +project: unscoped$/m);
    expect(result.stdout).toMatch(/^Secret +\*{8} \(sensitive\) +project: unscoped$/m);
    expect(result.stdout).toMatch(/^Where +from-role +role: roles web$/m);
    expect(result.stdout).toMatch(/^Ferry\.Target\.Name +web-2 +system$/m);
    expect(result.stdout + result.stderr).not.toContain(SECRET);

    expect(valuesOf(await preview(["--env", "dev"]))).toEqual({
      Port: "80",
      Secret: "********",
      Where: "from-project",
    });
    expect(valuesOf(await preview(["--env", "prod"]))).toEqual({
      Port: "80",
      Secret: "********",
      Where: "from-environment",
    });
  });

  it("explains every candidate of a variable and why it lost", async () => {
    const result = await ferry([
      "vars",
      "show",
      "--project",
      "shop",
      "--env",
      "prod",
      "--target",
      "web-1",
      "--explain",
      "Where",
    ]);
    expectSuccess(result);
    expect(result.stdout).toContain("Where in prod on target web-1 = from-target (won by its target scope)\n");
    const verdicts = result.stdout
      .split("\n")
      .filter((line) => /^ {2}\S/.test(line))
      .map((line) => line.trim().replace(/ {2,}/g, " | "));
    expect(verdicts).toEqual([
      "outranked | unscoped | from-project",
      "outranked | environments prod | from-environment",
      "outranked | roles web | from-role",
      "won | targets web-1 | from-target",
    ]);
    expect(result.stdout).toContain(
      "applies, but a target-scoped value is more specific than this role-scoped one (step > target > role > environment > project)",
    );
    const onDatabase = await ferry(["vars", "show", "--project", "shop", "--env", "dev", "--explain", "Where"]);
    expectSuccess(onDatabase);
    expect(onDatabase.stdout).toContain("scoped to other environments");
    expect(onDatabase.stdout).toContain("scoped to target roles, and no target is in question here");
  });

  it(
    "matches what a deployment's script actually saw on each target",
    async () => {
      const log = await shop.deploymentLog("1.0.0", "prod");
      const seen = [...log.matchAll(/seen target=(\S+) where=(\S+) port=(\S+) secret=(\S+)/g)].map((match) => ({
        target: match[1],
        values: { Where: match[2], Port: match[3], Secret: match[4] },
      }));
      expect(seen.map((item) => item.target).sort()).toEqual(["db-1", "web-1", "web-2"]);
      expect(log).not.toContain(SECRET);
      for (const { target, values } of seen) {
        const shown = await preview(["--env", "prod", "--target", target ?? "", "--step", "Print"]);
        expect(valuesOf(shown), `target ${target}`).toEqual(values);
        const ofRelease = await preview([
          "--env",
          "prod",
          "--target",
          target ?? "",
          "--step",
          "Print",
          "--release",
          "1.0.0",
        ]);
        expect(valuesOf(ofRelease), `target ${target}, release 1.0.0`).toEqual(values);
        expect(ofRelease.variables.find((variable) => variable.name === "Ferry.Release.Number")?.value).toBe("1.0.0");
      }
      // The variables change after the release: the preview follows, the release's snapshot does not.
      const updated = await ferry(["var", "update", "--project", "shop", "Port", "--value", "81"]);
      expect(updated.code, updated.stderr).not.toBe(0); // two variables are named Port: refer to one by id
      const ports = parseJson<{ id: string; name: string; scope: { roles: string[] } }[]>(
        await ferry(["var", "list", "--project", "shop", "--json"]),
      ).filter((variable) => variable.name === "Port");
      const unscopedPort = ports.find((variable) => variable.scope.roles.length === 0);
      expectSuccess(await ferry(["var", "update", "--project", "shop", unscopedPort?.id ?? "", "--value", "81"]));
      expect(valuesOf(await preview(["--env", "prod", "--target", "web-2"])).Port).toBe("81");
      expect(valuesOf(await preview(["--env", "prod", "--target", "web-2", "--release", "1.0.0"])).Port).toBe("80");
      // Each scope won somewhere: target on web-1, role on web-2, environment on db-1 (and role for its Port).
      expect(Object.fromEntries(seen.map((item) => [item.target, item.values.Where]))).toEqual({
        "web-1": "from-target",
        "web-2": "from-role",
        "db-1": "from-environment",
      });
    },
    MANY_RUNS_MS,
  );

  it("refuses a target outside the environment and a step the process does not have, naming what there is", async () => {
    const target = await ferry(["vars", "show", "--project", "shop", "--env", "dev", "--target", "db-1"]);
    expect(target.code).toBe(1); // the server refused it (exit 2 is for a command line the CLI cannot read)
    expect(target.stderr).toContain("target 'db-1' is not in environment 'dev'");
    expect(target.stderr).toContain("name one of its targets: web-1");
    const step = await ferry(["vars", "show", "--project", "shop", "--env", "dev", "--step", "Deploy"]);
    expect(step.code).toBe(1);
    expect(step.stderr).toContain("project 'shop' has no step 'Deploy'");
    expect(step.stderr).toContain("name one of its steps: Print");
  });
});
