import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
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
import { pushTestImage, startRegistry, type TestRegistry } from "./helpers/registry.js";

/**
 * Release diff (issue 16 part 5), end to end: a real registry (Debian's docker-registry)
 * whose tags the releases pin by digest, the real `bin/ferry` and `ferry server` on SQLite
 * and PostgreSQL. Between two releases the image's digest, a step, a variable and a secret
 * change; the diff shows each, and never a secret's value.
 */

const { makeTemporaryDirectory, startServerInNewHome, cleanUp } = trackedResources("ferry-release-diff-e2e-");

const OLD_SECRET = "old-secret-value-4711";
const NEW_SECRET = "new-secret-value-0815";

const file = (registryUrl: string, greeting: string, script: string, extraStep = "") => `
project: { name: shop }
environments: [dev]
lifecycle:
  name: shop
  phases:
    - environments: [dev]
feeds:
  - name: local
    url: ${registryUrl}
images:
  - name: web
    feed: local
    repository: demo/shop
    version: { semver: ">=1.0.0" }
variables:
  - name: Greeting
    value: ${greeting}
  - name: Greeting
    value: Hello prod-like dev
    scope: { environments: [dev] }
  - name: ApiToken
    sensitive: true
    valueFrom: { env: API_TOKEN }
steps:
  - name: Say hello
    kind: script
    config:
      script: ${script}
${extraStep}`;

const SMOKE_STEP = `  - name: Smoke test
    kind: script
    required: false
    config:
      script: echo smoke
`;

let registry: TestRegistry;
const digests: Record<string, string> = {};

beforeAll(async () => {
  registry = await startRegistry();
  for (const tag of ["1.0.0", "1.1.0"]) {
    digests[tag] = await pushTestImage(registry.url, "demo/shop", tag, { content: `shop ${tag}` });
  }
}, 120_000);

afterAll(async () => {
  await cleanUp();
  await registry?.stop();
});

// The dialects run side by side, each on its own server and database (the tests of one
// dialect still in order): the file waits mostly on processes and I/O, not the CPU.
describe.each(["sqlite", "postgres"] as const)("ferry release diff on %s", { concurrent: true }, (dialect) => {
  const adminKey = testAdminKey();
  let server: FerryServer;
  let home: string;
  let directory: string;
  let dropDatabase: (() => Promise<void>) | undefined;

  const ferry = (args: string[], token = OLD_SECRET): Promise<CliResult> =>
    runFerry(args, isolatedEnv(home, { FERRY_URL: server.url, FERRY_API_KEY: adminKey, API_TOKEN: token }), {
      timeoutMs: 60_000,
    });
  const apply = async (text: string, ...args: string[]) => {
    const path = join(directory, "ferry.yml");
    await writeFile(path, text);
    return ferry(
      ["apply", "-f", path, ...args.filter((arg) => arg !== NEW_SECRET)],
      args.includes(NEW_SECRET) ? NEW_SECRET : OLD_SECRET,
    );
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

    expectSuccess(await apply(file(registry.url, "Hello", "echo one")));
    expectSuccess(
      await ferry([
        "release",
        "create",
        "--project",
        "shop",
        "--version",
        "1.0.0",
        "--image",
        "web=1.0.0",
        "--notes",
        "first",
      ]),
    );
    // The next release: a new image, a changed and an added step, a changed value, a rotated secret.
    expectSuccess(await apply(file(registry.url, "Hi", "echo two", SMOKE_STEP), "--update-secrets", NEW_SECRET));
    expectSuccess(
      await ferry([
        "release",
        "create",
        "--project",
        "shop",
        "--version",
        "1.1.0",
        "--image",
        "web=1.1.0",
        "--notes",
        "second",
      ]),
    );
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
    await dropDatabase?.();
  });

  it.sequential("shows the digest change, the steps field by field, the variables and the notes", async () => {
    const result = await ferry(["release", "diff", "--project", "shop", "1.0.0", "1.1.0"]);
    expectSuccess(result);
    expect(result.stdout).toBe(
      [
        "Release diff of shop: 1.0.0 → 1.1.0",
        "",
        "Images:",
        `  ~ web  demo/shop:1.0.0@${digests["1.0.0"]} → demo/shop:1.1.0@${digests["1.1.0"]}`,
        "",
        "Steps:",
        "  ~ Say hello (script)",
        '      config.script: "echo one" → "echo two"',
        "  + Smoke test (script)",
        "",
        "Variables:",
        "  ~ ApiToken: changed (sensitive, not shown)",
        '  ~ Greeting: "Hello" → "Hi"',
        "",
        "Notes:",
        '  "first" → "second"',
        "",
      ].join("\n"),
    );
    for (const secret of [OLD_SECRET, NEW_SECRET]) expect(result.stdout + result.stderr).not.toContain(secret);
  });

  it.sequential("answers the same in JSON (the API), without any secret value", async () => {
    const result = await ferry(["release", "diff", "--project", "shop", "1.0.0", "1.1.0", "--json"]);
    expectSuccess(result);
    const diff = parseJson<Record<string, unknown>>(result);
    expect(diff.images).toEqual([
      {
        name: "web",
        change: "changed",
        from: { repository: "demo/shop", tag: "1.0.0", digest: digests["1.0.0"] },
        to: { repository: "demo/shop", tag: "1.1.0", digest: digests["1.1.0"] },
      },
    ]);
    expect(diff.variables).toEqual([
      { name: "ApiToken", scope: { environments: [], roles: [], targets: [] }, change: "changed", sensitive: true },
      {
        name: "Greeting",
        scope: { environments: [], roles: [], targets: [] },
        change: "changed",
        sensitive: false,
        from: "Hello",
        to: "Hi",
      },
    ]);
    for (const secret of [OLD_SECRET, NEW_SECRET]) expect(result.stdout).not.toContain(secret);
  });

  it.sequential("shows nothing changed between a release and itself, and names a release that does not exist", async () => {
    const same = await ferry(["release", "diff", "--project", "shop", "1.1.0", "1.1.0", "--json"]);
    expectSuccess(same);
    expect(parseJson<Record<string, unknown>>(same)).toEqual({
      project: "shop",
      from: "1.1.0",
      to: "1.1.0",
      images: [],
      steps: [],
      variables: [],
      notes: null,
    });
    const missing = await ferry(["release", "diff", "--project", "shop", "1.0.0", "9.9.9"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("project 'shop' has no release '9.9.9'");
  });

  it.sequential("compares a release alone with the one made before it, and says the first has none", async () => {
    const alone = await ferry(["release", "diff", "--project", "shop", "1.1.0", "--json"]);
    const both = await ferry(["release", "diff", "--project", "shop", "1.0.0", "1.1.0", "--json"]);
    expectSuccess(alone);
    expectSuccess(both);
    expect(parseJson(alone)).toEqual(parseJson(both));
    const first = await ferry(["release", "diff", "--project", "shop", "1.0.0"]);
    expect(first.code).toBe(1);
    expect(first.stderr).toContain("release 1.0.0 is the first of project 'shop': nothing came before it");
  });
});
