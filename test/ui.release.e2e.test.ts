import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Browser, ensureWebBuilt, launchBrowser } from "./helpers/browser.js";
import { callOk, expectPageAccessible, failOnBrowserErrors, signInOnPage } from "./helpers/dashboard.js";
import { pushTestImage, startRegistry, type TestRegistry } from "./helpers/registry.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/*
 * What the dashboard shows of issue 16 and the project's triggers, in Debian's Chromium
 * against a real `ferry server` and a real registry (Debian's docker-registry) whose tags
 * the releases pin by digest: a release page's diff to the previous release (the image's
 * digest, a changed and an added step, a changed value, a rotated secret shown only as
 * changed), the Variables page's preview (effective values, the scope that won, why the
 * others lost, sensitive values masked) and the Triggers page (state, last firing, pause and
 * resume, a feed trigger and a scheduled one added from the page).
 */

const ADMIN = "ada";
const ADMIN_PASSWORD = "correct horse battery staple";
const OLD_SECRET = "old-secret-value-4711";
const NEW_SECRET = "new-secret-value-0815";
const TRIGGER_SECRET = "trigger-secret-0123456789abcdef";

describe("web dashboard: release diff, variable preview, triggers", () => {
  let test: TestServer;
  let registry: TestRegistry;
  let browser: Browser;
  let page: Page;
  const digests: Record<string, string> = {};
  const url = (path: string) => new URL(path, test.server.url).toString();
  const ok = <T = Record<string, unknown>>(method: string, path: string, body?: unknown) =>
    callOk<T>(test, method, path, body);
  const expectAccessible = (what: string) => expectPageAccessible(page, what);
  const process = (script: string, extraSteps: unknown[] = []) => ({
    images: [{ name: "web", feed: "local", repository: "demo/shop" }],
    steps: [{ name: "Say hello", kind: "script", config: { script } }, ...extraSteps],
  });

  beforeAll(async () => {
    await ensureWebBuilt();
    registry = await startRegistry();
    for (const tag of ["1.0.0", "1.1.0"]) {
      digests[tag] = await pushTestImage(registry.url, "demo/shop", tag, { content: `shop ${tag}` });
    }
    test = await startTestServer();
    await ok("POST", "/api/v1/users", { username: ADMIN, password: ADMIN_PASSWORD, isAdmin: true });
    for (const name of ["dev", "prod"]) await ok("POST", "/api/v1/environments", { name });
    await ok("POST", "/api/v1/lifecycles", {
      name: "two",
      phases: [{ environments: ["dev"] }, { environments: ["prod"] }],
    });
    await ok("POST", "/api/v1/feeds", { name: "local", url: registry.url });
    await ok("POST", "/api/v1/projects", { name: "shop", lifecycle: "two" });
    await ok("POST", "/api/v1/targets", {
      name: "web-1",
      environments: ["prod"],
      roles: ["web"],
      runtimes: ["process"],
    });
    await ok("PUT", "/api/v1/projects/shop/process", process("echo one"));
    const greeting = await ok<{ id: string }>("POST", "/api/v1/projects/shop/variables", {
      name: "Greeting",
      value: "Hello",
    });
    await ok("POST", "/api/v1/projects/shop/variables", {
      name: "Greeting",
      value: "Hello prod",
      scope: { environments: ["prod"] },
    });
    await ok("POST", "/api/v1/projects/shop/variables", { name: "Port", value: "80" });
    await ok("POST", "/api/v1/projects/shop/variables", { name: "Port", value: "8080", scope: { roles: ["web"] } });
    const token = await ok<{ id: string }>("POST", "/api/v1/projects/shop/variables", {
      name: "ApiToken",
      value: OLD_SECRET,
      sensitive: true,
    });
    await ok("POST", "/api/v1/projects/shop/releases", { version: "1.0.0", notes: "first", images: { web: "1.0.0" } });
    // The next release: a new image, a changed and an added step, a changed value, a rotated secret.
    await ok(
      "PUT",
      "/api/v1/projects/shop/process",
      process("echo two", [{ name: "Smoke test", kind: "script", config: { script: "echo smoke" } }]),
    );
    await ok("PATCH", `/api/v1/projects/shop/variables/${greeting.id}`, { value: "Hi" });
    await ok("PATCH", `/api/v1/projects/shop/variables/${token.id}`, { value: NEW_SECRET });
    await ok("POST", "/api/v1/projects/shop/releases", { version: "1.1.0", notes: "second", images: { web: "1.1.0" } });

    browser = await launchBrowser();
    page = await browser.newPage();
    await signInOnPage(page, test.server.url, ADMIN, ADMIN_PASSWORD);
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await test?.close();
    await registry?.stop();
  });

  failOnBrowserErrors(() => browser);

  it("a release page shows its diff to the previous release: digests, steps, variables, no secret", async () => {
    await page.goto(url("/projects/shop/releases/1.1.0"));
    await page.getByRole("heading", { name: "Changes" }).waitFor();
    const compared = page.getByLabel(/^Compared with/);
    await expect.poll(() => compared.inputValue()).toBe("1.0.0");
    expect(await compared.locator("option:checked").textContent()).toBe("1.0.0 (the previous release)");

    const images = page.getByRole("table", { name: "Image changes" });
    await images.waitFor();
    const web = images.getByRole("row", { name: /web/ });
    expect(await web.getByRole("cell").nth(0).textContent()).toContain("changed");
    const webText = (await web.textContent()) ?? "";
    expect(webText).toContain(`demo/shop:1.0.0${digests["1.0.0"]}`);
    expect(webText).toContain(`demo/shop:1.1.0${digests["1.1.0"]}`);

    const steps = page.getByRole("list", { name: "Step changes" });
    const sayHello = steps.getByRole("listitem").filter({ hasText: "Say hello" }).first();
    expect(await sayHello.textContent()).toContain('config.script: "echo one" → "echo two"');
    expect(await steps.getByRole("listitem").filter({ hasText: "Smoke test" }).first().textContent()).toContain(
      "added",
    );

    const variables = page.getByRole("table", { name: "Variable changes" });
    const greeting = variables.getByRole("row", { name: /Greeting/ });
    // Only the project-wide value changed; prod's own did not.
    expect(await greeting.count()).toBe(1);
    expect(await greeting.textContent()).toMatch(/everywhere.*changed.*Hello.*Hi/);
    const token = variables.getByRole("row", { name: /ApiToken/ });
    expect(await token.textContent()).toContain("changed");
    expect(await token.textContent()).toContain("sensitive: only that it changed is shown");
    expect(await page.locator("dl.notes-change").textContent()).toBe("Notes beforefirstNotes nowsecond");

    const body = (await page.locator("body").textContent()) ?? "";
    expect(body).not.toContain(OLD_SECRET);
    expect(body).not.toContain(NEW_SECRET);
    await expectAccessible("release page with its diff");

    // Another release to compare with; the first release says it has no previous one.
    await page.goto(url("/projects/shop/releases/1.0.0"));
    await page.getByText("This is the project's first release").waitFor();
    await page.getByLabel(/^Compared with/).selectOption("1.1.0");
    await expect
      .poll(() => page.getByRole("table", { name: "Image changes" }).textContent())
      .toContain(digests["1.1.0"] ?? "?");
    expect(page.url()).toContain("compare=1.1.0");
  }, 120_000);

  it("the Variables page previews the values a deployment would get, the scope that won and why the others lost", async () => {
    await page.goto(url("/projects/shop/variables"));
    await page.getByRole("heading", { name: "Preview" }).waitFor();
    await page.getByText("Choose an environment to see the values").waitFor();
    await page.getByLabel(/^Environment/).selectOption("prod");
    const table = page.getByRole("table", { name: "Preview" });
    await table.waitFor();
    const row = (name: string) => table.getByRole("row").filter({ has: page.getByRole("rowheader", { name }) });
    expect(await row("Greeting").textContent()).toMatch(/Hello prod.*environment scope: env: prod/);
    // Without a target, the role's value does not apply.
    expect(await row("Port").textContent()).toMatch(/80.*project scope: everywhere/);
    expect(await row("ApiToken").textContent()).toContain("sensitive (never shown)");

    // On the target (role web), the role's value wins; the explanation lists both candidates.
    await page.getByLabel(/^Target/).selectOption("web-1");
    await expect.poll(() => row("Port").textContent()).toMatch(/8080.*role scope: role: web/);
    await row("Port").getByRole("button", { name: "Why? Port" }).click();
    const candidates = row("Port").getByRole("listitem");
    await expect.poll(() => candidates.count()).toBe(2);
    const explained = await candidates.allTextContents();
    expect(explained).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/won: 8080 — role: web \(role scope\)/),
        expect.stringMatching(/outranked: 80 — everywhere \(project scope\)/),
      ]),
    );
    expect(await row("Port").getByRole("button", { name: "Hide Port" }).getAttribute("aria-expanded")).toBe("true");
    expect(page.url()).toMatch(/pe=prod.*pt=web-1.*explain=Port/);

    // A step of the process can be chosen too; the values here do not depend on it.
    await page.getByLabel(/^Step/).selectOption("Smoke test");
    await expect.poll(() => page.url()).toContain("ps=Smoke+test");
    await expect.poll(() => row("Greeting").textContent()).toContain("Hello prod");

    const body = (await page.locator("body").textContent()) ?? "";
    expect(body).not.toContain(OLD_SECRET);
    expect(body).not.toContain(NEW_SECRET);
    await expectAccessible("variables page with the preview");
  }, 120_000);

  it("the Triggers page adds a feed trigger (secret write-only) and shows its last firing after a registry push", async () => {
    await page.goto(url("/projects/shop"));
    await page.getByRole("link", { name: "Triggers" }).click();
    await page.getByRole("heading", { name: "Triggers of shop" }).waitFor();
    await page.getByText("No feed trigger.").waitFor();
    await page.getByRole("button", { name: "Add feed trigger" }).click();
    const form = page.getByRole("form", { name: "Add a feed trigger" });
    await form.getByLabel("Name").fill("pushes");
    await expect.poll(() => form.getByLabel(/^Image/).inputValue()).toBe("web");
    await form.getByLabel(/^Poll every/).fill("5");
    await form.getByLabel(/^Secret/).fill(TRIGGER_SECRET);
    await form.getByRole("button", { name: "Add feed trigger" }).click();
    // The API's refusal names the field; the browser's own report of the 400 is its console line.
    await expect.poll(() => form.getByRole("alert").textContent()).toContain("/pollSeconds");
    expect(browser.errors).toEqual([expect.stringContaining("status of 400")]);
    browser.errors.length = 0;
    await form.getByLabel(/^Poll every/).fill("");
    await form.getByRole("button", { name: "Add feed trigger" }).click();
    const feed = page.getByRole("table", { name: "Feed triggers" }).getByRole("row", { name: /pushes/ });
    await feed.waitFor();
    expect(await feed.textContent()).toMatch(
      /active.*image web.*POST \/api\/v1\/hooks\/registry\/trg_.*notifications only.*not fired yet/,
    );
    const created = await ok<{ id: string; secret: string; pollSeconds: number | null; hookPath: string }>(
      "GET",
      "/api/v1/projects/shop/triggers/pushes",
    );
    expect(created).toMatchObject({ secret: "set", pollSeconds: null });
    expect(await page.locator("body").textContent()).not.toContain(TRIGGER_SECRET);

    // The registry announces a push (the envelope it sends, with the trigger's secret): a release, then its last firing.
    const digest = await pushTestImage(registry.url, "demo/shop", "1.2.0", { content: "shop 1.2.0" });
    const notified = await fetch(url(created.hookPath), {
      method: "POST",
      headers: {
        authorization: `Bearer ${TRIGGER_SECRET}`,
        "content-type": "application/vnd.docker.distribution.events.v1+json",
      },
      body: JSON.stringify({
        events: [{ action: "push", target: { repository: "demo/shop", tag: "1.2.0", digest } }],
      }),
    });
    expect(notified.status).toBe(200);
    expect(((await notified.json()) as { firings: { outcome: string }[] }).firings).toEqual([
      expect.objectContaining({ outcome: "released" }),
    ]);
    await page.reload();
    await expect
      .poll(() => feed.textContent(), { timeout: 30_000 })
      .toMatch(/notification.*released 1\.2\.0 from tag 1\.2\.0/);
    await expectAccessible("triggers page with a feed trigger");
  }, 120_000);

  it("the Triggers page shows each trigger's state and last firing, pauses and resumes, and creates a scheduled one", async () => {
    await ok("POST", "/api/v1/projects/shop/scheduled-triggers", {
      name: "often",
      cron: "*/2 * * * * *",
      from: "prod",
      to: "dev",
    });
    // Prod runs nothing (dev runs what the feed trigger released): the firing's outcome says there is nothing to deploy.
    const deadline = Date.now() + 30_000;
    let outcome = "";
    while (!outcome) {
      const trigger = await ok<{ lastFiring: { outcome: string } | null }>(
        "GET",
        "/api/v1/projects/shop/scheduled-triggers/often",
      );
      outcome = trigger.lastFiring?.outcome ?? "";
      if (!outcome && Date.now() > deadline) throw new Error("the scheduled trigger did not fire");
      if (!outcome) await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(outcome).toContain("nothing to deploy");

    await page.goto(url("/projects/shop"));
    await page.getByRole("link", { name: "Triggers" }).click();
    await page.getByRole("heading", { name: "Triggers of shop" }).waitFor();
    const feed = page.getByRole("table", { name: "Feed triggers" }).getByRole("row", { name: /pushes/ });
    await feed.waitFor();

    const often = page.getByRole("table", { name: "Scheduled triggers" }).getByRole("row", { name: /often/ });
    expect(await often.textContent()).toMatch(/active.*\*\/2 \* \* \* \* \* \(UTC\).*prod → dev/);
    expect(await often.textContent()).toMatch(/schedule.*nothing to deploy/);
    // The last firing's time is relative, with the exact time on hover.
    expect(await often.locator("time").last().getAttribute("title")).toMatch(/\d{2}:\d{2}:\d{2} UTC/);
    await expectAccessible("triggers page");

    await often.getByRole("button", { name: "Pause often" }).click();
    await expect.poll(() => often.textContent()).toMatch(/paused.*none while paused/);
    expect((await ok<{ paused: boolean }>("GET", "/api/v1/projects/shop/scheduled-triggers/often")).paused).toBe(true);
    await often.getByRole("button", { name: "Resume often" }).click();
    await expect.poll(() => often.textContent()).toContain("active");
    await feed.getByRole("button", { name: "Pause pushes" }).click();
    await expect.poll(() => feed.textContent()).toContain("paused");
    expect((await ok<{ paused: boolean }>("GET", "/api/v1/projects/shop/triggers/pushes")).paused).toBe(true);

    // A scheduled trigger made on the page; a refusal names the field first.
    await page.getByRole("button", { name: "Add scheduled trigger" }).click();
    const form = page.getByRole("form", { name: "Add a scheduled trigger" });
    await form.getByLabel("Name").fill("nightly");
    await form.getByLabel("Cron expression").fill("not a cron");
    await form.getByLabel("Time zone").fill("Europe/Berlin");
    await form.getByLabel("Deploy what runs in").selectOption("dev");
    await form.getByLabel(/^To/).selectOption("prod");
    await form.getByRole("button", { name: "Add scheduled trigger" }).click();
    await expect.poll(() => form.getByRole("alert").textContent()).toContain("/cron");
    // The refusal's console line is the browser's own report of the 400: the page handled it.
    expect(browser.errors).toEqual([expect.stringContaining("status of 400")]);
    browser.errors.length = 0;
    await form.getByLabel("Cron expression").fill("0 2 * * *");
    await form.getByRole("button", { name: "Add scheduled trigger" }).click();
    const nightly = page.getByRole("table", { name: "Scheduled triggers" }).getByRole("row", { name: /nightly/ });
    await nightly.waitFor();
    expect(await nightly.textContent()).toMatch(/active.*0 2 \* \* \* \(Europe\/Berlin\).*dev → prod.*not fired yet/);
    const created = await ok<{ cron: string; timeZone: string; from: string; to: string }>(
      "GET",
      "/api/v1/projects/shop/scheduled-triggers/nightly",
    );
    expect(created).toMatchObject({ cron: "0 2 * * *", timeZone: "Europe/Berlin", from: "dev", to: "prod" });
    await ok("PATCH", "/api/v1/projects/shop/scheduled-triggers/often", { paused: true });
  }, 120_000);
});
