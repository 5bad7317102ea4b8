import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectSuccess, isolatedEnv, parseJson, runFerry, startFerry } from "./helpers/cli.js";
import { createPostgresDatabase, dialects } from "./helpers/databases.js";
import { pushTestImage, startRegistry } from "./helpers/registry.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

interface Release {
  version: string;
  notes: string;
  images: { name: string; tag: string; digest: string }[];
}

interface Task {
  id: string;
  title: string;
  environment: string | null;
  createdBy: string;
}

/**
 * Feed triggers against a real registry (Debian's docker-registry) that sends its own
 * notifications to the real server, and, with notifications off, polling.
 */
// The dialects run side by side, each on its own server and database (the tests of one
// dialect still in order): the file waits mostly on processes and I/O, not the CPU.
describe.each(dialects)(
  "feed triggers on %s (real registry notifications and polling, real server)",
  { concurrent: true },
  (dialect) => {
    let test: TestServer;
    let database: Awaited<ReturnType<typeof createPostgresDatabase>> | undefined;
    let registry: Awaited<ReturnType<typeof startRegistry>>;
    const auth = { username: "ci", password: "trigger-feed-canary" };
    const secret = "trigger-secret-0123456789abcdef";
    let triggerId = "";

    const releases = async () =>
      (await test.call<{ items: Release[] }>("GET", "/api/v1/projects/app/releases?limit=100")).body.items;
    const environmentIds = new Map<string, string>();
    /** The deployment tasks of a release the trigger started: environment slug and task id. */
    const deploymentsOf = async (version: string) =>
      (await test.call<{ items: Task[] }>("GET", "/api/v1/tasks?limit=100")).body.items
        .filter((task) => task.createdBy.startsWith("trigger:") && task.title.includes(` ${version} `))
        .map((task) => ({ environment: environmentIds.get(task.environment ?? ""), taskId: task.id }));
    const waitFor = async <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const value = await probe();
        if (value !== undefined) return value;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await sleep(200);
      }
    };
    /** The project's process: image web of `repository` on the feed local, its x.y.z-beta tags; a script that shows it. */
    const saveBetaProcess = async (project: string, repository: string) => {
      const process = await test.call("PUT", `/api/v1/projects/${project}/process`, {
        images: [
          {
            name: "web",
            feed: "local",
            repository,
            version: { kind: "regex", pattern: "^\\d+\\.\\d+\\.\\d+-beta$" },
          },
        ],
        steps: [{ name: "show", kind: "script", config: { script: "echo deployed #{Ferry.Image[web]}" } }],
      });
      expect(process.status, JSON.stringify(process.body)).toBe(200);
    };
    const ignoreEntries = async () =>
      (
        await test.call<{
          items: { action: string; actor: { name: string }; diff: Record<string, { to: unknown }> }[];
        }>("GET", "/api/v1/audit?action=trigger.ignore&limit=100")
      ).body.items;
    const notify = (body: unknown, authorization = `Bearer ${secret}`) =>
      fetch(new URL(`/api/v1/hooks/registry/${triggerId}`, test.server.url), {
        method: "POST",
        headers: { authorization, "content-type": "application/vnd.docker.distribution.events.v1+json" },
        body: JSON.stringify(body),
      });

    beforeAll(async () => {
      database = dialect === "postgres" ? await createPostgresDatabase() : undefined;
      test = await startTestServer(database ? { databaseUrl: database.url } : {});
      for (const name of ["dev", "prod"]) {
        const environment = await test.call<{ id: string }>("POST", "/api/v1/environments", { name });
        environmentIds.set(environment.body.id, name);
      }
      await test.call("POST", "/api/v1/lifecycles", {
        name: "two",
        phases: [{ environments: ["dev"] }, { environments: ["prod"] }],
      });
      await test.call("POST", "/api/v1/projects", { name: "app", lifecycle: "two" });
      // The registry needs the hook's address (with the trigger's id) before it starts, and the
      // trigger needs the project's image and feed: the feed points at the registry once it runs.
      await test.call("POST", "/api/v1/feeds", { name: "local", url: "http://127.0.0.1:1", ...auth });
      await saveBetaProcess("app", "demo/app");
      const created = await test.call<{ id: string; hookPath: string; secret: string }>(
        "POST",
        "/api/v1/projects/app/triggers",
        { name: "beta pushes", image: "web", versionFromTag: "^(\\d+\\.\\d+\\.\\d+)-beta$", secret, pollSeconds: null },
      );
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      expect(created.body.secret).toBe("set");
      triggerId = created.body.id;
      registry = await startRegistry({
        auth,
        notify: { url: new URL(created.body.hookPath, test.server.url).href, authorization: `Bearer ${secret}` },
      });
      const moved = await test.call("PATCH", "/api/v1/feeds/local", { url: registry.url, ...auth });
      expect(moved.status, JSON.stringify(moved.body)).toBe(200);
    });
    afterAll(async () => {
      await registry?.stop();
      await test?.close();
      await database?.drop();
    });

    it.sequential("a pushed beta tag becomes release 1.0.3, pinned by digest and deployed to dev, with no command issued", async () => {
      const digest = await pushTestImage(registry.url, "demo/app", "1.0.3-beta", { content: "1.0.3", auth });
      const release = await waitFor("release 1.0.3", async () =>
        (await releases()).find((candidate) => candidate.version === "1.0.3"),
      );
      expect(release.images).toEqual([expect.objectContaining({ name: "web", tag: "1.0.3-beta", digest })]);
      expect(release.notes).toContain("feed trigger 'beta pushes'");
      const [deployment] = await waitFor("the dev deployment", async () => {
        const found = await deploymentsOf("1.0.3");
        return found.length > 0 ? found : undefined;
      });
      expect(deployment?.environment).toBe("dev");
      expect((await test.waitForTask(deployment?.taskId ?? "")).state).toBe("succeeded");
      // Only the first phase: prod waits for a promotion.
      expect((await deploymentsOf("1.0.3")).map((found) => found.environment)).toEqual(["dev"]);
      const audit = await test.call<{
        items: { action: string; actor: { name: string }; diff: Record<string, { to: unknown }> }[];
      }>("GET", "/api/v1/audit?action=trigger.fire");
      const fired = audit.body.items.find((entry) => entry.diff.release?.to === "1.0.3");
      expect(fired?.actor.name).toBe("feed trigger beta pushes");
      expect(fired?.diff.cause?.to).toBe("notification");
      // The trigger tells its last firing: when, why and what it did.
      const shown = await test.call<{ lastFiring: { at: string; cause: string; outcome: string } | null }>(
        "GET",
        `/api/v1/projects/app/triggers/${triggerId}`,
      );
      expect(shown.body.lastFiring).toEqual({
        at: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T/),
        cause: "notification",
        outcome: "released 1.0.3 from tag 1.0.3-beta",
      });
    });

    it.sequential("ferry release wait, started before the push (of an older version than the last), follows the dev deployment the trigger makes and exits 0", async () => {
      const home = mkdtempSync(join(tmpdir(), "ferry-release-wait-"));
      const env = isolatedEnv(home, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey });
      try {
        // What a pipeline does: push, then wait for what Ferry makes of it.
        const waiting = startFerry(
          ["release", "wait", "1.0.2", "--project", "app", "--env", "dev", "--timeout", "120"],
          env,
        );
        await pushTestImage(registry.url, "demo/app", "1.0.2-beta", { content: "1.0.2", auth });
        const waited = await waiting.done;
        expectSuccess(waited);
        expect(waited.stdout).toContain("app 1.0.2 → dev: succeeded");

        // A release that never comes: a clear message and a non-zero exit, once the time is up.
        const missing = await runFerry(
          ["release", "wait", "9.9.9", "--project", "app", "--env", "dev", "--timeout", "1"],
          env,
        );
        expect(missing.code).toBe(1);
        expect(missing.stderr).toContain("release 9.9.9 of app did not appear within 1 s");
        // A release that exists but is not deployed there: says so, and how to deploy it.
        const notThere = await runFerry(
          ["release", "wait", "1.0.2", "--project", "app", "--env", "prod", "--timeout", "1"],
          env,
        );
        expect(notThere.code).toBe(1);
        expect(notThere.stderr).toContain("release 1.0.2 of app was not deployed to prod within 1 s");
        const bad = await runFerry(
          ["release", "wait", "1.0.2", "--project", "app", "--env", "dev", "--timeout", "0"],
          env,
        );
        expect(bad.code).not.toBe(0);
        expect(bad.stderr).toContain("--timeout 600");
      } finally {
        rmSync(home, { recursive: true, force: true });
      }
    }, 180_000);

    it.sequential("the same notification delivered twice, and replayed later, creates one release", async () => {
      const before = (await releases()).length;
      const envelope = {
        events: [
          {
            id: "replayed-event",
            action: "push",
            target: {
              mediaType: "application/vnd.oci.image.manifest.v1+json",
              repository: "demo/app",
              tag: "1.0.3-beta",
            },
          },
        ],
      };
      for (let delivery = 0; delivery < 3; delivery++) {
        const answer = await notify(envelope);
        expect(answer.status).toBe(200);
        const body = (await answer.json()) as { firings: { outcome: string }[] };
        expect(body.firings.map((firing) => firing.outcome)).toEqual(["already-seen"]);
      }
      expect((await releases()).length).toBe(before);
      // Each delivery that did nothing is audited with its cause and why.
      const ignored = (await ignoreEntries()).filter((entry) => entry.diff.tag?.to === "1.0.3-beta");
      expect(ignored.length).toBeGreaterThanOrEqual(3);
      expect(ignored[0]?.actor.name).toBe("feed trigger beta pushes");
      expect(ignored[0]?.diff.cause?.to).toBe("notification");
      expect(String(ignored[0]?.diff.reason?.to)).toMatch(
        /^nothing new: digest sha256:[0-9a-f]{64} was acted on already/,
      );
    });

    it.sequential("a tag the version rule does not match, and a layer push, create nothing", async () => {
      const before = (await releases()).length;
      await pushTestImage(registry.url, "demo/app", "nightly", { content: "nightly", auth });
      // The registry's notification of the tag is answered, and audited as ignored, saying why.
      const ignored = await waitFor("the ignored nightly tag in the audit log", async () =>
        (await ignoreEntries()).find((entry) => entry.diff.tag?.to === "nightly"),
      );
      expect(ignored.diff.reason?.to).toBe("tag nightly does not match image 'web''s version rule");
      await sleep(1_000);
      expect((await releases()).length).toBe(before);
    });

    it.sequential("refuses and audits a notification with a wrong or missing secret", async () => {
      const envelope = { events: [{ action: "push", target: { repository: "demo/app", tag: "9.9.9-beta" } }] };
      expect((await notify(envelope, "Bearer wrong-secret-0123456789")).status).toBe(401);
      expect((await notify(envelope, "")).status).toBe(401);
      const audit = await test.call<{ items: { action: string; resource: { name: string } }[] }>(
        "GET",
        "/api/v1/audit?action=trigger.refused",
      );
      expect(audit.body.items.length).toBeGreaterThanOrEqual(2);
      expect(JSON.stringify(audit.body)).not.toContain(secret);
      expect((await releases()).some((release) => release.version === "9.9.9")).toBe(false);
    });

    it.sequential("with notifications off, polling finds a new tag within its interval; the first poll only notes what is there", async () => {
      const createdAt = Date.now();
      const created = await test.call<{ id: string }>("POST", "/api/v1/projects/app/triggers", {
        name: "poll",
        image: "web",
        versionFromTag: "^(\\d+\\.\\d+\\.\\d+)-beta$",
        secret: "another-secret-0123456789abcdef",
        pollSeconds: 10,
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      // The registry's notifications go to the other trigger: pause it, so only the poll acts.
      expect((await test.call("PATCH", `/api/v1/projects/app/triggers/${triggerId}`, { paused: true })).status).toBe(
        200,
      );
      const baseline = await waitFor("the first poll", async () => {
        const trigger = await test.call<{
          lastPolledAt: string | null;
          lastFiring: { cause: string; outcome: string } | null;
        }>("GET", `/api/v1/projects/app/triggers/poll`);
        return trigger.body.lastPolledAt === null ? undefined : trigger.body;
      });
      // Created, the trigger is polled at once: the poller planned its sleep again (it has no
      // tick, and would otherwise sleep up to a minute when no trigger polled before).
      expect(Date.now() - createdAt).toBeLessThan(15_000);
      // The first poll only noted the newest tag there: its last firing says so.
      expect(baseline.lastFiring).toMatchObject({ cause: "baseline" });
      expect(baseline.lastFiring?.outcome).toMatch(/^first poll: noted \S+-beta, already there; nothing released$/);
      const before = (await releases()).map((release) => release.version);
      const pushedAt = Date.now();
      await pushTestImage(registry.url, "demo/app", "1.0.4-beta", { content: "1.0.4", auth });
      const release = await waitFor(
        "release 1.0.4 by polling",
        async () => (await releases()).find((candidate) => candidate.version === "1.0.4"),
        30_000,
      );
      expect(Date.now() - pushedAt).toBeLessThan(25_000);
      expect(before).not.toContain("1.0.4");
      expect(release.notes).toContain("feed trigger 'poll'");
      expect(release.notes).toContain("registry poll");
      // The paused trigger got the registry's notification of the same push: audited as ignored.
      const paused = await waitFor("the paused trigger's ignored notification", async () =>
        (await ignoreEntries()).find((entry) => entry.diff.tag?.to === "1.0.4-beta"),
      );
      expect(paused.actor.name).toBe("feed trigger beta pushes");
      expect(paused.diff.reason?.to).toBe("the trigger is paused");
      // The release is made before the firing records it: wait for the firing to say so.
      const fired = await waitFor("the poll's firing", async () => {
        const trigger = await test.call<{ lastFiring: { cause: string; outcome: string } | null }>(
          "GET",
          "/api/v1/projects/app/triggers/poll",
        );
        return trigger.body.lastFiring?.cause === "poll" ? trigger.body.lastFiring : undefined;
      });
      expect(fired.outcome).toBe("released 1.0.4 from tag 1.0.4-beta");
    });

    it.sequential("polling a repository nothing was pushed to yet: its first tag, pushed after the first poll, is released", async () => {
      await test.call("POST", "/api/v1/projects", { name: "fresh", lifecycle: "two" });
      await saveBetaProcess("fresh", "demo/fresh");
      const created = await test.call("POST", "/api/v1/projects/fresh/triggers", {
        name: "first push",
        image: "web",
        versionFromTag: "^(\\d+\\.\\d+\\.\\d+)-beta$",
        secret: "fresh-secret-0123456789abcdef",
        pollSeconds: 10,
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      // The first poll finds no repository: that is its baseline (nothing), not an error to retry.
      const polled = await waitFor("the first poll", async () => {
        const trigger = await test.call<{
          lastPolledAt: string | null;
          lastError: string | null;
          lastFiring: { cause: string; outcome: string } | null;
        }>("GET", "/api/v1/projects/fresh/triggers/first%20push");
        return trigger.body.lastPolledAt === null ? undefined : trigger.body;
      });
      expect(polled.lastFiring).toMatchObject({
        cause: "baseline",
        outcome: "first poll: the repository had no matching tag yet; nothing released",
      });
      await pushTestImage(registry.url, "demo/fresh", "2.0.0-beta", { content: "2.0.0", auth });
      const release = await waitFor(
        "release 2.0.0 by polling",
        async () =>
          (await test.call<{ items: Release[] }>("GET", "/api/v1/projects/fresh/releases")).body.items.find(
            (candidate) => candidate.version === "2.0.0",
          ),
        30_000,
      );
      expect(release.images).toEqual([expect.objectContaining({ tag: "2.0.0-beta" })]);
    });

    it.sequential("ferry trigger create / list / pause / resume: the secret from standard input, never printed", async () => {
      const home = mkdtempSync(join(tmpdir(), "ferry-trigger-cli-"));
      const env = isolatedEnv(home, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey });
      const created = await runFerry(
        ["trigger", "create", "cli", "--project", "app", "--image", "web", "--poll-seconds", "off", "--json"],
        env,
        { input: "cli-secret-0123456789abcdef\n" },
      );
      expectSuccess(created);
      expect(parseJson<{ pollSeconds: number | null; secret: string }>(created)).toMatchObject({
        pollSeconds: null,
        secret: "set",
      });
      const paused = await runFerry(["trigger", "pause", "cli", "--project", "app", "--json"], env);
      expectSuccess(paused);
      expect(parseJson<{ paused: boolean }>(paused).paused).toBe(true);
      const listed = await runFerry(["trigger", "list", "--project", "app"], env);
      expectSuccess(listed);
      expect(listed.stdout).toMatch(/cli\s+web\s+notifications only\s+true/);
      // Each trigger's last firing: the poll's release of 1.0.4; none yet for the new one.
      expect(listed.stdout).toContain("LAST FIRING");
      expect(listed.stdout).toMatch(/poll\s+web\s+every 10 s.*\(poll\): released 1\.0\.4 from tag 1\.0\.4-beta/);
      expect(listed.stdout).toMatch(/cli\s+web\s+notifications only\s+true\s+-\s+-\s+-/);
      for (const output of [created, paused, listed]) expect(output.stdout + output.stderr).not.toContain("cli-secret");
      const bad = await runFerry(
        ["trigger", "create", "x", "--project", "app", "--image", "web", "--poll-seconds", "5"],
        env,
      );
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toContain("10 to 86400");
      rmSync(home, { recursive: true, force: true });
    });

    it.sequential("refuses a trigger on an image the project does not have, naming the field", async () => {
      const answer = await test.call<{ errors: { pointer: string; detail: string }[] }>(
        "POST",
        "/api/v1/projects/app/triggers",
        { name: "bad", image: "api", secret: "0123456789abcdef0123", versionFromTag: "^(a+)+$x(" },
      );
      expect(answer.status).toBe(400);
      expect(answer.body.errors.map((error) => error.pointer)).toContain("/versionFromTag");
    });
  },
);
