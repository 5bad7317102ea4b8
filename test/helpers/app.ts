import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { buildApp } from "../../src/api/app.js";
import { generateApiKey } from "../../src/security/apiKeys.js";
import { type OutboundPolicy, parseOutboundAllow } from "../../src/security/outboundGuard.js";
import { insertApiKey } from "../../src/store/apiKeys.js";
import { openTestDatabase, type TestDatabase } from "./databases.js";

export interface TestApp {
  app: FastifyInstance;
  database: TestDatabase;
  apiKey: string;
  /** Headers with the admin key, for inject(). */
  auth: { authorization: string };
  close(): Promise<void>;
}

/**
 * The real HTTP application over a real store, driven in-process with inject(). Feeds and
 * webhooks may point at 127.0.0.1 (tests run their registries and receivers there) unless
 * `outbound` says otherwise.
 */
export async function startTestApp(
  dialect: "sqlite" | "postgres" = "sqlite",
  options: { outbound?: OutboundPolicy; trustedProxies?: string[] } = {},
): Promise<TestApp> {
  const database = await openTestDatabase(dialect);
  const apiKey = generateApiKey();
  await insertApiKey(database.context, apiKey, { name: "test admin", role: "admin" });
  const app = await buildApp({
    store: database.store,
    context: database.context,
    logger: pino({ level: "silent" }),
    version: "test",
    outbound: options.outbound ?? parseOutboundAllow("127.0.0.1"),
    ...(options.trustedProxies && { trustedProxies: options.trustedProxies }),
  });
  await app.ready();
  return {
    app,
    database,
    apiKey,
    auth: { authorization: `Bearer ${apiKey}` },
    close: async () => {
      await app.close();
      await database.dispose();
    },
  };
}
