import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  apiRequest,
  type CliResult,
  expectSuccess,
  isolatedEnv,
  parseJson,
  runFerry,
  testAdminKey,
  trackedResources,
} from "./helpers/cli.js";

const { makeTemporaryDirectory, startFerryServer, startServerInNewHome, cleanUp } =
  trackedResources("ferry-users-e2e-");

afterAll(async () => {
  await cleanUp();
});

const PRINTED_KEY = /ferry_[A-Za-z0-9_-]{43}/g;

// Several `ferry` commands or server starts per test: 2 minutes each, for CI under load.
describe("fresh installs (real bin/ferry server)", { timeout: 120_000 }, () => {
  it("have different master keys and admin keys, and print the admin key only on the first start", async () => {
    const installs = [];
    for (let i = 0; i < 2; i++) {
      const home = await makeTemporaryDirectory();
      const dataDir = join(home, "data");
      // No FERRY_ADMIN_API_KEY: the server generates the key and prints it.
      const server = await startFerryServer({ dataDir, env: isolatedEnv(home) });
      const printed = server.stderr().match(PRINTED_KEY) ?? [];
      expect(printed, server.stderr()).toHaveLength(1);
      const adminKey = printed[0] ?? "";
      const response = await apiRequest(`${server.url}/api/v1/environments`, adminKey);
      expect(response.status).toBe(200);
      await response.body?.cancel();
      installs.push({
        home,
        dataDir,
        server,
        adminKey,
        masterKey: await readFile(join(dataDir, "master.key"), "utf8"),
      });
    }
    const [first, second] = installs;
    if (!first || !second) throw new Error("two installs expected");
    expect(first.adminKey).not.toBe(second.adminKey);
    expect(first.masterKey.trim()).not.toBe(second.masterKey.trim());
    expect(Buffer.from(first.masterKey.trim(), "base64")).toHaveLength(32);
    // Neither server's log holds the key (only the one-time notice on stderr does).
    expect(first.server.stdout()).not.toContain(first.adminKey);

    // Restarted on the same data directory: no key printed, the same master key, the old key still works.
    await first.server.stop();
    const restarted = await startFerryServer({ dataDir: first.dataDir, env: isolatedEnv(first.home) });
    expect(restarted.stderr()).not.toMatch(PRINTED_KEY);
    expect(restarted.stdout()).not.toMatch(PRINTED_KEY);
    expect(await readFile(join(first.dataDir, "master.key"), "utf8")).toBe(first.masterKey);
    const response = await apiRequest(`${restarted.url}/api/v1/environments`, first.adminKey);
    expect(response.status).toBe(200);
    await response.body?.cancel();
  });
});

// Several `ferry` commands or server starts per test: 2 minutes each, for CI under load.
describe("ferry admin create-user and ferry api-key (real bin/ferry)", { timeout: 120_000 }, () => {
  it("creates a user from a password on stdin, signs in, manages keys, and keeps the sign-in limit across a restart", async () => {
    const adminKey = testAdminKey();
    const { home, server } = await startServerInNewHome(adminKey);
    const password = "a long enough password";
    const cli = (args: string[], apiKey: string, url: string, input?: string): Promise<CliResult> =>
      runFerry(args, isolatedEnv(home, { FERRY_URL: url, FERRY_API_KEY: apiKey }), {
        timeoutMs: 15_000,
        ...(input !== undefined && { input }),
      });

    const created = await cli(["admin", "create-user", "--username", "ops", "--json"], adminKey, server.url, password);
    expectSuccess(created);
    expect(parseJson<{ username: string; isAdmin: boolean }>(created)).toMatchObject({
      username: "ops",
      isAdmin: false,
    });
    expect(created.stdout).not.toContain(password);
    // Without a password on stdin: a usage error, no user.
    const noPassword = await cli(["admin", "create-user", "--username", "ops2"], adminKey, server.url);
    expect(noPassword.code).toBe(2);

    const signIn = await fetch(`${server.url}/api/v1/session`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "ops", password }),
    });
    expect(signIn.status).toBe(200);
    const cookie = (signIn.headers.get("set-cookie") ?? "").split(";")[0] ?? "";
    const { csrfToken } = (await signIn.json()) as { csrfToken: string };
    const keyResponse = await fetch(`${server.url}/api/v1/api-keys`, {
      method: "POST",
      headers: { "content-type": "application/json", cookie, "x-csrf-token": csrfToken, origin: server.url },
      body: JSON.stringify({ name: "laptop", expiresInDays: 7 }),
    });
    expect(keyResponse.status).toBe(201);
    const userKey = ((await keyResponse.json()) as { key: string }).key;

    const made = await cli(["api-key", "create", "--name", "ci", "--json"], userKey, server.url);
    expectSuccess(made);
    const ciKey = parseJson<{ id: string; key: string; prefix: string }>(made);
    const listed = await cli(["api-key", "list"], userKey, server.url);
    expectSuccess(listed);
    expect(listed.stdout).toContain("laptop");
    expect(listed.stdout).toContain(ciKey.prefix);
    expect(listed.stdout).not.toContain(ciKey.key);
    expectSuccess(await cli(["api-key", "revoke", ciKey.id], userKey, server.url));
    const refused = await cli(["env", "list"], ciKey.key, server.url);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("not valid, expired or revoked");

    // A service account's key, made by an administrator; a user may not make one for someone else.
    const serviceKey = await cli(
      ["api-key", "create", "--name", "deploy-bot", "--user", "ops", "--json"],
      adminKey,
      server.url,
    );
    expectSuccess(serviceKey);
    expect(parseJson<{ userId: string | null }>(serviceKey).userId).not.toBeNull();
    const notYours = await cli(["api-key", "create", "--name", "x", "--user", "ops"], userKey, server.url);
    expect(notYours.code).toBe(1);
    expect(notYours.stderr).toContain("only an administrator");

    // Five failed sign-ins, then a restart: the sixth is still refused, even with the right password.
    for (let i = 0; i < 5; i++) {
      const failed = await fetch(`${server.url}/api/v1/session`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username: "ops", password: "not the password" }),
      });
      expect(failed.status).toBe(401);
    }
    await server.stop();
    const restarted = await startFerryServer({
      dataDir: join(home, "data"),
      env: isolatedEnv(home, { FERRY_ADMIN_API_KEY: adminKey }),
      port: server.port,
    });
    const limited = await fetch(`${restarted.url}/api/v1/session`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "ops", password }),
    });
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(0);
  });
});
