import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
import { FERRY } from "./helpers/cli.js";
import { callOk, signInOnPage } from "./helpers/dashboard.js";
import { freePort } from "./helpers/registry.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/*
 * The Targets page shows each target's health as the server's scheduled check found it, in
 * Debian's Chromium against a real `ferry server` checking every second: a target on the
 * server's own host with the docker runtime is shown up, in words, with when it was checked
 * (exact time on hover), the real Docker engine's version and its free disk in human units;
 * an SSH target whose host refuses the connection is shown down, in words, with the error;
 * an agent target (a real `ferry agent`) shows its link connected, then lost when it stops.
 */

const ADMIN = "ada";
const ADMIN_PASSWORD = "correct horse battery staple";

describe("web dashboard: target health", () => {
  let test: TestServer;
  let browser: Browser;
  let page: Page;
  let agent: ChildProcess | undefined;
  const temporary: string[] = [];
  const waitForTarget = async (name: string, done: (target: Target) => boolean) => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      // Before an agent enrols its target does not exist yet (404).
      const { status, body: target } = await test.call<Target>("GET", `/api/v1/targets/${name}`);
      if (status === 200 && done(target)) return target;
      if (Date.now() > deadline)
        throw new Error(`${name}: ${JSON.stringify(target.health)} ${JSON.stringify(target.agent)}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  };
  const url = (path: string) => new URL(path, test.server.url).toString();
  const ok = <T = Record<string, unknown>>(method: string, path: string, body?: unknown) =>
    callOk<T>(test, method, path, body);

  beforeAll(async () => {
    await ensureWebBuilt();
    test = await startTestServer({ targetHealth: { intervalMs: 1000, timeoutMs: 10_000 } });
    await ok("POST", "/api/v1/users", { username: ADMIN, password: ADMIN_PASSWORD, isAdmin: true });
    await ok("POST", "/api/v1/environments", { name: "dev" });
    browser = await launchBrowser();
    page = await browser.newPage();
    await signInOnPage(page, test.server.url, ADMIN, ADMIN_PASSWORD);
  }, 120_000);

  afterAll(async () => {
    agent?.kill("SIGKILL");
    for (const directory of temporary) rmSync(directory, { recursive: true, force: true });
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
    // A port nothing listens on.
    const port = await freePort();
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

  it("shows an agent target's link: connected and up, then lost when the agent stops", async () => {
    const { token } = await ok<{ token: string }>("POST", "/api/v1/agent-tokens", {});
    const stateDir = mkdtempSync(join(tmpdir(), "ferry-ui-agent-"));
    temporary.push(stateDir);
    const tokenFile = join(stateDir, "token");
    writeFileSync(tokenFile, token, { mode: 0o600 });
    let output = "";
    agent = spawn(
      process.execPath,
      [FERRY, "agent", "--server", test.server.url, "--state-dir", stateDir, "--token-file", tokenFile].concat([
        "--name",
        "edge-1",
        "--environments",
        "dev",
        "--roles",
        "edge",
        "--stop-grace",
        "2",
      ]),
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    agent.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    agent.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    await waitForTarget(
      "edge-1",
      (target) => target.agent?.state === "connected" && target.health.state === "up",
    ).catch((error: Error) => {
      throw new Error(`${error.message}\nagent said:\n${output}`);
    });

    await page.goto(url("/targets"));
    const row = page.getByRole("row", { name: /edge-1/ });
    await row.waitFor();
    const reached = row.getByRole("cell").nth(3);
    await expect.poll(() => row.getByRole("cell").nth(0).textContent(), { timeout: 30_000 }).toMatch(/✔\s*up/);
    expect(await reached.textContent()).toMatch(/^agentconnected since (just now|\d+ s ago)$/);
    expect(await reached.locator("time").getAttribute("title")).toMatch(/\d{2}:\d{2}:\d{2} UTC/);

    // A stopping agent tells the server it leaves: the page shows the link lost on its own.
    const exited = new Promise((resolve) => agent?.once("exit", resolve));
    agent.kill("SIGTERM");
    await exited;
    await waitForTarget("edge-1", (target) => target.agent?.state === "lost");
    await expect.poll(() => reached.textContent(), { timeout: 30_000 }).toMatch(/^agentlink lost since/);

    const violations = await accessibilityViolations(page);
    expect(violations, describeViolations(violations)).toEqual([]);
    expect(browser.errors).toEqual([]);
  }, 120_000);
});
