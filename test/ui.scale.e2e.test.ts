import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Browser, ensureWebBuilt, launchBrowser } from "./helpers/browser.js";
import { callOk, failOnBrowserErrors, signInOnPage } from "./helpers/dashboard.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/*
 * The dashboard under strain, in Debian's Chromium against a real `ferry server`: a task
 * log whose connection drops mid-stream (the page must not show a line twice, the bug
 * Argo CD's log viewer has), 50,000 log lines and 1,000 projects (only the rows in view
 * may be in the page).
 */

const USERNAME = "lin";
const PASSWORD = "a long enough password";

describe("web dashboard at scale", () => {
  let test: TestServer;
  let browser: Browser;
  let page: Page;
  const url = (path: string) => new URL(path, test.server.url).toString();
  const ok = <T = Record<string, unknown>>(method: string, path: string, body?: unknown) =>
    callOk<T>(test, method, path, body);
  /** A release of `project` whose one step runs `script`, deployed to dev; returns the task id. */
  const deployScript = async (project: string, version: string, script: string) => {
    await ok("PUT", `/api/v1/projects/${project}/process`, {
      steps: [{ name: "print", kind: "script", config: { script } }],
    });
    await ok("POST", `/api/v1/projects/${project}/releases`, { version });
    return (
      await ok<{ taskId: string }>("POST", `/api/v1/projects/${project}/deployments`, {
        release: version,
        environment: "dev",
      })
    ).taskId;
  };
  const count = () => page.locator(".log-count");
  const lineCount = async () => Number(/^(\d+) lines?/.exec(await count().innerText())?.[1] ?? 0);

  beforeAll(async () => {
    await ensureWebBuilt();
    test = await startTestServer();
    browser = await launchBrowser();
    await ok("POST", "/api/v1/users", { username: USERNAME, password: PASSWORD, isAdmin: true });
    await ok("POST", "/api/v1/environments", { name: "dev" });
    await ok("POST", "/api/v1/lifecycles", { name: "only dev", phases: [{ environments: ["dev"] }] });
    await ok("POST", "/api/v1/projects", { name: "logs", lifecycle: "only-dev" });
    page = await browser.newPage();
    await signInOnPage(page, test.server.url, USERNAME, PASSWORD);
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await test?.close();
  });

  failOnBrowserErrors(() => browser);

  it("shows every line once when the connection drops while the log streams", async () => {
    const follows: string[] = [];
    page.on("request", (request) => {
      if (request.url().includes("/log?follow=1")) follows.push(request.url());
    });
    const taskId = await deployScript(
      "logs",
      "1.0.0",
      'for i in $(seq -w 1 150); do echo "tick $i of 150"; sleep 0.04; done',
    );
    await page.goto(url(`/tasks/${taskId}`));
    await count().getByText("streaming live").waitFor();
    await expect.poll(lineCount, { timeout: 15_000 }).toBeGreaterThan(40);
    // The server drops every connection (a proxy restarting, a network blip).
    test.server.app.server.closeAllConnections();
    await count().getByText("complete").waitFor({ timeout: 30_000 });
    // The browser reports the streams cut mid-response (the log's and the live updates'); nothing else.
    expect(browser.errors.every((error) => error.includes("net::ERR_INCOMPLETE_CHUNKED_ENCODING"))).toBe(true);
    browser.errors.length = 0;

    const task = await ok<{ logLines: number; state: string }>("GET", `/api/v1/tasks/${taskId}`);
    expect(task.state).toBe("succeeded");
    expect(await lineCount()).toBe(task.logLines);
    // It reconnected, asking for what follows the last line it had.
    expect(follows.length).toBeGreaterThanOrEqual(2);
    expect(Number(new URL(follows.at(-1) ?? "").searchParams.get("after"))).toBeGreaterThan(40);
    // Each tick once: search finds exactly one, and the rows on screen are in order without repeats.
    await page.getByLabel("Search the log").fill("tick 057 of");
    await page.getByRole("status").filter({ hasText: "1 of 1" }).waitFor();
    const shown = (await page.evaluate(
      `[...document.querySelectorAll(".log-row")].map((row) => Number(row.dataset.line))`,
    )) as number[];
    expect(shown.length).toBeGreaterThan(10);
    expect(new Set(shown).size).toBe(shown.length);
    const texts = await page.locator(".log-row .log-text").allInnerTexts();
    expect(new Set(texts).size).toBe(texts.length);
  });

  it("keeps 50,000 lines to the rows in view, and finds any of them", async () => {
    const taskId = await deployScript("logs", "2.0.0", "seq -f 'line %05g of 50000' 1 50000");
    const task = await test.waitForTask(taskId, 90_000);
    expect(task.state).toBe("succeeded");
    const started = Date.now();
    await page.goto(url(`/tasks/${taskId}`));
    await count().getByText("complete").waitFor({ timeout: 60_000 });
    console.log(`50,000-line log shown in ${Date.now() - started} ms`);
    expect(await lineCount()).toBe(task.logLines);
    expect(task.logLines).toBeGreaterThan(50_000);
    // Following, the view is at the end: the last line is on screen.
    await page.getByText("line 50000 of 50000").waitFor();
    expect(await page.locator(".log-row").count()).toBeLessThan(150);
    await page.getByLabel("Search the log").fill("line 00042 of");
    await page.getByRole("status").filter({ hasText: "1 of 1" }).waitFor();
    await page.getByText("line 00042 of 50000").waitFor();
    expect(await page.locator(".log-row").count()).toBeLessThan(150);
    await page.getByLabel("Search the log").fill("of 50000");
    await page.getByRole("status").filter({ hasText: "1 of 50000" }).waitFor();
    await page.getByLabel("Search the log").press("Shift+Enter");
    await page.getByRole("status").filter({ hasText: "50000 of 50000" }).waitFor();
    // Folding the step leaves its header and the task's own lines.
    await page.getByLabel("Search the log").fill("▶ print");
    await page.getByRole("status").filter({ hasText: "1 of 1" }).waitFor();
    await page.getByRole("button", { name: /▶ print/ }).click();
    await expect.poll(() => page.locator(".log-row").count()).toBeLessThan(5);
  }, 120_000);

  it("shows 1,000 projects with only the rows in view in the page", async () => {
    const names = Array.from({ length: 1000 }, (_, index) => `svc-${String(index).padStart(4, "0")}`);
    for (let start = 0; start < names.length; start += 25) {
      await Promise.all(
        names.slice(start, start + 25).map((name) => ok("POST", "/api/v1/projects", { name, lifecycle: "only-dev" })),
      );
    }
    const started = Date.now();
    await page.goto(url("/"));
    await page.getByText("1001 projects").waitFor({ timeout: 30_000 });
    await page.getByRole("rowheader", { name: /^logs/ }).waitFor();
    console.log(`1,001-project dashboard shown in ${Date.now() - started} ms`);
    expect(await page.getByRole("row").count()).toBeLessThan(60);
    // The page is as tall as all of them; scrolled to the end, the last one shows.
    await page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)");
    await page.getByRole("rowheader", { name: /^svc-0999/ }).waitFor();
    expect(await page.getByRole("row").count()).toBeLessThan(60);
    await page.getByLabel("Project").fill("svc-0500");
    await expect.poll(() => page.getByRole("rowheader").allInnerTexts()).toEqual([expect.stringMatching(/^svc-0500/)]);
  }, 120_000);
});
