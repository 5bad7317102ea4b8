import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Target } from "../src/domain/targets.js";
import {
  accessibilityViolations,
  type Browser,
  describeViolations,
  ensureWebBuilt,
  launchBrowser,
} from "./helpers/browser.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/*
 * The Targets page shows each target's health as the server's scheduled check found it, in
 * Debian's Chromium against a real `ferry server` checking every second: a target on the
 * server's own host with the docker runtime is shown up, in words, with when it was checked
 * (exact time on hover), the real Docker engine's version and its free disk in human units.
 */

const ADMIN = "ada";
const ADMIN_PASSWORD = "correct horse battery staple";

describe("web dashboard: target health", () => {
  let test: TestServer;
  let browser: Browser;
  let page: Page;
  const url = (path: string) => new URL(path, test.server.url).toString();
  const ok = async <T = Record<string, unknown>>(method: string, path: string, body?: unknown) => {
    const response = await test.call<T>(method, path, body);
    expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
    return response.body;
  };

  beforeAll(async () => {
    await ensureWebBuilt();
    test = await startTestServer({ targetHealth: { intervalMs: 1000, timeoutMs: 10_000 } });
    await ok("POST", "/api/v1/users", { username: ADMIN, password: ADMIN_PASSWORD, isAdmin: true });
    await ok("POST", "/api/v1/environments", { name: "dev" });
    browser = await launchBrowser();
    page = await browser.newPage();
    await page.goto(url("/sign-in"));
    await page.getByLabel("Username").fill(ADMIN);
    await page.getByLabel("Password").fill(ADMIN_PASSWORD);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await test?.close();
  });

  it("shows a checked local target as up, with its Docker version and free disk, and is accessible", async () => {
    await ok("POST", "/api/v1/targets", {
      name: "local-web",
      environments: ["dev"],
      roles: ["web"],
      runtimes: ["docker", "process"],
    });
    // The page may be opened before the first check: it picks the check up on its own (it
    // refreshes), without a reload.
    await page.goto(url("/targets"));
    const row = page.getByRole("row", { name: /local-web/ });
    await row.waitFor();
    const health = row.getByRole("cell").nth(0);

    let checked: Target["health"] | undefined;
    const deadline = Date.now() + 60_000;
    while (!checked) {
      const target = await ok<Target>("GET", "/api/v1/targets/local-web");
      if (target.health.state === "up") checked = target.health;
      else if (Date.now() > deadline) throw new Error(`local-web is ${target.health.state}: ${target.health.error}`);
      else await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(checked.dockerVersion).toMatch(/^\d+\.\d+/);
    expect(checked.diskFreeBytes).toBeGreaterThan(0);

    // State in words (not colour alone), then the details of the check.
    await expect.poll(() => health.textContent(), { timeout: 30_000 }).toMatch(/✔\s*up/);
    const text = (await health.textContent()) ?? "";
    expect(text).toMatch(/checked (just now|\d+ s ago)/);
    expect(text).toContain(`Docker${checked.dockerVersion}`);
    expect(text).toMatch(/Disk free\d+(\.\d)? (KiB|MiB|GiB|TiB|PiB)/);
    expect(text).not.toContain("last up");
    // The relative time carries the exact time on hover.
    const time = health.locator("time").first();
    expect(await time.getAttribute("title")).toMatch(/\d{2}:\d{2}:\d{2} UTC/);
    expect(await time.getAttribute("datetime")).toMatch(/^\d{4}-\d{2}-\d{2}T/);
    // How it is reached, its environments and roles.
    await expect.poll(() => row.textContent()).toContain("this server's host (local)");
    expect(await row.textContent()).toMatch(/dev.*web/);

    const violations = await accessibilityViolations(page);
    expect(violations, describeViolations(violations)).toEqual([]);
    expect(browser.errors).toEqual([]);
  }, 120_000);
});
