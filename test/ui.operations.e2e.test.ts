import { createHash } from "node:crypto";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Browser, ensureWebBuilt, launchBrowser } from "./helpers/browser.js";
import { callOk, expectPageAccessible, failOnBrowserErrors, signInOnPage } from "./helpers/dashboard.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/*
 * A runbook's schedules and a task's artifacts in the dashboard (issue 14, ADR 0043), in
 * Debian's Chromium against a real `ferry server` whose scheduler fires a real schedule and
 * whose script step attaches a real file: a consumer who may run the runbook in staging only
 * sees the staging schedules with their next and last firing and its cause, and no Pause; an
 * editor pauses and resumes one (the API then says so); the task the firing queued lists its
 * artifact, whose download through the API is the file, byte for byte; a prod task's
 * artifacts are not the staging consumer's to see or download.
 */

const CONSUMER = "cora";
const EDITOR = "eddie";
const PASSWORD = "a long enough password";

interface ScheduleAnswer {
  name: string;
  paused: boolean;
  nextRunAt: string | null;
  lastFiring: { cause: string; taskId: string | null; error: string | null } | null;
}

describe("web dashboard: schedules and artifacts", () => {
  let test: TestServer;
  let browser: Browser;
  let page: Page;
  let stagingTask: string;
  let prodTask: string;
  const url = (path: string) => new URL(path, test.server.url).toString();
  const ok = <T = Record<string, unknown>>(method: string, path: string, body?: unknown) =>
    callOk<T>(test, method, path, body);
  const schedules = "/api/v1/projects/shop/runbooks/backup/schedules";
  const expectAccessible = (what: string) => expectPageAccessible(page, what);
  const signIn = async (username: string) => {
    await page.context().clearCookies();
    await signInOnPage(page, test.server.url, username, PASSWORD);
  };
  /** What a GET of the API answers to the signed-in browser (its session cookie): status and body bytes. */
  const fetchInPage = async (path: string) =>
    (await page.evaluate(async (target) => {
      const response = await fetch(target, { credentials: "same-origin" });
      return { status: response.status, bytes: [...new Uint8Array(await response.arrayBuffer())] };
    }, path)) as { status: number; bytes: number[] };
  /** What `read` gives once it is not null (checked every 200 ms; expect.poll works only inside a test). */
  const until = async <T>(what: string, read: () => Promise<T | null>, timeoutMs = 60_000): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await read();
      if (value !== null) return value;
      if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  };
  const waitForTask = async (taskId: string) => {
    const state = await until(`task ${taskId} ends`, async () => {
      const task = await ok<{ state: string }>("GET", `/api/v1/tasks/${taskId}`);
      return ["succeeded", "failed", "cancelled", "interrupted"].includes(task.state) ? task.state : null;
    });
    expect(state).toBe("succeeded");
  };

  beforeAll(async () => {
    await ensureWebBuilt();
    test = await startTestServer();
    for (const name of ["staging", "prod"]) await ok("POST", "/api/v1/environments", { name });
    await ok("POST", "/api/v1/lifecycles", { name: "standard", phases: [{ environments: ["staging", "prod"] }] });
    await ok("POST", "/api/v1/projects", { name: "shop", lifecycle: "standard" });
    await ok("POST", "/api/v1/projects/shop/runbooks", {
      name: "Backup",
      // Firings and runs by hand may overlap: the test does not wait for one before the next.
      overlapItself: true,
      overlapDeployments: true,
      process: {
        steps: [
          {
            name: "dump",
            kind: "script",
            config: {
              script: [
                'printf "backup of %s\\n" "$WHERE" > dump.sql',
                "seq 1 5000 >> dump.sql",
                "echo \"##ferry[artifact path='dump.sql' name='dump.sql']\"",
              ].join("\n"),
              env: { WHERE: "#{Ferry.Environment.Slug}" },
            },
          },
        ],
      },
    });
    await ok("POST", "/api/v1/projects/shop/runbooks/backup/publish");
    // One that fires every 5 s (paused by the test once it fired), one daily, one in prod.
    await ok("POST", schedules, { name: "frequent", environment: "staging", cron: "*/5 * * * * *" });
    await ok("POST", schedules, {
      name: "nightly",
      environment: "staging",
      cron: "0 3 * * *",
      timeZone: "Europe/Berlin",
      missed: "runOnce",
    });
    await ok("POST", schedules, { name: "prod-weekly", environment: "prod", cron: "0 4 * * 0", paused: true });
    for (const [username, roles] of [
      [CONSUMER, [{ role: "runbook-consumer", projects: ["shop"], environments: ["staging"] }]],
      [
        EDITOR,
        [
          { role: "project-editor", projects: ["shop"] },
          { role: "runbook-consumer", projects: ["shop"] },
        ],
      ],
    ] as const) {
      await ok("POST", "/api/v1/users", { username, password: PASSWORD });
      await ok("POST", "/api/v1/teams", { name: `${username} team`, members: [username], roles });
    }
    // The frequent schedule's first firing, then no more (the page's rows stay as they are).
    await until("the frequent schedule's first firing", async () => {
      const schedule = await ok<ScheduleAnswer>("GET", `${schedules}/frequent`);
      return schedule.lastFiring?.taskId ?? null;
    });
    const fired = await ok<ScheduleAnswer>("POST", `${schedules}/frequent/pause`);
    stagingTask = String(fired.lastFiring?.taskId);
    await waitForTask(stagingTask);
    prodTask = String(
      (await ok<{ taskId: string }>("POST", "/api/v1/projects/shop/runbooks/backup/runs", { environment: "prod" }))
        .taskId,
    );
    await waitForTask(prodTask);
    browser = await launchBrowser();
    page = await browser.newPage();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await test?.close();
  });

  failOnBrowserErrors(() => browser);

  it("shows a consumer the staging schedules, their firings and causes, and no Pause", async () => {
    await signIn(CONSUMER);
    await page.goto(url("/projects/shop/runbooks/backup"));
    const section = page.getByRole("region", { name: "Schedules" });
    const nightly = section.getByRole("row", { name: /nightly/ });
    await nightly.waitFor();
    const nightlyText = await nightly.innerText();
    expect(nightlyText).toMatch(/0 3 \* \* \*\s+\(Europe\/Berlin\)/);
    expect(nightlyText).toContain("missed firings: run once");
    expect(nightlyText).toMatch(/\(in \d+ (min|h)\)/);
    expect(nightlyText).toContain("not fired yet");
    const frequent = await section.getByRole("row", { name: /frequent/ }).innerText();
    expect(frequent).toMatch(/paused/);
    expect(frequent).toContain("none while paused");
    expect(frequent).toContain("(schedule frequent)");
    expect(frequent).toContain(`queued task ${stagingTask}`);
    // prod's schedule is not the consumer's to see; changing one is not theirs to do.
    expect(await section.getByRole("row", { name: /prod-weekly/ }).count()).toBe(0);
    expect(await section.getByRole("button").count()).toBe(0);
    // The run the firing queued says why it ran.
    const run = page
      .getByRole("region", { name: "Runs" })
      .getByRole("row", { name: /schedule frequent/ })
      .first();
    expect(await run.innerText()).toContain("fired: schedule frequent, due");
    await expectAccessible("runbook page with schedules");
  });

  it("lists the task's artifact, and the download is the file", async () => {
    await page
      .getByRole("region", { name: "Schedules" })
      .getByRole("link", { name: `queued task ${stagingTask}` })
      .click();
    const artifacts = page.getByRole("region", { name: "Artifacts" });
    const link = artifacts.getByRole("link", { name: "dump.sql" });
    await link.waitFor();
    const expected = Buffer.from(
      `backup of staging\n${Array.from({ length: 5000 }, (_, index) => index + 1).join("\n")}\n`,
    );
    const sha256 = createHash("sha256").update(expected).digest("hex");
    const text = await artifacts.innerText();
    expect(text).toContain(`${(expected.length / 1024).toFixed(1)} KiB`);
    expect(text).toContain(sha256);
    expect(text).toContain("from step dump");
    const href = (await link.getAttribute("href")) ?? "";
    expect(href).toMatch(/^\/api\/v1\/artifacts\/art_[0-9a-f]+\/content$/);
    const downloaded = await fetchInPage(href);
    expect(downloaded.status).toBe(200);
    expect(createHash("sha256").update(Buffer.from(downloaded.bytes)).digest("hex")).toBe(sha256);
    await expectAccessible("task page with an artifact");
  });

  it("keeps a prod task's artifacts from the staging consumer", async () => {
    const listed = await ok<{ id: string }[]>("GET", `/api/v1/tasks/${prodTask}/artifacts`);
    expect(listed).toHaveLength(1);
    expect((await fetchInPage(`/api/v1/tasks/${prodTask}/artifacts`)).status).toBe(404);
    expect((await fetchInPage(`/api/v1/artifacts/${listed[0]?.id}/content`)).status).toBe(404);
    // The browser logs each refused request; these were meant.
    expect(browser.errors).toEqual([expect.stringContaining("404"), expect.stringContaining("404")]);
    browser.errors.length = 0;
  });

  it("lets an editor pause and resume a schedule, which the API then says", async () => {
    await signIn(EDITOR);
    await page.goto(url("/projects/shop/runbooks/backup"));
    const section = page.getByRole("region", { name: "Schedules" });
    await section.getByRole("row", { name: /prod-weekly/ }).waitFor();
    await section.getByRole("button", { name: "Pause schedule nightly" }).click();
    await page.getByRole("status").filter({ hasText: "Schedule nightly paused" }).waitFor();
    expect(await section.getByRole("row", { name: /nightly/ }).innerText()).toContain("none while paused");
    expect((await ok<ScheduleAnswer>("GET", `${schedules}/nightly`)).paused).toBe(true);
    await expectAccessible("runbook page, a schedule paused");
    await section.getByRole("button", { name: "Resume schedule nightly" }).click();
    await page.getByRole("status").filter({ hasText: "Schedule nightly resumed" }).waitFor();
    const resumed = await ok<ScheduleAnswer>("GET", `${schedules}/nightly`);
    expect(resumed).toMatchObject({ paused: false });
    expect(resumed.nextRunAt).not.toBeNull();
    expect(await section.getByRole("row", { name: /nightly/ }).innerText()).toMatch(/\(in \d+ (min|h)\)/);
  }, 60_000);
});
