import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  accessibilityViolations,
  type Browser,
  describeViolations,
  ensureWebBuilt,
  launchBrowser,
} from "./helpers/browser.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/*
 * The web dashboard as a person uses it: a real `ferry server` (engine included) serving
 * the built dashboard, driven by Debian's Chromium. Deployments run script and approval
 * steps, so no Docker is needed. The tests run in order and tell one story: sign in, watch,
 * release, approve, promote, roll back, edit a variable, sign out.
 */

const USERNAME = "ada";
const PASSWORD = "correct horse battery staple";
const SCREENSHOTS = join(import.meta.dirname, "..", "docs", "screenshots");

describe("web dashboard", () => {
  let test: TestServer;
  let browser: Browser;
  let page: Page;
  const url = (path: string) => new URL(path, test.server.url).toString();
  const ok = async <T = Record<string, unknown>>(method: string, path: string, body?: unknown) => {
    const response = await test.call<T>(method, path, body);
    expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
    return response.body;
  };
  /** Deploys with the admin key (as CI would) and returns the task id. */
  const deploy = async (project: string, release: string, environment: string) =>
    (await ok<{ taskId: string }>("POST", `/api/v1/projects/${project}/deployments`, { release, environment })).taskId;
  const expectAccessible = async (what: string) => {
    const violations = await accessibilityViolations(page);
    expect(violations, `${what}:\n${describeViolations(violations)}`).toEqual([]);
  };

  beforeAll(async () => {
    await ensureWebBuilt();
    test = await startTestServer();
    browser = await launchBrowser();
    mkdirSync(SCREENSHOTS, { recursive: true });

    await ok("POST", "/api/v1/users", { username: USERNAME, password: PASSWORD, displayName: "Ada", isAdmin: true });
    for (const name of ["dev", "test", "prod"]) await ok("POST", "/api/v1/environments", { name });
    await ok("POST", "/api/v1/lifecycles", {
      name: "default",
      phases: [{ environments: ["dev"], autoDeploy: true }, { environments: ["test"] }, { environments: ["prod"] }],
    });
    // A few projects in different states, for the matrix (and its screenshot).
    const quick = [{ name: "deploy", kind: "script", config: { script: "echo deploying" } }];
    for (const name of ["billing", "catalog", "search", "checkout"]) {
      await ok("POST", "/api/v1/projects", { name, lifecycle: "default" });
      await ok("PUT", `/api/v1/projects/${name}/process`, { steps: quick });
    }
    for (const [project, version] of [
      ["billing", "2.4.0"],
      ["catalog", "1.9.3"],
      ["search", "0.8.1"],
    ] as const) {
      const created = await ok<{ deployments: { taskId: string }[] }>("POST", `/api/v1/projects/${project}/releases`, {
        version,
      });
      await test.waitForTask(created.deployments[0]?.taskId ?? "");
    }
    await test.waitForTask(await deploy("billing", "2.4.0", "test"));
    await test.waitForTask(await deploy("billing", "2.4.0", "prod"));
    await test.waitForTask(await deploy("catalog", "1.9.3", "test"));
    await ok("PUT", "/api/v1/projects/search/process", {
      steps: [{ name: "migrate", kind: "script", config: { script: "echo 'migration failed' >&2; exit 1" } }],
    });
    await ok("POST", "/api/v1/projects/search/releases", { version: "0.9.0" });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await test?.close();
  });

  afterEach(() => {
    // No page may log an error to the console or throw.
    expect(browser.errors).toEqual([]);
  });

  it("answers every page's address with the dashboard, under a strict Content-Security-Policy", async () => {
    for (const path of ["/", "/sign-in", "/projects/billing", "/tasks/task_1", "/admin/users"]) {
      const response = await fetch(url(path));
      expect(response.status, path).toBe(200);
      expect(response.headers.get("content-type")).toMatch(/^text\/html/);
      expect(response.headers.get("content-security-policy")).toContain("script-src 'self'");
      expect(response.headers.get("content-security-policy")).not.toContain("unsafe");
      expect(await response.text()).toContain('<div id="root">');
    }
    const html = await (await fetch(url("/"))).text();
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    expect(script).toBeDefined();
    const asset = await fetch(url(script ?? ""), { headers: { "accept-encoding": "gzip" } });
    expect(asset.status).toBe(200);
    expect(asset.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    // Paths that are no page still answer as the API does.
    const unknown = await fetch(url("/no-such-page"));
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get("content-type")).toMatch(/^application\/problem\+json/);
  });

  it("asks for a sign-in, then shows projects × environments with each live release and state", async () => {
    page = await browser.newPage();
    await page.goto(url("/"));
    await page.waitForURL(/\/sign-in/);
    await expectAccessible("sign-in page");
    await page.getByLabel("Username").fill(USERNAME);
    await page.getByLabel("Password").fill("not the password");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: "not correct" }).waitFor();
    // The refused sign-in is the one error the browser logs ("Failed to load resource: 401"): expected here.
    expect(browser.errors).toEqual([expect.stringMatching(/status of 401/)]);
    browser.errors.length = 0;
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Sign in" }).click();

    await page.getByRole("heading", { name: "Dashboard" }).waitFor();
    const matrix = page.getByRole("table");
    await expect(matrix.getByRole("columnheader").allInnerTexts()).resolves.toEqual(["Project", "dev", "test", "prod"]);
    const billing = matrix.getByRole("row").filter({ has: page.getByRole("rowheader", { name: /billing/ }) });
    await expect(billing.getByRole("cell").allInnerTexts()).resolves.toEqual([
      expect.stringMatching(/^2\.4\.0\s+✔\s+succeeded\s+(just now|\d+ s ago)$/),
      expect.stringMatching(/^2\.4\.0\s+✔\s+succeeded/),
      expect.stringMatching(/^2\.4\.0\s+✔\s+succeeded/),
    ]);
    const search = matrix.getByRole("row").filter({ has: page.getByRole("rowheader", { name: /search/ }) });
    // The failed 0.9.0 is shown next to the release that still runs (0.8.1), in words, not only in red.
    await search.getByRole("cell").first().getByText("failed").waitFor();
    expect(await search.getByRole("cell").first().innerText()).toMatch(/0\.8\.1\s+✖\s+failed\s+0\.9\.0/);
    // Exact time on hover.
    const age = billing.getByRole("cell").first().locator("time");
    expect(await age.getAttribute("title")).toMatch(/\d{4}/);
    // The session is an HttpOnly cookie: nothing of it is readable by scripts, nothing is stored.
    expect(await page.evaluate("document.cookie")).toBe("");
    expect(await page.evaluate("localStorage.length + sessionStorage.length")).toBe(0);
    await expectAccessible("dashboard");
  });

  it("filters the matrix, and keeps the filters in the address", async () => {
    await page.getByLabel("State").selectOption("failed");
    await expect.poll(() => page.getByRole("rowheader").allInnerTexts()).toEqual([expect.stringMatching(/^search/)]);
    expect(page.url()).toContain("state=failed");
    await page.reload();
    await expect.poll(() => page.getByRole("rowheader").allInnerTexts()).toEqual([expect.stringMatching(/^search/)]);
    await page.getByLabel("State").selectOption("");
    await page.getByLabel("Project").fill("cat");
    await expect.poll(() => page.getByRole("rowheader").allInnerTexts()).toEqual([expect.stringMatching(/^catalog/)]);
    await page.getByLabel("Project").fill("");
    await page.getByLabel("Environment").selectOption("prod");
    await expect.poll(() => page.getByRole("columnheader").allInnerTexts()).toEqual(["Project", "prod"]);
    await page.getByLabel("Environment").selectOption("");
  });

  it("updates the matrix live, without a reload, when someone deploys", async () => {
    const catalog = page.getByRole("row").filter({ has: page.getByRole("rowheader", { name: /catalog/ }) });
    const dev = catalog.getByRole("cell").first();
    await dev.getByText("1.9.3").waitFor();
    await ok("PUT", "/api/v1/projects/catalog/process", {
      steps: [{ name: "deploy", kind: "script", config: { script: "sleep 1.5; echo done" } }],
    });
    // CI creates a release; the lifecycle deploys it to dev on its own.
    const created = await ok<{ deployments: { taskId: string }[] }>("POST", "/api/v1/projects/catalog/releases", {
      version: "1.10.0",
    });
    await dev.getByText("running").waitFor({ timeout: 10_000 });
    // While 1.10.0 deploys, 1.9.3 is still what runs.
    expect(await dev.innerText()).toMatch(/^1\.9\.3\s+⟳\s+running\s+1\.10\.0/);
    await test.waitForTask(created.deployments[0]?.taskId ?? "");
    await dev.getByText("succeeded").waitFor({ timeout: 10_000 });
    expect(await dev.innerText()).toMatch(/^1\.10\.0\s+✔\s+succeeded/);
    await page.screenshot({ path: join(SCREENSHOTS, "dashboard.png") });
  });

  it("moves between cells with the arrow keys, with a visible focus", async () => {
    await page.getByRole("link", { name: "billing" }).focus();
    await page.keyboard.press("ArrowRight");
    expect(await page.evaluate(`document.activeElement?.getAttribute("data-cell")`)).toBe("0:1");
    expect(await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")).not.toBe("none");
  });

  it("stays usable at phone width", async () => {
    const phone = await browser.newPage({ width: 390, height: 844 });
    await phone.goto(url("/"));
    await phone.getByRole("heading", { name: "Dashboard" }).waitFor();
    await phone.getByRole("rowheader", { name: /billing/ }).waitFor();
    // Nothing but the matrix itself scrolls sideways.
    expect(await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")).toBeLessThanOrEqual(0);
    await phone.close();
  });
});
