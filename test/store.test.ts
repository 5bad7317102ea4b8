import ssh2 from "ssh2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConflictError, InputError, InUseError, NotFoundError } from "../src/domain/errors.js";
import {
  createEnvironment,
  deleteEnvironment,
  getEnvironment,
  listEnvironments,
  updateEnvironment,
} from "../src/store/environments.js";
import { createFeed, getFeed, getFeedCredentials, updateFeed } from "../src/store/feeds.js";
import { createLifecycle, deleteLifecycle, getLifecycle, updateLifecycle } from "../src/store/lifecycles.js";
import {
  claimPendingCleanup,
  duePendingCleanups,
  finishPendingCleanup,
  recordPendingCleanup,
} from "../src/store/pendingCleanups.js";
import { createProject, deleteProject, listProjects, updateProject } from "../src/store/projects.js";
import { getProcessVersion, setProcess } from "../src/store/releases.js";
import {
  createTarget,
  deleteTarget,
  getTarget,
  sshConnectionSettings,
  trustHostKeys,
  updateTarget,
} from "../src/store/targets.js";
import { enqueueTask } from "../src/store/tasks.js";
import { createVariable, getVariable, listVariables, updateVariable } from "../src/store/variables.js";
import { dialects, openTestDatabase, type TestDatabase } from "./helpers/databases.js";

const noScope = { environments: [], roles: [], targets: [] };
const page = { limit: 50, offset: 0 };

describe.each(dialects)("store on %s", (dialect) => {
  let database: TestDatabase;
  const context = () => database.context;

  beforeAll(async () => {
    database = await openTestDatabase(dialect);
    for (const name of ["dev", "test", "prod"]) await createEnvironment(context(), { name, description: "" });
  });
  afterAll(async () => {
    await database?.dispose();
  });

  it("keeps environments in order and can move one", async () => {
    await createEnvironment(context(), { name: "Staging", position: 2, description: "pre-prod" });
    let order = (await listEnvironments(context(), page)).items.map((environment) => environment.slug);
    expect(order).toEqual(["dev", "test", "staging", "prod"]);

    await updateEnvironment(context(), "staging", { position: 0 });
    order = (await listEnvironments(context(), page)).items.map((environment) => environment.slug);
    expect(order).toEqual(["staging", "dev", "test", "prod"]);

    await deleteEnvironment(context(), "staging");
    const remaining = (await listEnvironments(context(), page)).items;
    expect(remaining.map((environment) => [environment.slug, environment.position])).toEqual([
      ["dev", 0],
      ["test", 1],
      ["prod", 2],
    ]);
  });

  it("keeps positions distinct when environments are created at the same moment", async () => {
    const names = Array.from({ length: 8 }, (_, index) => `race-${index}`);
    await Promise.all(names.map((name) => createEnvironment(context(), { name, description: "" })));
    const positions = (await listEnvironments(context(), page)).items.map((environment) => environment.position);
    expect(positions).toEqual(Array.from({ length: 11 }, (_, index) => index));
    await Promise.all(names.map((name) => deleteEnvironment(context(), name)));
    expect((await listEnvironments(context(), page)).items.map((environment) => environment.position)).toEqual([
      0, 1, 2,
    ]);
  });

  it("pages lists and reports the total", async () => {
    const first = await listEnvironments(context(), { limit: 2, offset: 0 });
    const second = await listEnvironments(context(), { limit: 2, offset: 2 });
    expect(first.total).toBe(3);
    expect(first.items.map((environment) => environment.slug)).toEqual(["dev", "test"]);
    expect(second.items.map((environment) => environment.slug)).toEqual(["prod"]);
  });

  it("refuses a duplicate name or slug with a conflict", async () => {
    await expect(createEnvironment(context(), { name: "dev", description: "" })).rejects.toThrow(ConflictError);
    await expect(createEnvironment(context(), { name: "Dev!", description: "" })).rejects.toThrow(/slug 'dev'/);
    await expect(updateEnvironment(context(), "test", { name: "prod" })).rejects.toThrow(ConflictError);
  });

  it("finds by id or slug and says what is missing", async () => {
    const byslug = await getEnvironment(context(), "prod");
    expect((await getEnvironment(context(), byslug.id)).slug).toBe("prod");
    await expect(getEnvironment(context(), "nope")).rejects.toThrow(NotFoundError);
  });

  it("stores lifecycles with phases and enforces one phase per environment", async () => {
    const lifecycle = await createLifecycle(context(), {
      name: "Standard",
      description: "",
      phases: [
        { environments: ["dev"], autoDeploy: true, optional: false },
        { name: "QA", environments: ["test"], autoDeploy: false, optional: true },
        { environments: ["prod"], autoDeploy: false, optional: false },
      ],
    });
    // Phases left without acceptSkippedSteps / separateApprover get false (issue 11).
    const defaults = { acceptSkippedSteps: false, separateApprover: false };
    expect(lifecycle.phases).toEqual([
      { name: "dev", environments: ["dev"], autoDeploy: true, optional: false, ...defaults },
      { name: "QA", environments: ["test"], autoDeploy: false, optional: true, ...defaults },
      { name: "prod", environments: ["prod"], autoDeploy: false, optional: false, ...defaults },
    ]);

    const duplicate = createLifecycle(context(), {
      name: "Broken",
      description: "",
      phases: [
        { environments: ["dev"], autoDeploy: false, optional: false },
        { environments: ["test", "dev"], autoDeploy: false, optional: false },
      ],
    });
    await expect(duplicate).rejects.toThrow(InputError);
    await expect(duplicate).rejects.toMatchObject({ issues: [{ pointer: "/phases/1/environments/1" }] });

    const unknown = createLifecycle(context(), {
      name: "Unknown",
      description: "",
      phases: [{ environments: ["dev", "mars"], autoDeploy: false, optional: false }],
    });
    await expect(unknown).rejects.toMatchObject({ issues: [{ pointer: "/phases/0/environments/1" }] });

    const updated = await updateLifecycle(context(), "standard", {
      phases: [
        { environments: ["dev", "test"], autoDeploy: false, optional: false },
        { environments: ["prod"], autoDeploy: false, optional: false },
      ],
    });
    expect(updated.phases.map((phase) => phase.environments)).toEqual([["dev", "test"], ["prod"]]);
  });

  it("replaces a process only if it is still the one a change was checked against", async () => {
    await createProject(context(), { name: "Guarded", description: "", lifecycle: "standard" });
    const step = (script: string) => ({
      name: "one",
      kind: "script",
      roles: [],
      environments: [],
      excludeEnvironments: [],
      condition: "success" as const,
      required: true,
      config: { script },
    });
    const seen = await getProcessVersion(context(), "guarded");
    // Someone else changes it after the caller read it…
    await setProcess(context(), "guarded", { images: [], steps: [step("echo theirs")] });
    // …so a change decided on the old version is refused, and theirs stays.
    await expect(
      setProcess(context(), "guarded", { images: [], steps: [step("echo mine")] }, { expected: seen.stored }),
    ).rejects.toThrow(ConflictError);
    expect((await getProcessVersion(context(), "guarded")).process.steps[0]?.config).toEqual({ script: "echo theirs" });
    const fresh = await getProcessVersion(context(), "guarded");
    await setProcess(context(), "guarded", { images: [], steps: [step("echo mine")] }, { expected: fresh.stored });
    expect((await getProcessVersion(context(), "guarded")).process.steps[0]?.config).toEqual({ script: "echo mine" });
  });

  it("creates projects on a lifecycle and refuses to delete a lifecycle in use", async () => {
    const project = await createProject(context(), { name: "Shop", description: "web shop", lifecycle: "standard" });
    expect(project).toMatchObject({ slug: "shop", lifecycle: "standard", description: "web shop" });
    await expect(createProject(context(), { name: "X", description: "", lifecycle: "nope" })).rejects.toMatchObject({
      issues: [{ pointer: "/lifecycle" }],
    });

    const refused = deleteLifecycle(context(), "standard");
    await expect(refused).rejects.toThrow(InUseError);
    await expect(refused).rejects.toThrow(/project 'Shop'/);

    await updateProject(context(), "shop", { name: "Web Shop" });
    expect((await listProjects(context(), page)).items.map((item) => item.name)).toContain("Web Shop");
  });

  it("refuses to delete an environment that a lifecycle, target or variable uses, naming each", async () => {
    await createTarget(context(), {
      name: "web-1",
      environments: ["prod"],
      roles: ["web"],
      transport: "local",
      runtimes: ["docker"],
    });
    await createVariable(context(), "shop", {
      name: "Color",
      value: "blue",
      sensitive: false,
      scope: { ...noScope, environments: ["prod"], targets: ["web-1"] },
    });
    const refused = deleteEnvironment(context(), "prod");
    await expect(refused).rejects.toThrow(InUseError);
    const error = (await refused.catch((caught: unknown) => caught)) as InUseError;
    expect(error.usedBy).toEqual(
      expect.arrayContaining(["lifecycle 'Standard'", "target 'web-1'", "variable 'Color' of project 'Web Shop'"]),
    );
    await expect(deleteTarget(context(), "web-1")).rejects.toThrow(/variable 'Color'/);
    expect((await getTarget(context(), "web-1")).environments).toEqual(["prod"]);
  });

  it("keeps sensitive variable values encrypted and never shows them", async () => {
    const canary = `canary-${dialect}-s3cr3t`;
    const created = await createVariable(context(), "shop", {
      name: "DbPassword",
      value: canary,
      sensitive: true,
      scope: noScope,
    });
    expect(created.value).toBe("set");
    const row = await database.store.db
      .selectFrom("variables")
      .selectAll()
      .where("id", "=", created.id)
      .executeTakeFirstOrThrow();
    expect(row.value).toBeNull();
    expect(row.value_sealed).not.toContain(canary);
    expect(database.context.secrets.open(row.value_sealed ?? "", `variable:${created.id}`)).toBe(canary);

    // Turning the flag off without a new value would reveal the secret: refused.
    await expect(updateVariable(context(), "shop", created.id, { sensitive: false })).rejects.toMatchObject({
      issues: [{ pointer: "/value" }],
    });
    const renamed = await updateVariable(context(), "shop", "DbPassword", { name: "DatabasePassword" });
    expect(renamed.value).toBe("set");
  });

  it("lets variables share a name only with different scopes", async () => {
    await createVariable(context(), "shop", { name: "Url", value: "http://dev", sensitive: false, scope: noScope });
    await createVariable(context(), "shop", {
      name: "Url",
      value: "http://prod",
      sensitive: false,
      scope: { ...noScope, environments: ["prod"] },
    });
    await expect(
      createVariable(context(), "shop", { name: "Url", value: "again", sensitive: false, scope: noScope }),
    ).rejects.toThrow(ConflictError);
    await expect(getVariable(context(), "shop", "Url")).rejects.toThrow(/refer to one by its id/);
    const urls = (await listVariables(context(), "shop", page)).items.filter((variable) => variable.name === "Url");
    expect(urls.map((variable) => [variable.value, variable.scope.environments])).toEqual([
      ["http://dev", []],
      ["http://prod", ["prod"]],
    ]);
  });

  it("stores feed passwords encrypted and gives them only to internal callers", async () => {
    const feed = await createFeed(context(), {
      name: "Local registry",
      type: "docker",
      url: "http://127.0.0.1:5000",
      username: "ci",
      password: "feed-pass-canary",
    });
    expect(feed.password).toBe("set");
    expect(await getFeedCredentials(context(), feed.slug)).toEqual({ username: "ci", password: "feed-pass-canary" });
    const cleared = await updateFeed(context(), feed.slug, { password: null });
    expect(cleared.password).toBeNull();
    expect((await getFeed(context(), feed.id)).username).toBe("ci");
    await expect(updateFeed(context(), feed.slug, { username: null, password: "x" })).rejects.toThrow(InputError);
  });

  it("seals an ssh target's key and passphrase, shows neither, and forgets a host key when the target moves", async () => {
    const { private: privateKey } = ssh2.utils.generateKeyPairSync("ed25519", {
      passphrase: "key-pass-canary",
      cipher: "aes256-ctr",
      rounds: 16,
    });
    const hostKey = `SHA256:${"a".repeat(43)}`;
    const target = await createTarget(context(), {
      name: "ssh-1",
      environments: ["prod"],
      roles: ["web"],
      transport: "ssh",
      runtimes: ["docker"],
      ssh: { host: "10.0.0.5", port: 22, user: "deploy", privateKey, passphrase: "key-pass-canary", hostKey },
    });
    expect(target.ssh).toEqual({
      host: "10.0.0.5",
      port: 22,
      user: "deploy",
      jumpHost: null,
      privateKey: "set",
      passphrase: "set",
      hostKey,
    });
    const row = await database.context.db
      .selectFrom("targets")
      .selectAll()
      .where("id", "=", target.id)
      .executeTakeFirstOrThrow();
    expect(JSON.stringify(row)).not.toContain("key-pass-canary");
    expect(JSON.stringify(row)).not.toContain(privateKey.split("\n")[1]);
    const settings = await sshConnectionSettings(context(), target.id);
    expect(settings).toMatchObject({ privateKey, passphrase: "key-pass-canary", hostKey, user: "deploy" });

    // A wrong passphrase for the stored key is refused, naming the field.
    await expect(updateTarget(context(), "ssh-1", { ssh: { passphrase: "wrong" } })).rejects.toThrow(InputError);
    // Another host: the trusted key belonged to the old one.
    const moved = await updateTarget(context(), "ssh-1", { ssh: { host: "10.0.0.6" } });
    expect(moved.ssh).toMatchObject({ host: "10.0.0.6", hostKey: null, privateKey: "set" });
    const trusted = await trustHostKeys(
      context(),
      target.id,
      { host: "10.0.0.6", port: 22, jumpHost: null },
      { hostKey },
    );
    expect(trusted.ssh?.hostKey).toBe(hostKey);
    // Trust read from a host the target no longer points at is not stored.
    await expect(
      trustHostKeys(context(), target.id, { host: "10.0.0.5", port: 22, jumpHost: null }, { hostKey }),
    ).rejects.toThrow(/changed meanwhile/);
    // Back to local: the key goes with the settings.
    const local = await updateTarget(context(), "ssh-1", { transport: "local" });
    expect(local.ssh).toBeNull();
    await expect(sshConnectionSettings(context(), target.id)).rejects.toThrow(NotFoundError);
    await expect(updateTarget(context(), "ssh-1", { transport: "ssh" })).rejects.toThrow(
      /needs host, user, privateKey/,
    );
    await deleteTarget(context(), "ssh-1");
  });

  it("keeps a target's router, and remembers clean-ups of unreachable hosts until done, claimed once", async () => {
    const { private: privateKey } = ssh2.utils.generateKeyPairSync("ed25519");
    const target = await createTarget(context(), {
      name: "edge-1",
      environments: ["prod"],
      roles: [],
      transport: "ssh",
      runtimes: ["docker"],
      ssh: { host: "10.0.0.7", port: 22, user: "deploy", privateKey },
      router: { driver: "builtin", listen: "0.0.0.0:80", adminPort: 7999, command: "ferry" },
    });
    expect(target.router).toEqual({ driver: "builtin", listen: "0.0.0.0:80", adminPort: 7999, command: "ferry" });
    // Local with a router is refused, naming the field.
    await expect(updateTarget(context(), "edge-1", { transport: "local" })).rejects.toThrow(InputError);
    expect((await updateTarget(context(), "edge-1", { router: null })).router).toBe(null);

    const db = database.context.db;
    const task = await enqueueTask(db, {
      kind: "deployment",
      title: "t",
      payload: {},
      lockKeys: [],
      createdBy: "test",
    });
    await recordPendingCleanup(db, task.id, target.id, "could not connect");
    // Not due yet: the first retry waits a few seconds.
    expect(await duePendingCleanups(db)).toEqual([]);
    await db.updateTable("pending_cleanups").set({ next_attempt_at: "2000-01-01T00:00:00.000Z" }).execute();
    const [due] = await duePendingCleanups(db);
    expect(due).toMatchObject({ taskId: task.id, target: { id: target.id, slug: "edge-1" }, attempts: 0 });
    if (!due) throw new Error("nothing due");
    // Two nodes read it; one claims it.
    expect(await Promise.all([claimPendingCleanup(db, due), claimPendingCleanup(db, due)])).toEqual(
      expect.arrayContaining([true, false]),
    );
    expect(await duePendingCleanups(db)).toEqual([]);
    await finishPendingCleanup(db, task.id, target.id);
    expect(await db.selectFrom("pending_cleanups").selectAll().execute()).toEqual([]);
    // A target deleted meanwhile: its pending clean-up goes with it.
    await recordPendingCleanup(db, task.id, target.id, "could not connect");
    await deleteTarget(context(), "edge-1");
    expect(await duePendingCleanups(db)).toEqual([]);
    expect(await db.selectFrom("pending_cleanups").selectAll().execute()).toEqual([]);
  });

  it("deletes a project together with its variables", async () => {
    await createProject(context(), { name: "Throwaway", description: "", lifecycle: "standard" });
    await createVariable(context(), "throwaway", { name: "A", value: "1", sensitive: false, scope: noScope });
    await deleteProject(context(), "throwaway");
    const orphans = await database.store.db.selectFrom("variables").select("id").where("name", "=", "A").execute();
    expect(orphans).toEqual([]);
    await expect(getLifecycle(context(), "standard")).resolves.toMatchObject({ slug: "standard" });
  });
});
