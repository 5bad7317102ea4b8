import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Browser, ensureWebBuilt, launchBrowser } from "./helpers/browser.js";
import { callOk, expectPageAccessible, failOnBrowserErrors, signInOnPage } from "./helpers/dashboard.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/*
 * What administrators change in the web dashboard besides adding people: what a team grants
 * (roles on projects × environments), a role's permissions, and a password for someone who
 * lost theirs — in Debian's Chromium against a real `ferry server`, each checked by what the
 * page then shows and by what the API then enforces.
 */

const ADMIN = "ada";
const ADMIN_PASSWORD = "correct horse battery staple";
const BOB_PASSWORD = "bobs first long password";

describe("web dashboard: administrators edit grants, roles and passwords", () => {
  let test: TestServer;
  let browser: Browser;
  let page: Page;
  const url = (path: string) => new URL(path, test.server.url).toString();
  const ok = <T = Record<string, unknown>>(method: string, path: string, body?: unknown) =>
    callOk<T>(test, method, path, body);
  /** Signs in through the API as a browser would; returns the session cookie (or the refusal's status). */
  const signIn = async (username: string, password: string) => {
    const response = await fetch(url("/api/v1/session"), {
      method: "POST",
      headers: { "content-type": "application/json", origin: test.server.url },
      body: JSON.stringify({ username, password }),
    });
    const body = (await response.json()) as { csrfToken?: string };
    return {
      status: response.status,
      cookie: response.headers.get("set-cookie")?.split(";")[0] ?? "",
      csrfToken: body.csrfToken ?? "",
    };
  };
  const sessionAnswers = async (cookie: string) =>
    (await fetch(url("/api/v1/session"), { headers: { cookie } })).status;
  const expectAccessible = (what: string) => expectPageAccessible(page, what);

  beforeAll(async () => {
    await ensureWebBuilt();
    test = await startTestServer();
    await ok("POST", "/api/v1/users", { username: ADMIN, password: ADMIN_PASSWORD, isAdmin: true });
    await ok("POST", "/api/v1/users", { username: "bob", password: BOB_PASSWORD });
    for (const name of ["dev", "test", "prod"]) await ok("POST", "/api/v1/environments", { name });
    await ok("POST", "/api/v1/lifecycles", { name: "standard", phases: [{ environments: ["dev", "test", "prod"] }] });
    for (const name of ["shop", "blog"]) await ok("POST", "/api/v1/projects", { name, lifecycle: "standard" });
    await ok("POST", "/api/v1/roles", { name: "Tester", permissions: ["view"] });
    await ok("POST", "/api/v1/teams", { name: "QA", members: ["bob"], roles: [{ role: "viewer" }] });
    browser = await launchBrowser();
    page = await browser.newPage();
    await signInOnPage(page, test.server.url, ADMIN, ADMIN_PASSWORD);
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await test?.close();
  });

  failOnBrowserErrors(() => browser);

  it("changes what a team grants: a refused grant says why and keeps the form; the saved ones are shown and enforced", async () => {
    const bob = await signIn("bob", BOB_PASSWORD);
    expect(bob.status).toBe(200);
    expect(bob.csrfToken).not.toBe("");
    const bobDeploys = async () =>
      (
        await fetch(url("/api/v1/projects/shop/deployments"), {
          method: "POST",
          headers: {
            cookie: bob.cookie,
            "x-csrf-token": bob.csrfToken,
            "content-type": "application/json",
            origin: test.server.url,
          },
          body: JSON.stringify({ release: "0.0.1", environment: "dev" }),
        })
      ).status;
    await ok("POST", "/api/v1/projects/shop/releases", { version: "0.0.1" });
    expect(await bobDeploys()).toBe(403); // a viewer

    await page.goto(url("/admin/teams"));
    const qa = page.getByRole("row", { name: /QA/ });
    await qa.getByRole("button", { name: "Change what QA grants" }).click();
    const form = page.getByRole("form", { name: "Roles granted by QA" });
    const first = form.getByRole("group", { name: "Grant 1" });
    await first.getByLabel("Role").selectOption("deployer");
    await first.getByLabel("In environments (empty: all)").fill("dev, test");
    await form.getByRole("button", { name: "Add a grant" }).click();
    const second = form.getByRole("group", { name: "Grant 2" });
    await second.getByLabel("Role").selectOption("tester");
    await second.getByLabel("On projects (empty: all)").fill("nowhere");
    await expectAccessible("the grants editor");
    await form.getByRole("button", { name: "Save grants" }).click();
    // The API's refusal, naming what is wrong; nothing was saved and the form stays.
    const refusal = form.getByRole("alert");
    await refusal.waitFor();
    expect(await refusal.innerText()).toMatch(/nowhere/);
    // The browser logs every refused request; this one was meant.
    expect(browser.errors).toEqual([expect.stringContaining("status of 400")]);
    browser.errors.length = 0;
    expect((await ok<{ roles: unknown[] }>("GET", "/api/v1/teams/qa")).roles).toEqual([
      { role: "viewer", projects: null, environments: null },
    ]);

    await second.getByLabel("On projects (empty: all)").fill("shop");
    await form.getByRole("button", { name: "Save grants" }).click();
    await form.waitFor({ state: "detached" });
    await expect
      .poll(() => qa.innerText())
      .toMatch(/deployer on every project × dev, test\s+tester on shop × every environment\s+Change/);
    expect((await ok<{ roles: unknown[] }>("GET", "/api/v1/teams/qa")).roles).toEqual([
      { role: "deployer", projects: null, environments: ["dev", "test"] },
      { role: "tester", projects: ["shop"], environments: null },
    ]);
    // What the grant allows takes effect for bob's open session.
    expect(await bobDeploys()).toBe(201);

    // Removing a grant: the team then grants only the other one.
    await qa.getByRole("button", { name: "Change what QA grants" }).click();
    await form.getByRole("button", { name: "Remove grant 1" }).click();
    await form.getByRole("button", { name: "Save grants" }).click();
    await form.waitFor({ state: "detached" });
    await expect.poll(() => qa.innerText()).toMatch(/tester on shop × every environment\s+Change/);
    expect(await qa.innerText()).not.toContain("deployer");
    expect(await bobDeploys()).toBe(403);
  });

  it("changes a role's permissions (built-in roles cannot be changed)", async () => {
    await page.goto(url("/admin/roles"));
    const tester = page.getByRole("row", { name: /Tester/ });
    await tester.getByRole("button", { name: "Change the permissions of Tester" }).click();
    const form = page.getByRole("form", { name: "Permissions of Tester" });
    await form.getByLabel("Description").fill("Testers approve what reaches test");
    await form.getByRole("checkbox", { name: "approve", exact: true }).check();
    await form.getByRole("checkbox", { name: "deploy", exact: true }).check();
    await expectAccessible("the role editor");
    await form.getByRole("button", { name: "Save role" }).click();
    await form.waitFor({ state: "detached" });
    await expect.poll(() => tester.innerText()).toMatch(/Testers approve what reaches test/);
    const cells = await tester.getByRole("cell").first().innerText();
    expect(cells).toMatch(/view/);
    expect(cells).toMatch(/approve/);
    expect(cells).toMatch(/deploy/);
    const saved = await ok<{ permissions: string[]; description: string }>("GET", "/api/v1/roles/tester");
    expect(saved.permissions.sort()).toEqual(["approve", "deploy", "view"]);
    expect(saved.description).toBe("Testers approve what reaches test");

    // Unticking every permission is refused by the API with its reason; the role keeps its own.
    await tester.getByRole("button", { name: "Change the permissions of Tester" }).click();
    for (const permission of ["view", "approve", "deploy"]) {
      await form.getByRole("checkbox", { name: permission, exact: true }).uncheck();
    }
    await form.getByRole("button", { name: "Save role" }).click();
    await form.getByRole("alert").waitFor();
    expect(await form.getByRole("alert").innerText()).toMatch(/permission/i);
    expect(browser.errors).toEqual([expect.stringContaining("status of 400")]);
    browser.errors.length = 0;
    await form.getByRole("button", { name: "Cancel" }).click();
    expect((await ok<{ permissions: string[] }>("GET", "/api/v1/roles/tester")).permissions.sort()).toEqual([
      "approve",
      "deploy",
      "view",
    ]);

    const viewer = page.getByRole("row", { name: /^Viewer/ });
    expect(await viewer.innerText()).toContain("cannot change");
    expect(await viewer.getByRole("button", { name: /Change the permissions/ }).count()).toBe(0);
  });

  it("resets a user's password: the old one and their sessions stop working, the new one signs in", async () => {
    const before = await signIn("bob", BOB_PASSWORD);
    expect(before.status).toBe(200);
    expect(await sessionAnswers(before.cookie)).toBe(200);

    await page.goto(url("/admin/users"));
    const bob = page.getByRole("row", { name: /bob/ });
    await bob.waitFor();
    await expectAccessible("the users page");
    await bob.getByRole("button", { name: "Reset password of bob" }).click();
    const form = page.getByRole("form", { name: "New password for bob" });
    const field = form.getByLabel("New password (12 characters or more)");
    expect(await field.getAttribute("type")).toBe("password");
    await field.fill("bobs second long password");
    await expectAccessible("the password reset form");
    await form.getByRole("button", { name: "Set password" }).click();
    await form.waitFor({ state: "detached" });
    await page.getByRole("status").getByText("bob's password was reset: their sessions ended").waitFor();
    // The password is nowhere in the page once set.
    expect(await page.content()).not.toContain("bobs second long password");

    expect(await sessionAnswers(before.cookie)).toBe(401);
    expect((await signIn("bob", BOB_PASSWORD)).status).toBe(401);
    expect((await signIn("bob", "bobs second long password")).status).toBe(200);
    // The administrator's own session is untouched.
    await page.reload();
    await page.getByRole("table", { name: "Users" }).waitFor();
  });
});
