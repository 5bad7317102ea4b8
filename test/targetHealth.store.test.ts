import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEnvironment, getEnvironment, updateEnvironment } from "../src/store/environments.js";
import { claimDueTargets, recordTargetHealth, targetUpStates } from "../src/store/targetHealth.js";
import { createTarget, deleteTarget, getTarget } from "../src/store/targets.js";
import { dialects, openTestDatabase, type TestDatabase } from "./helpers/databases.js";

/**
 * The health schedule every server node shares, and the environment's policy, on SQLite and
 * PostgreSQL: a due target is claimed once however many nodes ask, a check's result is what
 * the API and /metrics show, and a deleted target leaves nothing behind.
 */
describe.each(dialects)("target health and unavailable-target policies on %s", (dialect) => {
  let database: TestDatabase;
  const context = () => database.context;

  beforeAll(async () => {
    database = await openTestDatabase(dialect);
    await createEnvironment(context(), { name: "prod", description: "" });
  });
  afterAll(async () => {
    await database?.dispose();
  });

  it("keeps an environment's policy, fail unless it says skip", async () => {
    expect((await getEnvironment(context(), "prod")).unavailableTargets).toBe("fail");
    await updateEnvironment(context(), "prod", { unavailableTargets: "skip" });
    expect((await getEnvironment(context(), "prod")).unavailableTargets).toBe("skip");
    const edge = await createEnvironment(context(), { name: "edge", description: "", unavailableTargets: "skip" });
    expect(edge.unavailableTargets).toBe("skip");
  });

  it("claims a due target for one checker at a time, and shows what the check found", async () => {
    const target = await createTarget(context(), {
      name: "web-1",
      environments: ["prod"],
      roles: ["web"],
      transport: "local",
      runtimes: ["docker"],
    });
    expect(target.health).toMatchObject({ state: "unknown", checkedAt: null, reachable: null });
    const now = new Date();
    // Several nodes at once: exactly one of them gets it.
    const claims = await Promise.all([1, 2, 3].map(() => claimDueTargets(context().db, now, 60_000)));
    expect(claims.flat().map((due) => due.name)).toEqual(["web-1"]);
    expect(claims.flat()[0]?.runtimes).toEqual(["docker"]);
    // Claimed: not due again until the claim runs out.
    expect(await claimDueTargets(context().db, new Date(now.getTime() + 1000), 60_000)).toEqual([]);

    const checkedAt = new Date().toISOString();
    await recordTargetHealth(
      context().db,
      target.id,
      {
        state: "up",
        checkedAt,
        reachable: true,
        dockerVersion: "24.0.9",
        diskFreeBytes: 5 * 1024 ** 4,
        router: null,
        error: null,
      },
      new Date(now.getTime() + 5000),
    );
    expect((await getTarget(context(), "web-1")).health).toEqual({
      state: "up",
      checkedAt,
      reachable: true,
      dockerVersion: "24.0.9",
      // More than 2^32: PostgreSQL's bigint comes back as a number all the same.
      diskFreeBytes: 5 * 1024 ** 4,
      router: null,
      error: null,
      lastUpAt: checkedAt,
    });
    expect(await targetUpStates(context().db)).toEqual([{ target: "web-1", up: true }]);
    // Due again at the time the result set, not before.
    expect(await claimDueTargets(context().db, new Date(now.getTime() + 4000), 60_000)).toEqual([]);
    expect((await claimDueTargets(context().db, new Date(now.getTime() + 6000), 60_000)).map((due) => due.id)).toEqual([
      target.id,
    ]);

    const downAt = new Date().toISOString();
    await recordTargetHealth(
      context().db,
      target.id,
      {
        state: "down",
        checkedAt: downAt,
        reachable: false,
        dockerVersion: null,
        diskFreeBytes: null,
        router: null,
        error: "could not connect",
      },
      new Date(now.getTime() + 10_000),
    );
    const down = (await getTarget(context(), "web-1")).health;
    expect(down).toMatchObject({ state: "down", reachable: false, error: "could not connect", lastUpAt: checkedAt });
    expect(await targetUpStates(context().db)).toEqual([{ target: "web-1", up: false }]);

    await deleteTarget(context(), "web-1");
    expect(await targetUpStates(context().db)).toEqual([]);
    const rows = await context().db.selectFrom("target_health").selectAll().execute();
    expect(rows).toEqual([]);
  });

  it("claims at most as many targets as the checker has room for, the others staying due", async () => {
    for (const name of ["db-1", "db-2", "db-3"]) {
      await createTarget(context(), {
        name,
        environments: ["prod"],
        roles: [],
        transport: "local",
        runtimes: ["process"],
      });
    }
    const now = new Date();
    expect(await claimDueTargets(context().db, now, 60_000, 2)).toHaveLength(2);
    expect(await claimDueTargets(context().db, now, 60_000, 2)).toHaveLength(1);
    expect(await claimDueTargets(context().db, now, 60_000, 2)).toHaveLength(0);
  });
});
