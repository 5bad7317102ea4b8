import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "./helpers/app.js";

describe("API /api/v1", () => {
  let test: TestApp;
  const post = (url: string, payload: unknown) =>
    test.app.inject({ method: "POST", url, headers: test.auth, payload: payload as object });

  beforeAll(async () => {
    test = await startTestApp();
    for (const name of ["dev", "test", "prod"])
      expect((await post("/api/v1/environments", { name })).statusCode).toBe(201);
    const lifecycle = await post("/api/v1/lifecycles", {
      name: "Default",
      phases: [{ environments: ["dev"], autoDeploy: true }, { environments: ["test"] }, { environments: ["prod"] }],
    });
    expect(lifecycle.statusCode).toBe(201);
  });
  afterAll(async () => {
    await test?.close();
  });

  it("answers health and readiness without a key", async () => {
    expect((await test.app.inject({ url: "/healthz" })).json()).toEqual({ status: "ok" });
    const ready = await test.app.inject({ url: "/readyz" });
    expect(ready.statusCode).toBe(200);
    expect(ready.json()).toEqual({ status: "ready", database: "sqlite" });
  });

  it("requires an API key on every /api/v1 route, including unknown ones", async () => {
    for (const [method, url] of [
      ["GET", "/api/v1/projects"],
      ["POST", "/api/v1/projects"],
      ["GET", "/api/v1/openapi.json"],
      ["GET", "/api/v1/does-not-exist"],
    ] as const) {
      const response = await test.app.inject({ method, url });
      expect(response.statusCode, `${method} ${url}`).toBe(401);
      expect(response.headers["content-type"]).toMatch(/^application\/problem\+json/);
      expect(response.json()).toMatchObject({ type: "urn:ferry:problem:unauthenticated", status: 401 });
    }
    // The router decodes percent-escapes: an encoded path must not slip past the key check.
    for (const url of ["/%61pi/v1/projects", "/%61%70%69/v1/feeds", "/API/v1/projects", "/%2561pi/v1/projects"]) {
      const encoded = await test.app.inject({ url });
      expect(encoded.statusCode, url).toBeGreaterThanOrEqual(400);
      expect(encoded.statusCode, url).not.toBe(200);
    }
    const encodedCreate = await test.app.inject({
      method: "POST",
      url: "/%61pi/v1/environments",
      payload: { name: "x" },
    });
    expect(encodedCreate.statusCode).toBe(401);
    const wrong = await test.app.inject({
      url: "/api/v1/projects",
      headers: { authorization: "Bearer ferry_notARealKeyButWellFormed123456" },
    });
    expect(wrong.statusCode).toBe(401);
  });

  it("names every bad field of a create body by JSON pointer", async () => {
    const response = await post("/api/v1/projects", { name: 5, bogus: true });
    expect(response.statusCode).toBe(400);
    expect(response.headers["content-type"]).toMatch(/^application\/problem\+json/);
    const problem = response.json();
    expect(problem).toMatchObject({ type: "urn:ferry:problem:invalid-input", title: "Invalid input", status: 400 });
    const pointers = problem.errors.map((issue: { pointer: string }) => issue.pointer);
    expect(pointers).toEqual(expect.arrayContaining(["/name", "/bogus"]));
  });

  it("rejects malformed JSON, bad UTF-8, wrong media types and huge bodies with 4xx problems", async () => {
    const send = (payload: string | Buffer, contentType = "application/json") =>
      test.app.inject({
        method: "POST",
        url: "/api/v1/environments",
        headers: { ...test.auth, "content-type": contentType },
        payload,
      });
    const malformed = await send('{"name": ');
    expect(malformed.statusCode).toBe(400);
    expect(malformed.json().type).toBe("urn:ferry:problem:malformed-body");

    const badUtf8 = await send(Buffer.from([0x7b, 0x22, 0x6e, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]));
    expect(badUtf8.statusCode).toBe(400);
    expect(badUtf8.json().detail).toMatch(/UTF-8/);

    const text = await send("name=dev", "text/plain");
    expect(text.statusCode).toBe(415);

    const huge = await send(JSON.stringify({ name: "x".repeat(1024 * 1024 + 10) }));
    expect(huge.statusCode).toBe(413);
    expect(huge.json().type).toBe("urn:ferry:problem:body-too-large");

    const notAnObject = await send("[1,2,3]");
    expect(notAnObject.statusCode).toBe(400);
    expect(notAnObject.json().errors[0].pointer).toBe("");
  });

  it("never echoes a body value in a parse error", async () => {
    const response = await test.app.inject({
      method: "POST",
      url: "/api/v1/environments",
      headers: { ...test.auth, "content-type": "application/json" },
      payload: '{"name": "hunter2-secret" oops}',
    });
    expect(response.statusCode).toBe(400);
    expect(response.body).not.toContain("hunter2");
  });

  it("answers a URL with broken percent-encoding with a problem, not Fastify's own error", async () => {
    const response = await test.app.inject({ url: "/api/v1/environments/%E0%A4%A", headers: test.auth });
    expect(response.statusCode).toBe(400);
    expect(response.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(response.json().type).toBe("urn:ferry:problem:bad-request");
  });

  it("answers unknown routes and unknown query parameters with 4xx problems", async () => {
    const unknown = await test.app.inject({ url: "/api/v1/nothing-here", headers: test.auth });
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().type).toBe("urn:ferry:problem:route-not-found");

    const badQuery = await test.app.inject({ url: "/api/v1/environments?limit=0&color=red", headers: test.auth });
    expect(badQuery.statusCode).toBe(400);
    expect(badQuery.json().errors).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ pointer: "/limit", in: "query" }),
        expect.objectContaining({ pointer: "/color", in: "query" }),
      ]),
    );
  });

  it("runs create, show, update, list and delete for a project", async () => {
    const created = await post("/api/v1/projects", { name: "Web Shop", lifecycle: "default", description: "shop" });
    expect(created.statusCode).toBe(201);
    expect(created.json()).toMatchObject({ slug: "web-shop", lifecycle: "default" });

    const updated = await test.app.inject({
      method: "PATCH",
      url: "/api/v1/projects/web-shop",
      headers: test.auth,
      payload: { description: "the shop" },
    });
    expect(updated.json()).toMatchObject({ name: "Web Shop", description: "the shop" });

    const emptyPatch = await test.app.inject({
      method: "PATCH",
      url: "/api/v1/projects/web-shop",
      headers: test.auth,
      payload: {},
    });
    expect(emptyPatch.statusCode).toBe(400);

    const duplicate = await post("/api/v1/projects", { name: "Web Shop", lifecycle: "default" });
    expect(duplicate.statusCode).toBe(409);
    expect(duplicate.json().detail).toMatch(/already exists/);

    const list = await test.app.inject({ url: "/api/v1/projects?limit=10", headers: test.auth });
    expect(list.json()).toMatchObject({ total: 1, limit: 10, offset: 0, items: [{ slug: "web-shop" }] });

    const removed = await test.app.inject({ method: "DELETE", url: "/api/v1/projects/web-shop", headers: test.auth });
    expect(removed.statusCode).toBe(204);
    const gone = await test.app.inject({ url: "/api/v1/projects/web-shop", headers: test.auth });
    expect(gone.statusCode).toBe(404);
  });

  it("refuses to delete an environment in use and says what uses it", async () => {
    const response = await test.app.inject({ method: "DELETE", url: "/api/v1/environments/dev", headers: test.auth });
    expect(response.statusCode).toBe(409);
    expect(response.json()).toMatchObject({
      type: "urn:ferry:problem:in-use",
      usedBy: ["lifecycle 'Default'"],
    });
    expect(response.json().detail).toMatch(/environment 'dev' is used by lifecycle 'Default'/);
  });

  it("manages targets, feeds and variables, showing 'set' for secrets", async () => {
    const target = await post("/api/v1/targets", { name: "web-1", environments: ["dev", "test"], roles: ["web"] });
    expect(target.statusCode).toBe(201);
    expect(target.json()).toMatchObject({ environments: ["dev", "test"], transport: "local", runtimes: ["docker"] });

    const feed = await post("/api/v1/feeds", {
      name: "registry",
      url: "http://127.0.0.1:5000",
      username: "ci",
      password: "feed-secret-value",
    });
    expect(feed.statusCode).toBe(201);
    expect(feed.json()).toMatchObject({ password: "set", username: "ci" });
    expect(feed.body).not.toContain("feed-secret-value");

    // The stored password never follows the feed to another registry on its own.
    const patch = (body: unknown) =>
      test.app.inject({ method: "PATCH", url: "/api/v1/feeds/registry", headers: test.auth, payload: body as object });
    const moved = await patch({ url: "http://127.0.0.1:5001" });
    expect(moved.statusCode).toBe(400);
    expect(moved.json().errors[0].pointer).toBe("/password");
    expect((await patch({ url: "http://127.0.0.1:5000/" })).statusCode).toBe(200);
    expect((await patch({ url: "http://127.0.0.1:5001", password: "feed-secret-other" })).json()).toMatchObject({
      password: "set",
    });

    const credentialsInUrl = await post("/api/v1/feeds", { name: "bad", url: "http://u:p@127.0.0.1:5000" });
    expect(credentialsInUrl.statusCode).toBe(400);
    expect(credentialsInUrl.json().errors[0].pointer).toBe("/url");

    await post("/api/v1/projects", { name: "api", lifecycle: "default" });
    const variable = await post("/api/v1/projects/api/variables", {
      name: "Token",
      value: "variable-secret-value",
      sensitive: true,
      scope: { environments: ["dev"], roles: ["web"], targets: ["web-1"] },
    });
    expect(variable.statusCode).toBe(201);
    expect(variable.json()).toMatchObject({
      value: "set",
      sensitive: true,
      scope: { environments: ["dev"], roles: ["web"], targets: ["web-1"] },
    });
    const listed = await test.app.inject({ url: "/api/v1/projects/api/variables", headers: test.auth });
    expect(listed.body).not.toContain("variable-secret-value");

    const reserved = await post("/api/v1/projects/api/variables", { name: "Ferry.Release.Number", value: "1" });
    expect(reserved.statusCode).toBe(400);
    expect(reserved.json().errors[0].pointer).toBe("/name");
  });

  it("publishes an OpenAPI document generated from the same schemas", async () => {
    const response = await test.app.inject({ url: "/api/v1/openapi.json", headers: test.auth });
    expect(response.statusCode).toBe(200);
    const document = response.json();
    expect(document.openapi).toBe("3.1.0");
    for (const path of [
      "/api/v1/environments",
      "/api/v1/environments/{environment}",
      "/api/v1/lifecycles",
      "/api/v1/projects",
      "/api/v1/targets",
      "/api/v1/feeds",
      "/api/v1/projects/{project}/variables/{variable}",
    ]) {
      expect(document.paths, path).toHaveProperty([path]);
    }
    const createProject = document.paths["/api/v1/projects"].post;
    const bodySchema = createProject.requestBody.content["application/json"].schema;
    expect(bodySchema.required).toEqual(expect.arrayContaining(["name", "lifecycle"]));
    expect(bodySchema.additionalProperties).toBe(false);
    expect(document.paths["/healthz"].get.security).toEqual([]);
  });
});
