import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  accessibilityViolations,
  type Browser,
  describeViolations,
  ensureWebBuilt,
  launchBrowser,
} from "./helpers/browser.js";
import { callOk, expectPageAccessible, failOnBrowserErrors, signInOnPage } from "./helpers/dashboard.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/*
 * Runbooks in the dashboard, as the people who use them see them, in Debian's Chromium
 * against a real `ferry server` running the runs' script steps: a runbook consumer (who
 * may run runbooks in staging only) finds the project's runbooks, runs the published one
 * with typed parameters and watches its live log to success; a bad parameter is shown at
 * its field and queues nothing; a sensitive parameter's value appears nowhere on any page
 * afterwards; the consumer has no Publish and no draft run. An editor then publishes the
 * changed draft and sees the version number change.
 */

const CONSUMER = "casey";
const EDITOR = "erin";
const PASSWORD = "a long enough password";
const SECRET = "hunter2-Zq8-never-shown";
const SCREENSHOTS = join(import.meta.dirname, "..", "docs", "screenshots");

describe("web dashboard: runbooks", () => {
  let test: TestServer;
  let browser: Browser;
  let page: Page;
  const url = (path: string) => new URL(path, test.server.url).toString();
  const ok = <T = Record<string, unknown>>(method: string, path: string, body?: unknown) =>
    callOk<T>(test, method, path, body);
  const taskCount = async () => (await ok<{ total: number }>("GET", "/api/v1/tasks?limit=1")).total;
  const expectAccessible = (what: string) => expectPageAccessible(page, what);
  const signIn = async (username: string) => {
    await signInOnPage(page, test.server.url, username, PASSWORD);
  };
  /** Everything the page holds: its markup and the values of its fields (which markup leaves out). */
  const everythingOnPage = async () =>
    `${await page.content()}\n${String(
      await page.evaluate(
        `[...document.querySelectorAll("input, textarea, select")].map((field) => field.value).join("\\n")`,
      ),
    )}`;

  beforeAll(async () => {
    await ensureWebBuilt();
    test = await startTestServer();
    mkdirSync(SCREENSHOTS, { recursive: true });
    for (const name of ["staging", "prod"]) await ok("POST", "/api/v1/environments", { name });
    await ok("POST", "/api/v1/lifecycles", { name: "standard", phases: [{ environments: ["staging", "prod"] }] });
    await ok("POST", "/api/v1/projects", { name: "shop", lifecycle: "standard", description: "the web shop" });
    await ok("POST", "/api/v1/targets", { name: "cache-1", environments: ["staging", "prod"], roles: ["cache"] });
    await ok("POST", "/api/v1/projects/shop/runbooks", {
      name: "Flush cache",
      description: "Empties the cache of one region",
      environments: ["staging", "prod"],
      process: {
        steps: [
          {
            name: "flush",
            kind: "script",
            roles: ["cache"],
            config: {
              script: [
                'echo "flushing $1 keeping $2 with token $TOKEN"',
                'for i in $(seq -w 1 40); do echo "flushed batch $i"; sleep 0.05; done',
              ].join("\n"),
              arguments: ["#{Region}", "#{Keep}"],
              env: { TOKEN: "#{Token}" },
            },
          },
        ],
      },
      parameters: [
        { name: "Region", label: "Region", type: "choice", choices: ["eu", "us"] },
        { name: "Keep", label: "Keep entries", type: "number", min: 1, max: 10, default: 3 },
        { name: "Token", label: "Cache token", sensitive: true, description: "The cache's admin token" },
      ],
    });
    await ok("POST", "/api/v1/projects/shop/runbooks/flush-cache/publish");
    await ok("POST", "/api/v1/projects/shop/runbooks", {
      name: "Warm cache",
      environments: ["staging"],
      process: {
        steps: [{ name: "warm", kind: "script", config: { script: 'echo "warming"; sleep 120; echo "warm"' } }],
      },
    });
    await ok("POST", "/api/v1/projects/shop/runbooks/warm-cache/publish");
    await ok("POST", "/api/v1/projects/shop/runbooks", {
      name: "Rebuild index",
      // Its runs need no lock: the paging test queues twenty at once.
      overlapDeployments: true,
      overlapItself: true,
      process: { steps: [{ name: "rebuild", kind: "script", config: { script: "echo rebuilt" } }] },
    });

    for (const [username, roles] of [
      // Runs runbooks in staging only (and sees prod's nothing).
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
    browser = await launchBrowser();
    page = await browser.newPage();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await test?.close();
  });

  failOnBrowserErrors(() => browser);

  it("lists a project's runbooks with their published version, or draft only", async () => {
    await signIn(CONSUMER);
    await page.goto(url("/projects/shop"));
    await page.getByRole("link", { name: "Runbooks" }).click();
    await page.getByRole("heading", { name: "Runbooks of shop" }).waitFor();
    const flush = page.getByRole("row", { name: /Flush cache/ });
    await flush.waitFor();
    expect(await flush.innerText()).toMatch(/Empties the cache of one region/);
    expect(await flush.innerText()).toMatch(/version 1/);
    expect(await flush.innerText()).toMatch(/never run/);
    expect(await page.getByRole("row", { name: /Rebuild index/ }).innerText()).toMatch(/draft only/);
    await expectAccessible("runbooks page");
  });

  it("refuses a bad parameter at its field and queues nothing", async () => {
    await page.getByRole("link", { name: "Flush cache" }).click();
    await page.getByRole("heading", { name: "Flush cache", level: 1 }).waitFor();
    // The published process and parameters, and no action the consumer may not take.
    const published = page.getByRole("region", { name: "Published version 1" });
    expect(await published.innerText()).toMatch(/flush\s+script\s+on targets with role cache/);
    expect(await published.innerText()).toMatch(/Keep\s+number\s+default 3 · at least 1 · at most 10/);
    expect(await page.getByRole("button", { name: "Publish" }).count()).toBe(0);
    expect(await page.getByText("Run the draft").count()).toBe(0);
    // Runs in staging and prod, but this consumer may run it in staging only.
    const environment = page.getByLabel("Environment");
    expect(await environment.inputValue()).toBe("staging");
    expect(await environment.locator("option").allInnerTexts()).toEqual(["staging", "prod (needs runRunbooks)"]);
    expect(await environment.locator("option", { hasText: "prod" }).isDisabled()).toBe(true);
    await expectAccessible("runbook page");

    const before = await taskCount();
    await page.getByLabel("Region").selectOption("eu");
    await page.getByLabel("Keep entries").fill("42");
    const token = page.getByLabel("Cache token");
    expect(await token.getAttribute("type")).toBe("password");
    await token.fill(SECRET);
    await page.getByRole("button", { name: "Run", exact: true }).click();

    const keep = page.getByLabel("Keep entries");
    await expect.poll(() => keep.getAttribute("aria-invalid")).toBe("true");
    const problemId = (await keep.getAttribute("aria-describedby")) ?? "";
    expect(await page.locator(`[id="${problemId}"]`).innerText()).toBe("parameter 'Keep' '42' is above the maximum 10");
    expect(await page.getByRole("alert").innerText()).toMatch(/not valid \(Keep\); nothing was queued/);
    expect(await page.getByLabel("Region").getAttribute("aria-invalid")).toBeNull();
    expect(await taskCount()).toBe(before);
    // The browser logs every refused request; this one was meant.
    expect(browser.errors).toEqual([expect.stringContaining("status of 400")]);
    browser.errors.length = 0;
    expect(page.url()).toMatch(/\/projects\/shop\/runbooks\/flush-cache$/);
    // The refusal does not quote the secret.
    expect(await page.content()).not.toContain(SECRET);
    await expectAccessible("runbook page with a refused run");
  });

  it("shows a freeze's refusal, naming it, and queues nothing", async () => {
    await ok("POST", "/api/v1/projects/shop/freezes", {
      name: "Sale week",
      description: "no changes during the sale",
      environments: ["staging"],
      window: {
        kind: "once",
        from: new Date(Date.now() - 60_000).toISOString(),
        until: new Date(Date.now() + 3_600_000).toISOString(),
      },
      runbooks: true,
    });
    try {
      const before = await taskCount();
      await page.getByLabel("Keep entries").fill("5");
      await page.getByRole("button", { name: "Run", exact: true }).click();
      const alert = page.getByRole("alert").filter({ hasText: "Sale week" });
      await alert.waitFor();
      expect(await alert.innerText()).toContain("no changes during the sale");
      // The consumer may not override a freeze: no field for a reason is offered.
      expect(await page.getByLabel(/Freeze override/).count()).toBe(0);
      expect(await taskCount()).toBe(before);
      expect(browser.errors).toEqual([expect.stringContaining("status of 409")]);
      browser.errors.length = 0;
    } finally {
      await ok("DELETE", "/api/v1/projects/shop/freezes/Sale%20week");
    }
  });

  it("runs the published version with its parameters and follows the live log to success", async () => {
    await page.getByLabel("Keep entries").fill("5");
    await page.getByRole("button", { name: "Run", exact: true }).click();
    await page.waitForURL(/\/tasks\/task_/);
    await page.getByRole("heading", { name: "Run Flush cache of shop in staging" }).waitFor();
    const count = page.locator(".log-count");
    // Lines arrive while it runs, then it ends.
    await page.locator(".state").first().getByText("succeeded").waitFor({ timeout: 30_000 });
    await count.getByText("complete").waitFor();
    expect(Number(/(\d[\d,]*) lines?/.exec(await count.innerText())?.[1]?.replaceAll(",", ""))).toBeGreaterThan(40);
    await page.getByLabel("Search the log").fill("flushing");
    await page.getByRole("status").filter({ hasText: "1 of 1" }).waitFor();
    expect(await page.locator(".log-row", { hasText: "flushing" }).innerText()).toContain(
      "flushing eu keeping 5 with token ********",
    );

    // What ran: the runbook, its version, the parameters with the sensitive one masked.
    const facts = page.getByRole("definition").filter({ hasText: "Region=" });
    expect(await facts.innerText()).toMatch(/Region=eu\s+Keep=5\s+Token=\*{8}/);
    expect(await page.getByRole("definition").filter({ hasText: "published version 1" }).count()).toBe(1);
    expect(await page.getByRole("navigation", { name: "Breadcrumbs" }).innerText()).toMatch(
      /shop\s*Runbooks\s*Flush cache/,
    );
    expect(await everythingOnPage()).not.toContain(SECRET);
    await expectAccessible("a runbook run's task page");

    // Back on the runbook: the run is listed, and the secret is nowhere there either.
    await page.getByRole("navigation", { name: "Breadcrumbs" }).getByRole("link", { name: "Flush cache" }).click();
    const runs = page.getByRole("table", { name: "Runs" });
    const row = runs.getByRole("row").nth(1);
    // The list may first show what was cached while the run was going, then its refetch.
    await row.getByText("succeeded").waitFor();
    expect(await row.innerText()).toMatch(/succeeded[\s\S]*staging\s+version 1\s+Region=eu Keep=5 Token=\*{8}\s+casey/);
    expect(await everythingOnPage()).not.toContain(SECRET);
    await page.goto(url("/projects/shop/runbooks"));
    const flush = page.getByRole("row", { name: /Flush cache/ });
    await flush.getByText("succeeded").waitFor();
    expect(await flush.innerText()).toMatch(/staging\s+✔\s+succeeded/);
    expect(await everythingOnPage()).not.toContain(SECRET);
  }, 60_000);

  it("lets the consumer cancel a run of theirs from its task page (cancelling a run needs runRunbooks, not deploy)", async () => {
    await page.goto(url("/projects/shop/runbooks/warm-cache"));
    await page.getByRole("heading", { name: "Warm cache", level: 1 }).waitFor();
    // It runs in staging only: prod is not offered.
    expect(await page.getByLabel("Environment").locator("option").allInnerTexts()).toEqual(["staging"]);
    await page.getByRole("button", { name: "Run", exact: true }).click();
    await page.waitForURL(/\/tasks\/task_/);
    await page.locator(".state").first().getByText("running").waitFor({ timeout: 30_000 });
    const cancel = page.getByRole("button", { name: "Cancel task" });
    expect(await cancel.isEnabled()).toBe(true);
    await cancel.click();
    await page.getByRole("dialog").getByRole("button", { name: "Cancel the task" }).click();
    await page.locator(".state").first().getByText("cancelled").waitFor({ timeout: 30_000 });
  }, 60_000);

  it("updates the runbook list live when a run ends, pages the runs, and stays usable in dark mode and at phone width", async () => {
    await page.goto(url("/projects/shop/runbooks"));
    const rebuild = page.getByRole("row", { name: /Rebuild index/ });
    await rebuild.getByText("never run").waitFor();
    // Someone who may edit runbooks runs its draft (from the CLI, say): the open list shows it without a reload.
    const { taskId } = await ok<{ taskId: string }>("POST", "/api/v1/projects/shop/runbooks/rebuild-index/runs", {
      environment: "staging",
      draft: true,
    });
    await test.waitForTask(taskId);
    await rebuild.getByText("succeeded").waitFor({ timeout: 15_000 });
    expect(await rebuild.getByRole("link", { name: /succeeded/ }).getAttribute("href")).toBe(`/tasks/${taskId}`);

    // Its runs, a page of 20 at a time, newest first.
    const more: string[] = [];
    for (let run = 0; run < 21; run++) {
      const created = await ok<{ taskId: string }>("POST", "/api/v1/projects/shop/runbooks/rebuild-index/runs", {
        environment: "staging",
        draft: true,
      });
      more.push(created.taskId);
    }
    await rebuild.getByRole("link", { name: "Rebuild index" }).click();
    const runs = page.getByRole("table", { name: "Runs" });
    await runs.waitFor();
    await expect.poll(() => runs.getByRole("row").count(), { timeout: 15_000 }).toBe(21);
    const pages = page.getByRole("navigation", { name: "Pages of runs" });
    expect(await pages.getByRole("button", { name: "Newer" }).isDisabled()).toBe(true);
    await pages.getByRole("button", { name: "Older" }).click();
    await page.waitForURL(/offset=20/);
    await expect.poll(() => runs.getByRole("row").count()).toBe(3);
    expect(await runs.getByRole("row").last().getByRole("link").getAttribute("href")).toBe(`/tasks/${taskId}`);
    expect(await pages.getByRole("button", { name: "Older" }).isDisabled()).toBe(true);
    expect(await pages.innerText()).toContain("21–22");
    for (const each of more) await test.waitForTask(each);

    const dark = await browser.newPage({ colorScheme: "dark" });
    await dark.goto(url("/projects/shop/runbooks/flush-cache"));
    await dark.getByRole("heading", { name: "Flush cache", level: 1 }).waitFor();
    await dark.getByRole("table", { name: "Runs" }).waitFor();
    const darkViolations = await accessibilityViolations(dark);
    expect(darkViolations, describeViolations(darkViolations)).toEqual([]);
    await dark.close();

    const phone = await browser.newPage({ width: 390, height: 844 });
    for (const path of ["/projects/shop/runbooks", "/projects/shop/runbooks/flush-cache"]) {
      await phone.goto(url(path));
      await phone.getByRole("table").first().waitFor();
      // Tables scroll inside their own box; the page does not scroll sideways.
      expect(
        await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth"),
        path,
      ).toBeLessThanOrEqual(0);
    }
    await phone.close();
  }, 60_000);

  it("lets an editor publish the changed draft, and shows the new version", async () => {
    await ok("PATCH", "/api/v1/projects/shop/runbooks/flush-cache", {
      process: {
        steps: [{ name: "flush-all", kind: "script", roles: ["cache"], config: { script: "echo flushed everything" } }],
      },
    });
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await signIn(EDITOR);
    await page.goto(url("/projects/shop/runbooks/flush-cache"));
    await page.getByRole("heading", { name: "Flush cache", level: 1 }).waitFor();
    await page.getByText("The draft differs from version 1").waitFor();
    // Runs still use version 1's steps; the draft's are shown apart.
    expect(await page.getByRole("region", { name: "Published version 1" }).innerText()).not.toContain("flush-all");
    await page.getByText("The draft (not published)").click();
    expect(await page.getByRole("region", { name: "Draft" }).innerText()).toContain("flush-all");
    await page.screenshot({ path: join(SCREENSHOTS, "runbook.png"), fullPage: true });
    await expectAccessible("runbook page for an editor");

    // An editor may run the draft explicitly: its task says so, and runs the draft's step.
    await page.getByLabel("Run the draft instead of the published version").check();
    await page.getByRole("heading", { name: "Run the draft" }).waitFor();
    await page.getByLabel("Region").selectOption("us");
    await page.getByLabel("Cache token").fill(SECRET);
    await page.getByRole("button", { name: "Run the draft" }).click();
    await page.waitForURL(/\/tasks\/task_/);
    await page.getByRole("heading", { name: "Run Flush cache (draft) of shop in staging" }).waitFor();
    await page.locator(".state").first().getByText("succeeded").waitFor({ timeout: 30_000 });
    expect(await page.getByRole("definition").filter({ hasText: "its draft" }).count()).toBe(1);
    await page.getByLabel("Search the log").fill("flushed everything");
    await page.getByRole("status").filter({ hasText: "1 of 1" }).waitFor();
    expect(await everythingOnPage()).not.toContain(SECRET);
    await page.goBack();
    await page.getByRole("heading", { name: "Flush cache", level: 1 }).waitFor();

    await page.getByRole("button", { name: "Publish" }).click();
    const dialog = page.getByRole("dialog", { name: "Publish Flush cache as version 2?" });
    await dialog.getByRole("button", { name: "Publish version 2" }).click();
    await page.getByRole("status").filter({ hasText: "Published version 2" }).waitFor();
    await page.getByRole("region", { name: "Published version 2" }).waitFor();
    expect(await page.getByRole("region", { name: "Published version 2" }).innerText()).toContain("flush-all");
    expect(await page.getByText("The draft differs").count()).toBe(0);
    expect(await page.locator(".page-header").innerText()).toContain("version 2");
    const published = await ok<{ published: { version: number; publishedBy: string } }>(
      "GET",
      "/api/v1/projects/shop/runbooks/flush-cache",
    );
    expect(published.published).toMatchObject({ version: 2, publishedBy: EDITOR });
  }, 60_000);
});
