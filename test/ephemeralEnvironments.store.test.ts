import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  activeDeploymentsIn,
  createEnvironment,
  deleteEnvironment,
  expiredEphemeralEnvironments,
  getEnvironment,
  updateEnvironment,
} from "../src/store/environments.js";
import { createLifecycle, getLifecycle } from "../src/store/lifecycles.js";
import { dialects, openTestDatabase, type TestDatabase } from "./helpers/databases.js";

/**
 * Ephemeral environments in the store (ADR 0045), on SQLite and PostgreSQL: the TTL counts
 * from creation when nothing was deployed, and deleting one takes its memberships with it
 * but refuses to leave a lifecycle phase empty.
 */
describe.each(dialects)("ephemeral environments in the store on %s", (dialect) => {
  let database: TestDatabase;
  const context = () => database.context;

  beforeAll(async () => {
    database = await openTestDatabase(dialect);
    await createEnvironment(context(), { name: "dev", description: "" });
  });
  afterAll(async () => {
    await database?.dispose();
  });

  it("finds an ephemeral environment expired only once its TTL ran out, and never a plain or TTL-less one", async () => {
    const branch = await createEnvironment(context(), {
      name: "feature-a",
      description: "",
      ephemeral: true,
      ttlMinutes: 30,
    });
    await createEnvironment(context(), { name: "feature-b", description: "", ephemeral: true });
    expect(branch).toMatchObject({ ephemeral: true, ttlMinutes: 30 });
    expect(await expiredEphemeralEnvironments(context(), new Date())).toEqual([]);
    const later = await expiredEphemeralEnvironments(context(), new Date(Date.now() + 31 * 60_000));
    expect(later.map((environment) => environment.slug)).toEqual(["feature-a"]);
    expect(await activeDeploymentsIn(context(), branch.id)).toBe(0);
    // No longer ephemeral: no TTL either.
    await updateEnvironment(context(), "feature-a", { ephemeral: false });
    expect(await getEnvironment(context(), "feature-a")).toMatchObject({ ephemeral: false, ttlMinutes: null });
    expect(await expiredEphemeralEnvironments(context(), new Date(Date.now() + 31 * 60_000))).toEqual([]);
  });

  it("deletes an ephemeral environment out of its lifecycle phase, but not the phase's only one", async () => {
    await createEnvironment(context(), { name: "review", description: "", ephemeral: true });
    await createEnvironment(context(), { name: "lonely", description: "", ephemeral: true });
    await createLifecycle(context(), {
      name: "branches",
      description: "",
      phases: [{ environments: ["dev", "review"] }, { environments: ["lonely"] }],
    } as Parameters<typeof createLifecycle>[1]);
    await deleteEnvironment(context(), "review");
    const lifecycle = await getLifecycle(context(), "branches");
    expect(lifecycle.phases.map((phase) => phase.environments)).toEqual([["dev"], ["lonely"]]);
    await expect(deleteEnvironment(context(), "lonely")).rejects.toThrow(
      /the only environment of phase 2 of lifecycle 'branches'/,
    );
  });
});
