import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
 * (exact time on hover), the real Docker engine's version and its free disk in human units;
 * an SSH target whose host refuses the connection is shown down, in words, with the error.
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

  it("shows an SSH target whose host cannot be reached as down, with what failed", async () => {
    // A port nothing listens on: taken from the kernel, then let go.
    const port = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, "127.0.0.1", () => {
        const address = server.address();
        server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
      });
    });
    const keys = mkdtempSync(join(tmpdir(), "ferry-ui-targets-"));
    try {
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(keys, "id")]);
      await ok("POST", "/api/v1/targets", {
        name: "gone-host",
        environments: ["dev"],
        roles: ["web"],
        transport: "ssh",
        ssh: { host: "127.0.0.1", port, user: "deploy", privateKey: readFileSync(join(keys, "id"), "utf8") },
      });
    } finally {
      rmSync(keys, { recursive: true, force: true });
    }
    let error = "";
    const deadline = Date.now() + 60_000;
    while (!error) {
      const target = await ok<Target>("GET", "/api/v1/targets/gone-host");
      if (target.health.state === "down") error = target.health.error ?? "";
      else if (Date.now() > deadline) throw new Error(`gone-host is still ${target.health.state}`);
      else await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(error).not.toBe("");

    await page.goto(url("/targets"));
    const row = page.getByRole("row", { name: /gone-host/ });
    await row.waitFor();
    const health = row.getByRole("cell").nth(0);
    await expect.poll(() => health.textContent(), { timeout: 30_000 }).toMatch(/✖\s*down/);
    const text = (await health.textContent()) ?? "";
    expect(text).toContain(error.slice(0, 40));
    expect(text).toContain("last up never");
    expect(text).not.toContain("Docker");
    expect(await row.getByRole("cell").nth(3).textContent()).toBe(`SSHdeploy@127.0.0.1:${port}`);

    const violations = await accessibilityViolations(page);
    expect(violations, describeViolations(violations)).toEqual([]);
    expect(browser.errors).toEqual([]);
  }, 120_000);
});
