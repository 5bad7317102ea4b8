import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pushTestImage, startRegistry } from "./helpers/registry.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

describe("images pinned by digest at release creation (real registry)", () => {
  let test: TestServer;
  let registry: Awaited<ReturnType<typeof startRegistry>>;
  const auth = { username: "ci", password: "registry-canary-pass" };
  const digests: Record<string, string> = {};

  const deployAndRead = async (version: string) => {
    const queued = await test.call<{ taskId: string }>("POST", "/api/v1/projects/app/deployments", {
      release: version,
      environment: "dev",
    });
    expect(queued.status).toBe(201);
    expect((await test.waitForTask(queued.body.taskId)).state).toBe("succeeded");
    const log = await test.call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${queued.body.taskId}/log`);
    return log.body.lines.map((line) => line.text).join("\n");
  };

  beforeAll(async () => {
    registry = await startRegistry({ auth });
    for (const tag of ["1.0.1", "1.0.2", "2.0.0-rc.1"]) {
      digests[tag] = await pushTestImage(registry.url, "demo/app", tag, { content: `version ${tag}`, auth });
    }
    test = await startTestServer();
    await test.call("POST", "/api/v1/environments", { name: "dev" });
    await test.call("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["dev"] }] });
    await test.call("POST", "/api/v1/projects", { name: "app", lifecycle: "one" });
    await test.call("POST", "/api/v1/feeds", { name: "local", url: registry.url, ...auth });
    const process = await test.call("PUT", "/api/v1/projects/app/process", {
      images: [{ name: "web", feed: "local", repository: "demo/app", version: { kind: "semver", range: "^1.0.0" } }],
      steps: [
        {
          name: "show",
          kind: "script",
          config: {
            script: 'echo "image=$IMAGE tag=$TAG"',
            env: { IMAGE: "#{Ferry.Image[web]}", TAG: "#{Ferry.Image[web].Tag}" },
          },
        },
      ],
    });
    expect(process.status).toBe(200);
  });
  afterAll(async () => {
    await test?.close();
    await registry?.stop();
  });

  it("picks the latest tag matching the rule and pins its digest", async () => {
    const release = await test.call<{ images: { name: string; tag: string; digest: string; reference: string }[] }>(
      "POST",
      "/api/v1/projects/app/releases",
      { version: "1.0.0" },
    );
    expect(release.status).toBe(201);
    const host = new URL(registry.url).host;
    expect(release.body.images).toEqual([
      { name: "web", tag: "1.0.2", digest: digests["1.0.2"], reference: `${host}/demo/app@${digests["1.0.2"]}` },
    ]);
  });

  it("keeps deploying the pinned digest after the tag is pushed again with other content", async () => {
    const release = await test.call<{ images: { digest: string }[] }>("POST", "/api/v1/projects/app/releases", {
      version: "1.1.0",
      images: { web: "1.0.1" },
    });
    expect(release.body.images[0]?.digest).toBe(digests["1.0.1"]);
    const moved = await pushTestImage(registry.url, "demo/app", "1.0.1", { content: "something else", auth });
    expect(moved).not.toBe(digests["1.0.1"]);
    const text = await deployAndRead("1.1.0");
    expect(text).toContain(`@${digests["1.0.1"]} tag=1.0.1`);
    expect(text).not.toContain(moved);
  });

  it("refuses a release when no tag matches or the image name is unknown", async () => {
    await test.call("PUT", "/api/v1/projects/app/process", {
      images: [{ name: "web", feed: "local", repository: "demo/app", version: { kind: "semver", range: "^3.0.0" } }],
      steps: [],
    });
    const none = await test.call<{ errors: { pointer: string }[] }>("POST", "/api/v1/projects/app/releases", {
      version: "9.0.0",
    });
    expect(none.status).toBe(400);
    expect(none.body.errors[0]?.pointer).toBe("/images/web");
    const unknown = await test.call<{ errors: { pointer: string }[] }>("POST", "/api/v1/projects/app/releases", {
      version: "9.0.1",
      images: { db: "1.0.0" },
    });
    expect(unknown.status).toBe(400);
    expect(unknown.body.errors[0]?.pointer).toBe("/images/db");
  });

  it("refuses to delete a feed that a project's images use", async () => {
    const refused = await test.call<{ type: string; detail: string }>("DELETE", "/api/v1/feeds/local");
    expect(refused.status).toBe(409);
    expect(refused.body.detail).toBe("feed 'local' is used by the images of project 'app'; change their images first");
  });

  it("names releases by the project's version pattern when no version is given", async () => {
    const bad = await test.call<{ errors: { pointer: string }[] }>("PATCH", "/api/v1/projects/app", {
      versionPattern: "2.1",
    });
    expect(bad.status).toBe(400);
    expect(bad.body.errors[0]?.pointer).toBe("/versionPattern");
    await test.call("PATCH", "/api/v1/projects/app", { versionPattern: "2.1.#{n}" });
    await test.call("PUT", "/api/v1/projects/app/process", {
      images: [{ name: "web", feed: "local", repository: "demo/app" }],
      steps: [],
    });
    const first = await test.call<{ version: string }>("POST", "/api/v1/projects/app/releases", {});
    const second = await test.call<{ version: string }>("POST", "/api/v1/projects/app/releases", {});
    expect([first.body.version, second.body.version]).toEqual(["2.1.0", "2.1.1"]);
  });

  it("reports a registry that refuses the feed's credentials as a feed error, without the password", async () => {
    await test.call("PATCH", "/api/v1/feeds/local", { password: "wrong-password-canary" });
    await test.call("PUT", "/api/v1/projects/app/process", {
      images: [{ name: "web", feed: "local", repository: "demo/app" }],
      steps: [],
    });
    const refused = await test.call<{ type: string; detail: string }>("POST", "/api/v1/projects/app/releases", {
      version: "9.0.2",
    });
    expect(refused.status).toBe(502);
    expect(refused.body.type).toBe("urn:ferry:problem:feed-error");
    expect(JSON.stringify(refused.body)).not.toContain("wrong-password-canary");
  });
});
