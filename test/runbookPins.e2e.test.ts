import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callExpecting } from "./helpers/api.js";
import { dialects } from "./helpers/databases.js";
import { pushTestImage, startRegistry, type TestRegistry } from "./helpers/registry.js";
import { startTestServerOn, type TestServer } from "./helpers/server.js";

/**
 * Issue 14 part 1, ADR 0068: a published runbook version pins the image (by digest) and
 * package (by sha256) versions of its process at publish time; its runs and its schedules'
 * firings use those whatever is pushed later, a draft run resolves them when it is
 * requested, and a package version a published runbook pins cannot be deleted. A real
 * registry (Debian's docker-registry), the built-in package feed, a real server with its
 * task engine, a `package` step unpacking on the server's host; SQLite and PostgreSQL.
 */

type Body = Record<string, unknown>;

interface RunAnswer {
  runId: string;
  taskId: string;
  version: number | null;
  images: { name: string; tag: string; digest: string }[];
  packages: { name: string; version: string; sha256: string }[];
}

describe.each(dialects)("runbook versions pin images and packages (%s)", (dialect) => {
  let test: TestServer;
  let registry: TestRegistry;
  let work: string;
  const digests: Record<string, string> = {};

  function admin<T = Body>(method: string, path: string, body?: unknown, status?: number): Promise<T> {
    return callExpecting<T>(test, method, path, body, status);
  }

  async function logOf(taskId: string): Promise<string> {
    const page = await admin<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`);
    return page.lines.map((line) => line.text).join("\n");
  }

  /** Pushes a tar.gz whose version.txt says `text`, as `ferry package push` does. */
  async function pushPackage(version: string, text: string): Promise<string> {
    const directory = join(work, `toolkit-${version}`);
    mkdirSync(directory, { recursive: true });
    writeFileSync(join(directory, "version.txt"), `${text}\n`);
    const file = join(work, `toolkit-${version}.tar.gz`);
    execFileSync("tar", ["-czf", file, "-C", directory, "."]);
    const response = await fetch(new URL(`/api/v1/packages/toolkit/versions/${version}`, test.server.url), {
      method: "PUT",
      headers: { authorization: `Bearer ${test.apiKey}`, "content-type": "application/octet-stream" },
      body: readFileSync(file),
    });
    const body = (await response.json()) as { sha256: string };
    expect(response.status, JSON.stringify(body)).toBe(201);
    return body.sha256;
  }

  async function run(body: Body): Promise<{ answer: RunAnswer; state: unknown; log: string }> {
    const answer = await admin<RunAnswer>("POST", "/api/v1/projects/ops/runbooks/inspect/runs", body, 201);
    const task = await test.waitForTask(answer.taskId, 60_000);
    return { answer, state: task.state, log: await logOf(answer.taskId) };
  }

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "ferry-runbook-pins-"));
    registry = await startRegistry();
    for (const tag of ["1.0.0", "1.1.0"]) {
      digests[tag] = await pushTestImage(registry.url, "demo/tool", tag, { content: `tool ${tag}` });
    }
    test = await startTestServerOn(dialect);
    await admin("POST", "/api/v1/environments", { name: "prod" });
    await admin("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["prod"] }] });
    await admin("POST", "/api/v1/projects", { name: "ops", lifecycle: "one" });
    await admin("POST", "/api/v1/feeds", { name: "local", url: registry.url });
  }, 90_000);

  afterAll(async () => {
    await test?.close();
    await registry?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("runs and schedules use the versions pinned at publish; a draft run resolves them when requested", async () => {
    const firstSha = await pushPackage("1.0.0", "toolkit one");
    await admin(
      "POST",
      "/api/v1/projects/ops/runbooks",
      {
        name: "Inspect",
        process: {
          images: [{ name: "tool", feed: "local", repository: "demo/tool" }],
          packages: [{ name: "toolkit" }],
          steps: [
            { name: "unpack", kind: "package", config: { package: "toolkit" } },
            {
              name: "show",
              kind: "script",
              config: {
                script: 'echo "tag=$TAG image=$IMAGE package=$PACKAGE says=$(cat "$DIRECTORY/version.txt")"',
                env: {
                  TAG: "#{Ferry.Image[tool].Tag}",
                  IMAGE: "#{Ferry.Image[tool]}",
                  PACKAGE: "#{Ferry.Package[toolkit].Version}",
                  DIRECTORY: "#{Ferry.Step[unpack].Output.directory}",
                },
              },
            },
          ],
        },
      },
      201,
    );
    // Publish with the image's tag chosen (as a release's may be), the package's the newest.
    const published = await admin<{ published: Body }>("POST", "/api/v1/projects/ops/runbooks/inspect/publish", {
      images: { tool: "1.0.0" },
    });
    const host = new URL(registry.url).host;
    expect(published.published).toMatchObject({
      version: 1,
      images: [
        { name: "tool", tag: "1.0.0", digest: digests["1.0.0"], reference: `${host}/demo/tool@${digests["1.0.0"]}` },
      ],
      packages: [{ name: "toolkit", version: "1.0.0", sha256: firstSha }],
    });

    // Newer versions arrive after the publish: version 1 keeps its own.
    await pushPackage("1.1.0", "toolkit two");
    const first = await run({ environment: "prod" });
    expect(first.state, first.log).toBe("succeeded");
    expect(first.answer).toMatchObject({
      version: 1,
      images: [{ name: "tool", tag: "1.0.0", digest: digests["1.0.0"] }],
      packages: [{ name: "toolkit", version: "1.0.0", sha256: firstSha }],
    });
    expect(first.log).toContain(`tag=1.0.0 image=${host}/demo/tool@${digests["1.0.0"]} package=1.0.0 says=toolkit one`);

    // A draft run resolves the versions when it is requested: the latest tag, the newest package.
    const draft = await run({ environment: "prod", draft: true });
    expect(draft.state, draft.log).toBe("succeeded");
    expect(draft.answer).toMatchObject({
      version: null,
      images: [{ name: "tool", tag: "1.1.0", digest: digests["1.1.0"] }],
      packages: [{ name: "toolkit", version: "1.1.0" }],
    });
    expect(draft.log).toContain("tag=1.1.0");
    expect(draft.log).toContain("package=1.1.0 says=toolkit two");

    // A schedule fires the published version, with its pinned versions.
    const schedules = "/api/v1/projects/ops/runbooks/inspect/schedules";
    await admin("POST", schedules, { name: "often", environment: "prod", cron: "*/2 * * * * *" }, 201);
    let scheduled: { taskId: string; version: number | null } | undefined;
    for (let attempt = 0; attempt < 150 && !scheduled; attempt += 1) {
      const runs = await admin<{ taskId: string; version: number | null; cause: string | null }[]>(
        "GET",
        "/api/v1/projects/ops/runbooks/inspect/runs",
      );
      scheduled = runs.find((candidate) => candidate.cause === "schedule often");
      if (!scheduled) await sleep(200);
    }
    await admin("POST", `${schedules}/often/pause`);
    expect(scheduled, "a firing of schedule often").toBeDefined();
    expect(scheduled?.version).toBe(1);
    const firing = await test.waitForTask(String(scheduled?.taskId), 60_000);
    const firingLog = await logOf(String(scheduled?.taskId));
    expect(firing.state, firingLog).toBe("succeeded");
    expect(firingLog).toContain("tag=1.0.0");
    expect(firingLog).toContain("package=1.0.0 says=toolkit one");
    await admin("DELETE", `${schedules}/often`, undefined, 204);

    // The version a published runbook pins cannot be deleted from the feed.
    const refused = await test.call<Body>("DELETE", "/api/v1/packages/toolkit/versions/1.0.0");
    expect(refused.status).toBe(409);
    expect(String(refused.body.detail)).toContain("the published version of runbook ops/inspect");

    // A choice the process does not have is refused, naming the field; nothing is published.
    const unknown = await test.call<Body>("POST", "/api/v1/projects/ops/runbooks/inspect/publish", {
      packages: { other: "1.0.0" },
    });
    expect(unknown.status).toBe(400);
    expect(JSON.stringify(unknown.body)).toContain("/packages/other");
    const missing = await test.call<Body>("POST", "/api/v1/projects/ops/runbooks/inspect/publish", {
      packages: { toolkit: "9.9.9" },
    });
    expect(missing.status).toBe(400);
    expect(JSON.stringify(missing.body)).toContain("/packages/toolkit");

    // Publishing again (nothing chosen) pins the newest: the old version is free to go.
    const second = await admin<{ published: Body }>("POST", "/api/v1/projects/ops/runbooks/inspect/publish");
    expect(second.published).toMatchObject({
      version: 2,
      images: [{ tag: "1.1.0", digest: digests["1.1.0"] }],
      packages: [{ version: "1.1.0" }],
    });
    await admin("DELETE", "/api/v1/packages/toolkit/versions/1.0.0", undefined, 204);
    const latest = await run({ environment: "prod" });
    expect(latest.state, latest.log).toBe("succeeded");
    expect(latest.log).toContain("tag=1.1.0");
    expect(latest.log).toContain("package=1.1.0 says=toolkit two");
  }, 180_000);
});
