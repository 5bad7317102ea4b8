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
import { callOk, expectPageAccessible, failOnBrowserErrors } from "./helpers/dashboard.js";
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
  const ok = <T = Record<string, unknown>>(method: string, path: string, body?: unknown) =>
    callOk<T>(test, method, path, body);
  /** Deploys with the admin key (as CI would) and returns the task id. */
  const deploy = async (project: string, release: string, environment: string) =>
    (await ok<{ taskId: string }>("POST", `/api/v1/projects/${project}/deployments`, { release, environment })).taskId;
  const expectAccessible = (what: string) => expectPageAccessible(page, what);
  /** The newest task of a project's deployments (the API lists tasks newest first). */
  const firstTaskOf = async (project: string) => {
    const { id } = await ok<{ id: string }>("GET", `/api/v1/projects/${project}`);
    const tasks = await ok<{ items: { id: string; project: string | null }[] }>("GET", "/api/v1/tasks?limit=100");
    return tasks.items.find((task) => task.project === id)?.id ?? "";
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

    // shop: the story's project. Its deployment prints coloured lines for a few seconds, and
    // test needs an approval.
    await ok("POST", "/api/v1/projects", { name: "shop", lifecycle: "default", description: "the web shop" });
    await ok("POST", "/api/v1/projects/shop/variables", { name: "Greeting", value: "hello" });
    await ok("PUT", "/api/v1/projects/shop/process", {
      steps: [
        {
          name: "build-info",
          kind: "script",
          config: {
            script: [
              "printf '\\033[32mgreen light\\033[0m and \\033[1;31mbold red\\033[0m\\n'",
              'echo "greeting: $GREETING"',
              'for i in $(seq -w 1 80); do echo "tick $i of 80"; sleep 0.05; done',
            ].join("\n"),
            env: { GREETING: "#{Greeting}" },
          },
        },
        {
          name: "sign-off",
          kind: "approval",
          config: { instructions: "Check the shop on test" },
          environments: ["test"],
        },
      ],
    });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await test?.close();
  });

  failOnBrowserErrors(() => browser);

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
    // What the browser downloads before the dashboard shows: its JavaScript, as sent (gzipped).
    const scripts = new Map<string, number>();
    page.on("response", (response) => {
      if (response.url().endsWith(".js")) {
        scripts.set(response.url(), Number(response.headers()["content-length"] ?? Number.POSITIVE_INFINITY));
      }
    });
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
    const firstLoad = [...scripts.values()].reduce((sum, size) => sum + size, 0);
    console.log(`first-load JavaScript: ${scripts.size} files, ${(firstLoad / 1024).toFixed(1)} KiB gzipped`);
    expect(firstLoad).toBeLessThanOrEqual(300 * 1024);
    const matrix = page.getByRole("table");
    await matrix.getByRole("rowheader", { name: /billing/ }).waitFor();
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

  it("creates a release and shows its deployment's log as it is written", async () => {
    await page.goto(url("/projects/shop"));
    await page.getByRole("heading", { name: "shop" }).waitFor();
    await expectAccessible("project page");
    await page.getByRole("button", { name: "Create release" }).click();
    await page.getByLabel("Version").fill("1.0.0");
    await page.getByLabel("Notes").fill("first release");
    await page.getByRole("button", { name: "Create release" }).click();
    // The lifecycle deploys it to dev on its own; the page follows that deployment.
    await page.waitForURL(/\/tasks\/task_/);
    await page.getByRole("heading", { name: "Deploy shop 1.0.0 to dev" }).waitFor();
    const count = page.locator(".log-count");
    await count.getByText("streaming live").waitFor();
    // Lines arrive while it runs: the count grows without a reload.
    await expect.poll(async () => lineCount(await count.innerText()), { timeout: 10_000 }).toBeGreaterThan(20);
    const early = lineCount(await count.innerText());
    await page.screenshot({ path: join(SCREENSHOTS, "task.png") });
    await expect.poll(async () => lineCount(await count.innerText()), { timeout: 10_000 }).toBeGreaterThan(early + 10);
    expect(await page.getByRole("heading", { name: "Deploy shop 1.0.0 to dev" }).isVisible()).toBe(true);
    await page.locator(".state").first().getByText("succeeded").waitFor({ timeout: 15_000 });
    await count.getByText("complete").waitFor();
    // ANSI colours are shown as colours, the variable's value reached the script.
    await page.getByLabel("Search the log").fill("bold red");
    await page.getByRole("status").filter({ hasText: "1 of 1" }).waitFor();
    expect(await page.locator(".log-row .ansi-fg-red").innerText()).toBe("bold red");
    expect(await page.evaluate(`getComputedStyle(document.querySelector(".log-row .ansi-fg-red")).color`)).toBe(
      "rgb(248, 113, 113)",
    );
    expect(await page.locator(".log-row .ansi-fg-green").innerText()).toBe("green light");
    await page.getByLabel("Search the log").fill("greeting: hello");
    await page.getByRole("status").filter({ hasText: "1 of 1" }).waitFor();
    // The steps' timeline, with durations; a step folds.
    const steps = page.getByRole("complementary", { name: "Steps and traffic" });
    expect(await steps.getByRole("listitem").first().innerText()).toMatch(/build-info\s+\d+(\.\d)? s/);
    await page.getByLabel("Search the log").fill("");
    const toggle = page.getByRole("button", { name: /▶ build-info/ });
    await toggle.click();
    expect(await toggle.getAttribute("aria-expanded")).toBe("false");
    await expect.poll(() => page.locator(".log-row").count()).toBeLessThan(10);
    await toggle.click();
    await expectAccessible("task page");
  });

  it("disables prod's promote button with the lifecycle's reason until test has succeeded", async () => {
    await page.getByRole("link", { name: "shop" }).click();
    await page.getByRole("heading", { name: "shop" }).waitFor();
    const testCard = page.getByRole("article", { name: "test" });
    const prodCard = page.getByRole("article", { name: "prod" });
    expect(await testCard.getByRole("button", { name: "Promote 1.0.0" }).isEnabled()).toBe(true);
    const promoteProd = prodCard.getByRole("button", { name: /^Promote/ });
    expect(await promoteProd.isDisabled()).toBe(true);
    expect(await prodCard.innerText()).toContain(
      "Promote: no release has been deployed successfully to phase 'test' yet, so there is nothing to promote to 'prod'",
    );
    // The reason is the button's description for assistive technology too.
    const reasonId = await promoteProd.getAttribute("aria-describedby");
    expect(await page.locator(`[id="${reasonId}"]`).innerText()).toContain("phase 'test'");
    // In the releases table, 1.0.0 may not go to prod yet either, with the lifecycle's words.
    const prodDeploy = page
      .getByRole("row", { name: /1\.0\.0/ })
      .getByRole("button", { name: "Deploy" })
      .last();
    expect(await prodDeploy.isDisabled()).toBe(true);
    const cellReason = await prodDeploy.getAttribute("aria-describedby");
    expect(await page.locator(`[id="${cellReason}"]`).textContent()).toBe(
      "lifecycle 'default' requires phase 'test' first: deploy this release to 'test' before 'prod'",
    );
  });

  it("promotes to test, where the deployment waits for an approval given on its page", async () => {
    await page.getByRole("article", { name: "test" }).getByRole("button", { name: "Promote 1.0.0" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Deploy to test" }).click();
    await page.waitForURL(/\/tasks\/task_/);
    await page.getByRole("heading", { name: "Deploy shop 1.0.0 to test" }).waitFor();
    const waiting = page.getByRole("region", { name: "Waiting for you" });
    await waiting.waitFor({ timeout: 15_000 });
    expect(await waiting.innerText()).toContain("Check the shop on test");
    await page.locator(".state").first().getByText("waiting for a decision").waitFor();
    await expectAccessible("task waiting for approval");
    await waiting.getByRole("button", { name: "Approve" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByLabel("Comment (optional)").fill("looks good");
    await dialog.getByRole("button", { name: "Approve" }).click();
    await page.locator(".state").first().getByText("succeeded").waitFor({ timeout: 15_000 });
    expect(await waiting.count()).toBe(0);
  });

  it("promotes to prod once test has succeeded", async () => {
    await page.getByRole("link", { name: "shop" }).click();
    const prodCard = page.getByRole("article", { name: "prod" });
    const promote = prodCard.getByRole("button", { name: "Promote 1.0.0" });
    await promote.waitFor();
    expect(await promote.isEnabled()).toBe(true);
    expect(await prodCard.innerText()).not.toContain("Promote:");
    await promote.click();
    await page.getByRole("dialog").getByRole("button", { name: "Deploy to prod" }).click();
    await page.getByRole("heading", { name: "Deploy shop 1.0.0 to prod" }).waitFor();
    await page.locator(".state").first().getByText("succeeded").waitFor({ timeout: 15_000 });
  });

  it("rolls dev back to the release before", async () => {
    await page.getByRole("link", { name: "shop" }).click();
    await page.getByRole("button", { name: "Create release" }).click();
    await page.getByLabel("Version").fill("1.0.1");
    await page.getByRole("button", { name: "Create release" }).click();
    await page.getByRole("heading", { name: "Deploy shop 1.0.1 to dev" }).waitFor();
    await page.locator(".state").first().getByText("succeeded").waitFor({ timeout: 15_000 });
    await page.getByRole("link", { name: "shop" }).click();
    const devCard = page.getByRole("article", { name: "dev" });
    await devCard.getByRole("link", { name: "1.0.1" }).waitFor();
    await devCard.getByRole("button", { name: "Roll back" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Roll back dev" }).click();
    await page.getByRole("heading", { name: "Deploy shop 1.0.0 to dev" }).waitFor();
    await page.locator(".state").first().getByText("succeeded").waitFor({ timeout: 15_000 });
    await page.getByRole("link", { name: "shop" }).click();
    await devCard.getByRole("link", { name: "1.0.0" }).waitFor();
  });

  it("answers a failed step of a guided deployment: retry, then abort", async () => {
    await ok("POST", "/api/v1/projects", { name: "flaky", lifecycle: "default" });
    await ok("PUT", "/api/v1/projects/flaky/process", {
      steps: [{ name: "migrate", kind: "script", config: { script: "echo 'the database is locked' >&2; exit 3" } }],
    });
    await ok("POST", "/api/v1/projects/flaky/releases", { version: "0.1.0" });
    await page.goto(url("/projects/flaky/releases/0.1.0"));
    await page.getByRole("heading", { name: "flaky 0.1.0" }).waitFor();
    await page.getByRole("button", { name: "Redeploy" }).first().click();
    const dialog = page.getByRole("dialog", { name: "Deploy 0.1.0 to dev?" });
    await dialog.getByRole("checkbox", { name: /Guided failure/ }).check();
    await dialog.getByRole("button", { name: "Deploy to dev" }).click();
    await page.getByRole("heading", { name: "Deploy flaky 0.1.0 to dev" }).waitFor();
    const question = page.getByRole("region", { name: "Waiting for you" });
    await question.waitFor({ timeout: 15_000 });
    expect(await question.innerText()).toContain("A step failed: what now?");
    await question.getByRole("button", { name: "Retry the step" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Retry the step" }).click();
    // The retry fails the same way and asks again (a second question); this time abort.
    await expect
      .poll(async () => (await page.locator(".log-row").allInnerTexts()).join("\n"), { timeout: 15_000 })
      .toMatch(/the database is locked[\s\S]*the database is locked/);
    await question.getByRole("button", { name: "Abort the deployment" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Abort the deployment" }).click();
    await page.locator(".state").first().getByText("failed").waitFor({ timeout: 15_000 });
    expect(await page.getByRole("alert").innerText()).toMatch(/^Failed:/);
  });

  it("cancels a running deployment", async () => {
    await ok("PUT", "/api/v1/projects/flaky/process", {
      steps: [{ name: "slow", kind: "script", config: { script: "echo starting; sleep 30" } }],
    });
    const created = await ok<{ deployments: { taskId: string }[] }>("POST", "/api/v1/projects/flaky/releases", {
      version: "0.2.0",
    });
    await page.goto(url(`/tasks/${created.deployments[0]?.taskId}`));
    await page.getByText("starting").waitFor({ timeout: 15_000 });
    await page.getByRole("button", { name: "Cancel task" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Cancel the task" }).click();
    await page.locator(".state").first().getByText("cancelled").waitFor({ timeout: 15_000 });
    expect(await page.getByRole("button", { name: "Cancel task" }).count()).toBe(0);
  });

  it("shows a release's snapshot: its process, and variables with sensitive values masked", async () => {
    await ok("POST", "/api/v1/projects/shop/variables", { name: "DbPassword", value: "s3cret-value", sensitive: true });
    await ok("POST", "/api/v1/projects/shop/releases", { version: "1.1.0" });
    await page.goto(url("/projects/shop/releases/1.1.0"));
    await page.getByRole("heading", { name: "shop 1.1.0" }).waitFor();
    const variables = page.getByRole("table", { name: "Variables" });
    await variables.getByRole("row", { name: /Greeting/ }).waitFor();
    expect(await variables.getByRole("row", { name: /Greeting/ }).innerText()).toContain("hello");
    expect(await variables.getByRole("row", { name: /DbPassword/ }).innerText()).toContain("sensitive (never shown)");
    expect(await page.content()).not.toContain("s3cret-value");
    expect(await page.getByRole("list").filter({ hasText: "build-info" }).first().innerText()).toContain("sign-off");
    await expectAccessible("release page");
  });

  it("edits a variable; a sensitive value is never shown, only replaced", async () => {
    await page.goto(url("/projects/shop/variables"));
    const greeting = page.getByRole("row", { name: /Greeting/ });
    await greeting.waitFor();
    await expectAccessible("variables page");
    await greeting.getByRole("button", { name: "Edit Greeting" }).click();
    const form = page.getByRole("form", { name: "Edit Greeting" });
    await form.getByLabel("Value").fill("hello from the dashboard");
    await form.getByRole("checkbox", { name: "prod" }).check();
    await form.getByRole("button", { name: "Save" }).click();
    await form.waitFor({ state: "detached" });
    await page
      .getByRole("row", { name: /Greeting/ })
      .getByText("hello from the dashboard")
      .waitFor();
    expect(await page.getByRole("row", { name: /Greeting/ }).innerText()).toContain("env: prod");
    const stored = await ok<{ items: { name: string; value: string; scope: { environments: string[] } }[] }>(
      "GET",
      "/api/v1/projects/shop/variables",
    );
    expect(stored.items.find((each) => each.name === "Greeting")).toMatchObject({
      value: "hello from the dashboard",
      scope: { environments: ["prod"] },
    });
    // The sensitive one: its editor starts empty and saving without a value keeps it.
    const secret = page.getByRole("row", { name: /DbPassword/ });
    expect(await secret.innerText()).toContain("sensitive, set (write-only)");
    await secret.getByRole("button", { name: "Edit DbPassword" }).click();
    const secretForm = page.getByRole("form", { name: "Edit DbPassword" });
    expect(await secretForm.getByLabel("Value").inputValue()).toBe("");
    await secretForm.getByRole("button", { name: "Save" }).click();
    await secretForm.waitFor({ state: "detached" });
    await page
      .getByRole("row", { name: /DbPassword/ })
      .getByText("sensitive, set")
      .waitFor();
    const plan = await ok<{ variables: { name: string; value: string }[] }>(
      "GET",
      "/api/v1/projects/shop/plan?release=1.1.0&environment=prod",
    );
    expect(plan.variables.find((each) => each.name === "DbPassword")).toBeDefined();
  });

  it("lists the targets with their environments and roles", async () => {
    await ok("POST", "/api/v1/targets", { name: "web-1", environments: ["dev", "test"], roles: ["web"] });
    await ok("POST", "/api/v1/targets", { name: "db-1", environments: ["prod"], roles: ["db"], runtimes: ["process"] });
    await page.getByRole("link", { name: "Targets" }).click();
    const web = page.getByRole("row", { name: /web-1/ });
    await web.waitFor();
    expect(await web.innerText()).toMatch(/dev\s+test\s+web\s+this server's host \(local\)\s+Docker containers/);
    await page.getByLabel("Role").selectOption("db");
    await expect.poll(() => page.getByRole("rowheader").allInnerTexts()).toEqual([expect.stringMatching(/^db-1/)]);
    expect(page.url()).toContain("role=db");
    await expectAccessible("targets page");
  });

  it("filters the audit log, newest entries first", async () => {
    await page.getByRole("link", { name: "Audit" }).click();
    const table = page.getByRole("table", { name: "Audit log" });
    await table.waitFor();
    const seqs = (await table.locator("tbody tr td:first-child").allInnerTexts()).map(Number);
    expect(seqs.length).toBeGreaterThan(10);
    expect([...seqs].sort((a, b) => b - a)).toEqual(seqs);
    await page.getByLabel("Action").fill("variable.update");
    await page.getByRole("button", { name: "Filter" }).click();
    await expect.poll(() => table.locator("tbody tr").count()).toBe(2);
    expect(await table.innerText()).toContain("shop/Greeting");
    expect(await table.innerText()).toContain("hello → hello from the dashboard");
    // The sensitive variable's edit says it changed, never what it is.
    expect(await page.content()).not.toContain("s3cret-value");
    expect(page.url()).toContain("action=variable.update");
    await expectAccessible("audit page");
  });

  it("charts the DORA figures per project and environment", async () => {
    await page.getByRole("link", { name: "Insights" }).click();
    await page.getByRole("img", { name: /^Deployments per week/ }).waitFor();
    const frequency = page.locator(".figure").filter({ hasText: "Deployment frequency" });
    expect(await frequency.innerText()).toMatch(/\d+\.\d\d \/ day/);
    const failureRate = page.locator(".figure").filter({ hasText: "Change failure rate" });
    expect(await failureRate.innerText()).toMatch(/\d+ %\s+\d+ of \d+ changes failed/);
    await page.getByRole("combobox", { name: /^Project/ }).selectOption("shop");
    await expect
      .poll(() =>
        page.getByRole("table", { name: "Per project and environment" }).getByRole("rowheader").allInnerTexts(),
      )
      .toEqual(["shop", "shop", "shop"]);
    // Every chart says what it shows in words too (its data table).
    const bars = page.getByRole("figure", { name: /Deployments per week/ });
    await bars.getByText("Data").click();
    expect(await bars.getByRole("table").innerText()).toMatch(/succeeded\s+failed/);
    await page.getByRole("combobox", { name: /^Project/ }).selectOption("");
    await page.getByRole("img", { name: /^Deployments per week/ }).waitFor();
    await page.screenshot({ path: join(SCREENSHOTS, "insights.png"), fullPage: true });
    await expectAccessible("insights page");
  });

  it("lets an administrator add a user, a role and a team", async () => {
    await page.getByRole("link", { name: "Users & teams" }).click();
    await page.getByRole("table", { name: "Users" }).waitFor();
    const addUser = page.getByRole("form", { name: "Add a user" });
    await addUser.getByLabel("Username").fill("bob");
    await addUser.getByLabel("Display name").fill("Bob");
    await addUser.getByLabel("Initial password (12 characters or more)").fill("bobs own long password");
    await addUser.getByRole("button", { name: "Add user" }).click();
    const bob = page.getByRole("row", { name: /Bob/ });
    await bob.waitFor();
    await bob.getByRole("button", { name: "Disable bob" }).click();
    await bob.getByText("disabled").waitFor();
    await expectAccessible("users page");

    await page.getByRole("link", { name: "Roles", exact: true }).click();
    const addRole = page.getByRole("form", { name: "Add a role" });
    await addRole.getByLabel("Name", { exact: true }).fill("Tester");
    await addRole.getByRole("checkbox", { name: "approve" }).check();
    await addRole.getByRole("button", { name: "Add role" }).click();
    await page
      .getByRole("row", { name: /Tester/ })
      .getByText("approve")
      .waitFor();
    await expectAccessible("roles page");

    await page.getByRole("link", { name: "Teams", exact: true }).click();
    const addTeam = page.getByRole("form", { name: "Add a team" });
    await addTeam.getByLabel("Name", { exact: true }).fill("QA");
    await addTeam.getByLabel("Members (usernames, comma-separated)").fill("bob");
    await addTeam.getByLabel("Role").selectOption("tester");
    await addTeam.getByLabel("In environments (empty: all)").fill("test");
    await addTeam.getByRole("button", { name: "Add team" }).click();
    const qa = page.getByRole("row", { name: /QA/ });
    await qa.waitFor();
    expect(await qa.innerText()).toMatch(/bob\s+Change\s+tester on every project × test/);
    await expectAccessible("teams page");
    await qa.getByRole("button", { name: "Change the members of QA" }).click();
    const members = page.getByRole("form", { name: "Members of QA" });
    await members.getByLabel("Members (usernames, comma-separated)").fill("bob, ada");
    await members.getByRole("button", { name: "Save members" }).click();
    await members.waitFor({ state: "detached" });
    await expect.poll(() => qa.innerText()).toMatch(/(ada, bob|bob, ada)\s+Change/);
    const team = await ok<{ members: string[] }>("GET", "/api/v1/teams/qa");
    expect(team.members.sort()).toEqual(["ada", "bob"]);
  });

  it("follows the system's dark mode, with enough contrast", async () => {
    const dark = await browser.newPage({ colorScheme: "dark" });
    await dark.goto(url("/"));
    await dark.getByRole("rowheader", { name: /billing/ }).waitFor();
    expect(await dark.evaluate("getComputedStyle(document.documentElement).backgroundColor")).toBe("rgb(13, 17, 23)");
    const violations = await accessibilityViolations(dark);
    expect(violations, describeViolations(violations)).toEqual([]);
    await dark.close();
  });

  it("stays usable at phone width", async () => {
    const phone = await browser.newPage({ width: 390, height: 844 });
    await phone.goto(url("/"));
    await phone.getByRole("heading", { name: "Dashboard" }).waitFor();
    await phone.getByRole("rowheader", { name: /billing/ }).waitFor();
    // Nothing but the matrix itself scrolls sideways.
    expect(await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")).toBeLessThanOrEqual(0);
    await expectPageAccessible(phone, "dashboard at phone width");
    // A task: the log scrolls inside its own box, the page does not.
    await phone.goto(url("/projects/shop"));
    await phone.getByRole("article", { name: "dev" }).waitFor();
    expect(await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")).toBeLessThanOrEqual(0);
    await phone.goto(url(`/tasks/${await firstTaskOf("shop")}`));
    await phone.getByRole("log").waitFor();
    expect(await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")).toBeLessThanOrEqual(0);
    await phone.close();
  });

  it("signs out: the session ends and the pages ask for a sign-in again", async () => {
    await page.goto(url("/"));
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in to Ferry" }).waitFor();
    await page.goto(url("/projects/shop"));
    await page.waitForURL(/\/sign-in\?returnTo=%2Fprojects%2Fshop/);
    // Signing in again returns to the page asked for.
    await page.getByLabel("Username").fill(USERNAME);
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL(/\/projects\/shop$/);
  });

  it("shows a viewer what waits and why they may not act, with the buttons disabled", async () => {
    await ok("POST", "/api/v1/users", { username: "vic", password: "a viewer's long password" });
    await ok("POST", "/api/v1/teams", { name: "Watchers", members: ["vic"], roles: [{ role: "viewer" }] });
    const waiting = await deploy("shop", "1.1.0", "test");
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByLabel("Username").fill("vic");
    await page.getByLabel("Password").fill("a viewer's long password");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Dashboard" }).waitFor();
    // No administration for a viewer.
    expect(await page.getByRole("link", { name: "Users & teams" }).count()).toBe(0);

    await page.goto(url(`/tasks/${waiting}`));
    const question = page.getByRole("region", { name: "Waiting for you" });
    await question.waitFor({ timeout: 15_000 });
    const approve = question.getByRole("button", { name: "Approve" });
    expect(await approve.isDisabled()).toBe(true);
    expect(await question.innerText()).toContain("needs the approve permission in test");
    expect(await page.getByRole("button", { name: "Cancel task" }).isDisabled()).toBe(true);

    await page.goto(url("/projects/shop"));
    const prodCard = page.getByRole("article", { name: "prod" });
    await prodCard.waitFor();
    expect(await prodCard.innerText()).toContain("Roll back: you do not have the deploy permission in prod");
    expect(await page.getByRole("button", { name: "Create release" }).count()).toBe(0);
    await page.goto(url("/projects/shop/variables"));
    await page.getByRole("row", { name: /Greeting/ }).waitFor();
    expect(await page.getByRole("button", { name: /^Edit/ }).count()).toBe(0);
    await ok("POST", `/api/v1/tasks/${waiting}/cancel`);
  });
});

function lineCount(text: string): number {
  return Number(/^(\d+) lines?/.exec(text)?.[1] ?? 0);
}
