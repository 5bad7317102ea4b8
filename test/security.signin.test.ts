import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "./helpers/app.js";
import { dialects } from "./helpers/databases.js";

/**
 * Security issue 11: the attacks as the attack pass made them, each now failing, on
 * SQLite and PostgreSQL.
 */

const PASSWORD = "the right long password";

/** A problem document without its requestId (every answer has its own). */
function withoutRequestId(body: string): Record<string, unknown> {
  const { requestId: _requestId, ...problem } = JSON.parse(body) as Record<string, unknown>;
  return problem;
}

describe.each(dialects)("sign-in hardening on %s", (dialect) => {
  let test: TestApp;

  const signIn = (username: string, password: string, remoteAddress: string) =>
    test.app.inject({ method: "POST", url: "/api/v1/session", payload: { username, password }, remoteAddress });

  const createUser = async (username: string, isAdmin = false) => {
    const response = await test.app.inject({
      method: "POST",
      url: "/api/v1/users",
      headers: test.auth,
      payload: { username, password: PASSWORD, isAdmin },
    });
    expect(response.statusCode, response.body).toBe(201);
    return response.json() as { id: string; username: string };
  };

  beforeAll(async () => {
    test = await startTestApp(dialect);
  });

  afterAll(async () => {
    await test?.close();
  });

  it("finding 11: a user who may not see users gets the same answer for an existing user as for a missing one", async () => {
    const target = await createUser("existing-person");
    const viewer = await createUser("curious");
    const session = await signIn("curious", PASSWORD, "203.0.113.90");
    const cookie = /ferry_session=[^;]+/.exec(String(session.headers["set-cookie"]))?.[0] ?? "";
    const keyResponse = await test.app.inject({
      method: "POST",
      url: "/api/v1/api-keys",
      headers: { cookie, "x-csrf-token": (session.json() as { csrfToken: string }).csrfToken },
      payload: { name: "curious key" },
    });
    expect(keyResponse.statusCode, keyResponse.body).toBe(201);
    const byKey = { authorization: `Bearer ${(keyResponse.json() as { key: string }).key}` };
    const read = (reference: string, headers: Record<string, string>) =>
      test.app.inject({ url: `/api/v1/users/${reference}`, headers });

    for (const headers of [{ cookie }, byKey]) {
      // Before: 403 for existing-person, 404 for a name nobody has.
      for (const [existing, missing, otherName] of [
        ["existing-person", "missing-person", target.id],
        [target.id, "usr_00000000000000000000", "existing-person"],
      ] as const) {
        const existingAnswer = await read(existing, headers);
        const missingAnswer = await read(missing, headers);
        expect(existingAnswer.statusCode).toBe(404);
        expect(missingAnswer.statusCode).toBe(404);
        // Word for word the same, apart from the name or id the caller sent (and the request's own id).
        expect(withoutRequestId(existingAnswer.body.replace(existing, "<user>"))).toEqual(
          withoutRequestId(missingAnswer.body.replace(missing, "<user>")),
        );
        expect(existingAnswer.headers["content-type"]).toBe(missingAnswer.headers["content-type"]);
        expect(existingAnswer.body).not.toContain(otherName);
      }
      // Themself, by every name.
      for (const reference of ["me", "curious", viewer.id]) {
        const own = await read(reference, headers);
        expect(own.statusCode, own.body).toBe(200);
        expect(own.json()).toMatchObject({ id: viewer.id, username: "curious" });
      }
    }
    // An administrator still tells them apart.
    expect((await read("existing-person", test.auth)).statusCode).toBe(200);
    expect((await read("missing-person", test.auth)).statusCode).toBe(404);
  });
});
