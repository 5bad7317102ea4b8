import { createServer, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dialects } from "./helpers/databases.js";
import { pushTestImage, startRegistry, type TestRegistry } from "./helpers/registry.js";
import { startTestServerOn, type TestServer, taskLogText } from "./helpers/server.js";

/**
 * An installation upgraded past the move of patterns to RE2 (ADR 0026, 0064): version rules
 * and http-test `bodyMatches` saved when they ran on JavaScript's RegExp may use what RE2
 * cannot run (lookaround, backreferences). Such a pattern is refused when saved now, but the
 * stored process, the releases that froze it and runbooks that carry it must still load; the
 * pattern fails only where it is used, naming the field and saying what to do (ADR 0073).
 *
 * The old definitions are written straight into the database, as the upgrade left them.
 * Real server, real registry, real HTTP check; SQLite and PostgreSQL side by side.
 */

/** Valid for RegExp (1.0.1, 1.0.2, not 1.0.0), refused by RE2: a lookahead. */
const LEGACY_RULE = "1\\.0\\.(?!0)\\d+";
/** Valid for RegExp ("abab"), refused by RE2: a backreference. */
const LEGACY_BODY = "(ab)\\1";

interface Problem {
  detail: string;
  errors?: { pointer: string; detail: string }[];
}

type Json = Record<string, unknown>;

/** The process as the old code saved it: the image's rule and the check's pattern replaced. */
function legacyProcess(process: Json): Json {
  const images = (process.images as Json[]).map((image) => ({
    ...image,
    version: { kind: "regex", pattern: LEGACY_RULE },
  }));
  const steps = (process.steps as Json[]).map((step) =>
    step.kind === "http-test"
      ? {
          ...step,
          config: {
            ...(step.config as Json),
            assertions: { ...((step.config as Json).assertions as Json), bodyMatches: LEGACY_BODY },
          },
        }
      : step,
  );
  return { ...process, images, steps };
}

describe.each(dialects)("definitions saved before patterns ran on RE2 (%s)", { concurrent: true }, (dialect) => {
  let test: TestServer;
  let registry: TestRegistry;
  let app: Server;
  let triggerId = "";
  const hookSecret = "the-legacy-hook-secret";

  const ok = async <T = Json>(method: string, path: string, body?: unknown) => {
    const response = await test.call<T>(method, path, body);
    expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
    return response.body;
  };

  beforeAll(async () => {
    registry = await startRegistry();
    for (const tag of ["1.0.0", "1.0.1", "1.0.2"]) {
      await pushTestImage(registry.url, "legacy/app", tag, { content: `version ${tag}` });
    }
    // What the http-test checks: a body RE2 and RegExp would both find "abab" in.
    app = createServer((_request, response) => response.end("ready abab\n"));
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    const address = app.address();
    if (!address || typeof address === "string") throw new Error("no port");

    test = await startTestServerOn(dialect);
    await ok("POST", "/api/v1/environments", { name: "dev" });
    await ok("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["dev"] }] });
    await ok("POST", "/api/v1/projects", { name: "shop", lifecycle: "one" });
    await ok("POST", "/api/v1/feeds", { name: "local", url: registry.url });
    const process = {
      images: [
        { name: "web", feed: "local", repository: "legacy/app", version: { kind: "regex", pattern: "1\\.0\\.\\d+" } },
      ],
      steps: [
        { name: "before", kind: "script", config: { script: "echo before the check ran" } },
        {
          name: "check",
          kind: "http-test",
          config: { url: `http://127.0.0.1:${address.port}/`, assertions: { bodyMatches: "ready" } },
        },
      ],
    };
    await ok("PUT", "/api/v1/projects/shop/process", process);
    await ok("POST", "/api/v1/projects/shop/releases", { version: "1.0.0" });
    await ok("POST", "/api/v1/projects/shop/runbooks", { name: "smoke", environments: ["dev"], process });
    await ok("POST", "/api/v1/projects/shop/runbooks/smoke/publish");
    const trigger = await ok<{ id: string }>("POST", "/api/v1/projects/shop/triggers", {
      name: "pushes",
      image: "web",
      secret: hookSecret,
      pollSeconds: null,
    });
    triggerId = trigger.id;

    // The upgrade: what the old code saved, as it lies in the database.
    const { db } = test.server.context;
    const project = await db
      .selectFrom("projects")
      .select(["id", "process"])
      .where("slug", "=", "shop")
      .executeTakeFirstOrThrow();
    await db
      .updateTable("projects")
      .set({ process: JSON.stringify(legacyProcess(JSON.parse(project.process))) })
      .where("id", "=", project.id)
      .execute();
    const release = await db
      .selectFrom("releases")
      .select(["id", "snapshot"])
      .where("project_id", "=", project.id)
      .executeTakeFirstOrThrow();
    const releaseSnapshot = JSON.parse(release.snapshot) as Json;
    releaseSnapshot.process = legacyProcess(releaseSnapshot.process as Json);
    await db
      .updateTable("releases")
      .set({ snapshot: JSON.stringify(releaseSnapshot) })
      .where("id", "=", release.id)
      .execute();
    const runbook = await db
      .selectFrom("runbooks")
      .selectAll()
      .where("project_id", "=", project.id)
      .executeTakeFirstOrThrow();
    const draft = JSON.parse(runbook.draft) as Json;
    draft.process = legacyProcess(draft.process as Json);
    await db
      .updateTable("runbooks")
      .set({ draft: JSON.stringify(draft) })
      .where("id", "=", runbook.id)
      .execute();
    const published = await db
      .selectFrom("runbook_snapshots")
      .selectAll()
      .where("id", "=", String(runbook.published_snapshot_id))
      .executeTakeFirstOrThrow();
    const runbookSnapshot = JSON.parse(published.snapshot) as { definition: Json };
    runbookSnapshot.definition.process = legacyProcess(runbookSnapshot.definition.process as Json);
    await db
      .updateTable("runbook_snapshots")
      .set({ snapshot: JSON.stringify(runbookSnapshot) })
      .where("id", "=", published.id)
      .execute();
  });
  afterAll(async () => {
    await test?.close();
    await registry?.stop();
    await new Promise((resolve) => app?.close(resolve));
  });

  it.sequential("loads the project, its process, its releases and its runbooks as they were saved", async () => {
    expect(((await ok("GET", "/api/v1/projects/shop")) as { slug: string }).slug).toBe("shop");
    const process = await ok<{ images: { version: unknown }[]; steps: { config: Json }[] }>(
      "GET",
      "/api/v1/projects/shop/process",
    );
    expect(process.images[0]?.version).toEqual({ kind: "regex", pattern: LEGACY_RULE });
    expect(process.steps[1]?.config.assertions).toMatchObject({ bodyMatches: LEGACY_BODY });
    const releases = await ok<{ items: { version: string }[] }>("GET", "/api/v1/projects/shop/releases");
    expect(releases.items.map((release) => release.version)).toEqual(["1.0.0"]);
    const release = await ok<{ images: { tag: string }[] }>("GET", "/api/v1/projects/shop/releases/1.0.0");
    expect(release.images.map((image) => image.tag)).toEqual(["1.0.2"]);
    const runbook = await ok<{ process: { images: { version: unknown }[] } }>(
      "GET",
      "/api/v1/projects/shop/runbooks/smoke",
    );
    expect(runbook.process.images[0]?.version).toEqual({ kind: "regex", pattern: LEGACY_RULE });
    expect(await ok<unknown[]>("GET", "/api/v1/projects/shop/runbooks")).toHaveLength(1);
  });

  it.sequential("still refuses to save those patterns, naming the fields", async () => {
    const process = await ok<Json>("GET", "/api/v1/projects/shop/process");
    const refused = await test.call<Problem>("PUT", "/api/v1/projects/shop/process", process);
    expect(refused.status).toBe(400);
    const pointers = (refused.body.errors ?? []).map((issue) => issue.pointer);
    expect(pointers).toContain("/images/0/version/pattern");
  });

  it.sequential("a release that picks a tag by the rule fails naming the rule; one that names its tag is made", async () => {
    const refused = await test.call<Problem>("POST", "/api/v1/projects/shop/releases", { version: "1.1.0" });
    expect(refused.status).toBe(400);
    expect(refused.body.errors).toEqual([
      {
        pointer: "/images/web",
        detail: expect.stringMatching(
          /^the version rule's pattern .* was saved before patterns ran on RE2: lookahead and lookbehind .* are not supported.*; rewrite the image's version rule where it is defined \(the project's process or the runbook\), or name the tag: images: \{ web: TAG \}$/,
        ),
      },
    ]);
    const made = await ok<{ images: { tag: string }[] }>("POST", "/api/v1/projects/shop/releases", {
      version: "1.1.0",
      images: { web: "1.0.1" },
    });
    expect(made.images.map((image) => image.tag)).toEqual(["1.0.1"]);
  });

  it.sequential("a registry notification for the image is answered naming the rule", async () => {
    expect((await ok<{ items: unknown[] }>("GET", "/api/v1/projects/shop/triggers")).items).toHaveLength(1);
    const response = await fetch(new URL(`/api/v1/hooks/registry/${triggerId}`, test.server.url), {
      method: "POST",
      headers: {
        authorization: `Bearer ${hookSecret}`,
        "content-type": "application/vnd.docker.distribution.events.v1+json",
      },
      body: JSON.stringify({ events: [{ action: "push", target: { repository: "legacy/app", tag: "1.0.2" } }] }),
    });
    expect(response.status).toBe(400);
    const problem = (await response.json()) as Problem;
    expect(problem.errors?.map((issue) => issue.pointer)).toEqual(["/images/web"]);
    expect(problem.detail).toMatch(/^the version rule of image 'web' cannot pick a tag: lookahead and lookbehind/);
  });

  it.sequential("a deployment of the old release fails at the check, naming bodyMatches and what to do", async () => {
    const plan = await ok<{ steps: { name: string; actions: string[] }[] }>(
      "GET",
      "/api/v1/projects/shop/plan?release=1.0.0&environment=dev",
    );
    expect(plan.steps.map((step) => step.name)).toEqual(["before", "check"]);
    expect(plan.steps[1]?.actions).toEqual([
      expect.stringMatching(
        /^error: the http-test step's config was saved before a check it now fails: config \/assertions\/bodyMatches: backreferences/,
      ),
    ]);
    const queued = await ok<{ taskId: string }>("POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "dev",
    });
    expect((await test.waitForTask(queued.taskId, 60_000)).state).toBe("failed");
    const log = await taskLogText(test.call, queued.taskId);
    expect(log).toContain("before the check ran");
    expect(log).toMatch(
      /step 'check' failed: the http-test step's config was saved before a check it now fails: config \/assertions\/bodyMatches: backreferences such as \\1 .* are not supported.*; fix the step where it is defined .*, then create a new release or publish the runbook again/,
    );
  });

  it.sequential("a run of the published runbook fails at the check the same way", async () => {
    const created = await ok<{ taskId: string }>("POST", "/api/v1/projects/shop/runbooks/smoke/runs", {
      environment: "dev",
    });
    expect((await test.waitForTask(created.taskId, 60_000)).state).toBe("failed");
    const log = await taskLogText(test.call, created.taskId);
    expect(log).toContain("before the check ran");
    expect(log).toMatch(
      /step 'check' failed: the http-test step's config was saved before a check it now fails: config \/assertions\/bodyMatches: backreferences/,
    );
  });
});
