import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../src/api/app.js";
import { generateApiKey } from "../src/security/apiKeys.js";
import { parseOutboundAllow } from "../src/security/outboundGuard.js";
import { insertApiKey } from "../src/store/apiKeys.js";
import { openTestDatabase, type TestDatabase } from "./helpers/databases.js";

/**
 * A sensitive value, once sent, must never come back: not in any API response, not in
 * the server log, and not in clear in the database (SQLite file + WAL, or a pg_dump).
 */
describe.each(["sqlite", "postgres"] as const)("sensitive values on %s", (dialect) => {
  const variableCanary = `var-canary-${randomBytes(8).toString("hex")}`;
  const feedCanary = `feed-canary-${randomBytes(8).toString("hex")}`;
  const canaries = [variableCanary, feedCanary];
  let database: TestDatabase;
  let app: Awaited<ReturnType<typeof buildApp>>;
  let logText = "";
  const bodies: string[] = [];
  const auth: { authorization: string } = { authorization: "" };

  const call = async (method: "GET" | "POST" | "PATCH" | "DELETE", url: string, payload?: object) => {
    const response = await app.inject({ method, url, headers: auth, ...(payload && { payload }) });
    bodies.push(`${method} ${url} ${response.statusCode} ${response.body}`);
    return response;
  };

  beforeAll(async () => {
    database = await openTestDatabase(dialect);
    const apiKey = generateApiKey();
    auth.authorization = `Bearer ${apiKey}`;
    await insertApiKey(database.context, apiKey, { name: "admin", role: "admin" });
    const logStream = new Writable({
      write(chunk, _encoding, done) {
        logText += String(chunk);
        done();
      },
    });
    app = await buildApp({
      store: database.store,
      context: database.context,
      logger: pino({ level: "trace" }, logStream),
      version: "test",
      outbound: parseOutboundAllow("127.0.0.1"),
    });

    await call("POST", "/api/v1/environments", { name: "prod" });
    await call("POST", "/api/v1/lifecycles", { name: "default", phases: [{ environments: ["prod"] }] });
    await call("POST", "/api/v1/projects", { name: "shop", lifecycle: "default" });
    const variable = await call("POST", "/api/v1/projects/shop/variables", {
      name: "DbPassword",
      value: variableCanary,
      sensitive: true,
    });
    expect(variable.statusCode).toBe(201);
    // A multi-line secret and an update that keeps it sensitive.
    await call("PATCH", `/api/v1/projects/shop/variables/${variable.json().id}`, {
      value: `${variableCanary}\nsecond line ${variableCanary}`,
    });
    await call("POST", "/api/v1/feeds", {
      name: "registry",
      url: "http://127.0.0.1:5000",
      username: "ci",
      password: feedCanary,
    });
    await call("PATCH", "/api/v1/feeds/registry", { name: "Registry" });
    // Errors that involve the secret-bearing fields.
    await call("POST", "/api/v1/feeds", { name: "Registry", url: "http://x", username: "ci", password: feedCanary });
    await call("POST", "/api/v1/projects/shop/variables", { name: "Bad Name", value: variableCanary, sensitive: true });
    await call("PATCH", "/api/v1/projects/shop/variables/DbPassword", { sensitive: false });
  });
  afterAll(async () => {
    await app?.close();
    await database?.dispose();
  });

  it("never returns them from any route", async () => {
    for (const url of [
      "/api/v1/projects/shop/variables",
      "/api/v1/projects/shop/variables/DbPassword",
      "/api/v1/feeds",
      "/api/v1/feeds/registry",
      "/api/v1/projects",
      "/api/v1/environments",
      "/api/v1/lifecycles",
      "/api/v1/openapi.json",
    ]) {
      expect((await call("GET", url)).statusCode, url).toBe(200);
    }
    const everything = bodies.join("\n");
    expect(everything).toContain('"value":"set"');
    expect(everything).toContain('"password":"set"');
    for (const canary of canaries) expect(everything).not.toContain(canary);
  });

  it("never writes them to the server log", () => {
    expect(logText.length).toBeGreaterThan(0);
    for (const canary of canaries) expect(logText).not.toContain(canary);
  });

  it("never stores them in clear", async () => {
    let dump: string;
    if (dialect === "sqlite") {
      await database.store.close(); // checkpoint the WAL into the file; then read every file SQLite wrote
      dump = readdirSync(database.dataDir)
        .filter((file) => file.startsWith("ferry.db"))
        .map((file) => readFileSync(join(database.dataDir, file)).toString("latin1"))
        .join("\n");
      expect(dump).toContain("DbPassword");
    } else {
      dump = execFileSync("pg_dump", ["--no-owner", database.url ?? ""], { encoding: "utf8" });
      expect(dump).toContain("DbPassword");
    }
    for (const canary of canaries) expect(dump).not.toContain(canary);
  });
});
