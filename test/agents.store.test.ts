import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UnauthenticatedError } from "../src/domain/errors.js";
import { targetRouterSchema } from "../src/domain/targets.js";
import {
  authenticateAgent,
  createEnrolmentToken,
  enrolAgent,
  listEnrolmentTokens,
  revokeAgentCredential,
  revokeEnrolmentToken,
  rotateAgentCredential,
} from "../src/store/agents.js";
import { createEnvironment } from "../src/store/environments.js";
import { getTarget, updateTarget } from "../src/store/targets.js";
import { dialects, openTestDatabase, type TestDatabase } from "./helpers/databases.js";

/** Enrolment tokens and agent credentials on SQLite and PostgreSQL: single use holds under a race, secrets are stored hashed. */
describe.each(dialects)("agent enrolment and credentials on %s", (dialect) => {
  let database: TestDatabase;
  const context = () => database.context;
  const enrolment = (token: string, name: string, environments = ["dev"]) => ({
    token,
    name,
    environments,
    roles: ["web"],
    runtimes: ["docker" as const],
  });

  beforeAll(async () => {
    database = await openTestDatabase(dialect);
    for (const name of ["dev", "prod"]) await createEnvironment(context(), { name, description: "" });
  });
  afterAll(async () => {
    await database?.dispose();
  });

  it("lets exactly one of two agents racing with one token enrol, and stores neither secret in clear", async () => {
    const { token } = await createEnrolmentToken(context(), { expiresInMinutes: 60 });
    const results = await Promise.allSettled([
      enrolAgent(context(), enrolment(token, "race-a")),
      enrolAgent(context(), enrolment(token, "race-b")),
    ]);
    const won = results.filter((result) => result.status === "fulfilled");
    expect(won).toHaveLength(1);
    const lost = results.find((result) => result.status === "rejected");
    expect((lost as PromiseRejectedResult).reason).toBeInstanceOf(UnauthenticatedError);
    const credential = (won[0] as PromiseFulfilledResult<{ credential: string }>).value.credential;
    const rows = JSON.stringify([
      await database.context.db.selectFrom("agent_enrolment_tokens").selectAll().execute(),
      await database.context.db.selectFrom("agents").selectAll().execute(),
    ]);
    expect(rows).not.toContain(token);
    expect(rows).not.toContain(credential);
    const [listed] = await listEnrolmentTokens(context());
    expect(listed?.state).toBe("used");
  });

  it("gives the token back when the name is taken, and keeps an environment-limited token to its environments", async () => {
    const { token } = await createEnrolmentToken(context(), { expiresInMinutes: 60, environments: ["dev"] });
    await expect(enrolAgent(context(), enrolment(token, "dup", ["prod"]))).rejects.toThrow(
      /does not allow the environments prod/,
    );
    await enrolAgent(context(), enrolment(token, "dup-first"));
    const second = await createEnrolmentToken(context(), { expiresInMinutes: 60 });
    await expect(enrolAgent(context(), enrolment(second.token, "dup-first"))).rejects.toThrow(/already exists/);
    const again = await enrolAgent(context(), enrolment(second.token, "dup-second"));
    expect(again.target.transport).toBe("agent");
  });

  it("refuses a revoked token and a revoked credential; a rotated credential replaces the old one when first used", async () => {
    const revoked = await createEnrolmentToken(context(), { expiresInMinutes: 60 });
    await revokeEnrolmentToken(context(), revoked.id);
    await expect(enrolAgent(context(), enrolment(revoked.token, "never"))).rejects.toThrow(/revoked/);

    const { token } = await createEnrolmentToken(context(), { expiresInMinutes: 60 });
    const { credential } = await enrolAgent(context(), enrolment(token, "rotating"));
    expect((await authenticateAgent(context(), credential)).targetName).toBe("rotating");
    await rotateAgentCredential(context(), "rotating");
    const offered = (await authenticateAgent(context(), credential)).nextCredential;
    expect(offered).toMatch(/^ferry_agent_/);
    expect((await getTarget(context(), "rotating")).agent?.rotationPending).toBe(true);
    // Until the agent uses the new one, the old one still works; afterwards only the new one.
    await authenticateAgent(context(), offered ?? "");
    await expect(authenticateAgent(context(), credential)).rejects.toThrow(/not known/);
    expect((await getTarget(context(), "rotating")).agent?.rotationPending).toBe(false);

    await revokeAgentCredential(context(), "rotating");
    await expect(authenticateAgent(context(), offered ?? "")).rejects.toThrow(/was revoked/);
    expect((await getTarget(context(), "rotating")).agent?.state).toBe("revoked");
  });

  it("keeps an agent of a role-limited token to those roles, and gives it all of them when it names none", async () => {
    const limited = await createEnrolmentToken(context(), { expiresInMinutes: 60, roles: ["web", "worker"] });
    expect(limited.roles).toEqual(["web", "worker"]);
    const refused = await enrolAgent(context(), {
      ...enrolment(limited.token, "too-much"),
      roles: ["web", "db"],
    }).catch((error: unknown) => error);
    expect(refused).toMatchObject({
      message: "this enrolment token does not allow the roles db",
      issues: [{ pointer: "/roles", detail: expect.stringContaining("(web, worker), or none to take them all") }],
    });
    // Refused before it was spent: the same token still enrols.
    const some = await enrolAgent(context(), { ...enrolment(limited.token, "web-only"), roles: ["web"] });
    expect(some.target.roles).toEqual(["web"]);
    const [listed] = (await listEnrolmentTokens(context())).filter((token) => token.id === limited.id);
    expect(listed).toMatchObject({ state: "used", roles: ["web", "worker"], usedBy: "web-only" });

    const all = await createEnrolmentToken(context(), { expiresInMinutes: 60, roles: ["web", "worker"] });
    const named = await enrolAgent(context(), { ...enrolment(all.token, "all-roles"), roles: [] });
    expect(named.target.roles).toEqual(["web", "worker"]);
    // A token without roles leaves the agent's own choice alone.
    const free = await createEnrolmentToken(context(), { expiresInMinutes: 60 });
    expect(free.roles).toBeNull();
    expect((await enrolAgent(context(), { ...enrolment(free.token, "free"), roles: ["db"] })).target.roles).toEqual([
      "db",
    ]);
  });

  it("gives an agent's host the builtin router, and refuses nginx there, naming the field (ADR 0039)", async () => {
    const { token } = await createEnrolmentToken(context(), { expiresInMinutes: 60 });
    await enrolAgent(context(), enrolment(token, "routed"));
    const nginx = targetRouterSchema.parse({
      driver: "nginx",
      config: "/etc/nginx/nginx.conf",
      sitesDir: "/etc/nginx/ferry",
      pidFile: "/run/nginx.pid",
    });
    const refused = await updateTarget(context(), "routed", { router: nginx }).catch((error: unknown) => error);
    expect(refused).toMatchObject({
      message: "an agent's host cannot use nginx as its router",
      issues: [{ pointer: "/router/driver", detail: expect.stringContaining('use driver "builtin"') }],
    });
    expect((await getTarget(context(), "routed")).router).toBeNull();
    // HAProxy too: Ferry would start a program and config the server names as the agent's account (ADR 0048).
    const haproxy = targetRouterSchema.parse({ driver: "haproxy", stateDir: "/var/lib/ferry/haproxy" });
    await expect(updateTarget(context(), "routed", { router: haproxy })).rejects.toMatchObject({
      message: "an agent's host cannot use haproxy as its router",
      issues: [{ pointer: "/router/driver", detail: expect.stringContaining('use driver "builtin"') }],
    });
    expect((await getTarget(context(), "routed")).router).toBeNull();
    const builtin = await updateTarget(context(), "routed", {
      router: targetRouterSchema.parse({ driver: "builtin" }),
    });
    expect(builtin.router).toMatchObject({ driver: "builtin", listen: "0.0.0.0:80" });
  });
});
