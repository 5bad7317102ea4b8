import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "./helpers/app.js";

/**
 * Property: whatever body a client sends to a create route, the server answers with a
 * status below 500 (a clear 4xx for bad input) — never a crash, never a stack trace.
 */
const createRoutes = [
  "/api/v1/environments",
  "/api/v1/lifecycles",
  "/api/v1/projects",
  "/api/v1/targets",
  "/api/v1/feeds",
  "/api/v1/projects/shop/variables",
] as const;

const fieldNames = [
  "name",
  "slug",
  "description",
  "position",
  "phases",
  "environments",
  "autoDeploy",
  "optional",
  "lifecycle",
  "roles",
  "transport",
  "runtimes",
  "type",
  "url",
  "username",
  "password",
  "value",
  "sensitive",
  "scope",
  "targets",
  "__proto__",
  "constructor",
];

const nastyString = fc.oneof(
  fc.string(),
  fc.string({ unit: "grapheme", maxLength: 300 }),
  fc.constantFrom("dev", "test", "prod", "default", "shop", "", " ", "\u0000", "a".repeat(5000), "../../etc/passwd"),
  fc.constantFrom("http://127.0.0.1:5000", "https://x", "ftp://x", "http://u:p@h", "javascript:alert(1)", "%00"),
  fc.constantFrom("'; DROP TABLE projects; --", "$(touch /tmp/pwned)", "`id`", "\u202e", "😀", "\ud800"),
);

const jsonValue: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    nastyString,
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie("value"), { maxLength: 5 }),
    fc.dictionary(fc.oneof(fc.constantFrom(...fieldNames), fc.string()), tie("value"), { maxKeys: 5 }),
  ),
})).value;

/** Bodies that look like the real thing, with fields swapped, missing, mistyped or extra. */
const plausibleBody = fc.dictionary(fc.constantFrom(...fieldNames), jsonValue, { maxKeys: 8 });

const rawPayload = fc.oneof(
  fc.string().map((text) => Buffer.from(text)),
  fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)),
  jsonValue.map((value) => Buffer.from(JSON.stringify(value) ?? "null")),
);

describe.each(["sqlite", "postgres"] as const)("fuzzing the create routes on %s", (dialect) => {
  let test: TestApp;
  let requests = 0;

  beforeAll(async () => {
    test = await startTestApp(dialect);
    const setup = async (url: string, payload: object) => {
      const response = await test.app.inject({ method: "POST", url, headers: test.auth, payload });
      expect(response.statusCode).toBe(201);
    };
    for (const name of ["dev", "test", "prod"]) await setup("/api/v1/environments", { name });
    await setup("/api/v1/lifecycles", { name: "default", phases: [{ environments: ["dev", "test", "prod"] }] });
    await setup("/api/v1/projects", { name: "shop", lifecycle: "default" });
  });
  afterAll(async () => {
    console.log(`fuzz (${dialect}): ${requests} requests, none answered ≥ 500`);
    await test?.close();
  });

  it("answers every generated JSON body below 500", async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...createRoutes), plausibleBody, async (url, body) => {
        requests++;
        const response = await test.app.inject({ method: "POST", url, headers: test.auth, payload: body });
        expect(response.statusCode, `${url} ${JSON.stringify(body)} → ${response.body}`).toBeLessThan(500);
        expect(response.body).not.toMatch(/\n\s+at /);
      }),
      { numRuns: 1000 },
    );
  });

  it("answers every generated raw payload, update and path below 500", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...createRoutes),
        rawPayload,
        nastyString,
        jsonValue,
        async (url, payload, reference, body) => {
          requests += 2;
          const raw = await test.app.inject({
            method: "POST",
            url,
            headers: { ...test.auth, "content-type": "application/json" },
            payload,
          });
          expect(raw.statusCode, `${url} raw → ${raw.body}`).toBeLessThan(500);
          const patch = await test.app.inject({
            method: "PATCH",
            url: `${url}/${encodeURIComponent(Buffer.from(reference).toString() || "x")}`,
            headers: test.auth,
            payload: JSON.stringify(body) ?? "null",
          });
          expect(patch.statusCode, `${url}/${reference} PATCH → ${patch.body}`).toBeLessThan(500);
        },
      ),
      { numRuns: 300 },
    );
  });
});
