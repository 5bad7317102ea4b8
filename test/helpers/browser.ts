import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { type BrowserContext, chromium, type Page } from "playwright-core";

/*
 * The web dashboard's end-to-end tests drive Debian's Chromium (apt-get install chromium;
 * scripts/test-services.sh installs it) through playwright-core, headless, with a new
 * empty profile. No browser is ever downloaded.
 */

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export interface Browser {
  context: BrowserContext;
  /** A new tab that records console errors and uncaught exceptions (see `errors`). */
  newPage(options?: { width?: number; height?: number; colorScheme?: "light" | "dark" }): Promise<Page>;
  /** Console errors and page errors of every tab so far, each with the page's URL. */
  errors: string[];
  /** Pages whose requests Chromium aborted because the host's network changed (see above). */
  networkChanges: string[];
  close(): Promise<void>;
}

export async function launchBrowser(): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), "ferry-chromium-"));
  // A persistent context is how a profile directory of our own is given (--user-data-dir).
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1280, height: 900 },
    timezoneId: "UTC",
    locale: "en-GB",
  });
  const errors: string[] = [];
  const networkChanges: string[] = [];
  return {
    context,
    errors,
    networkChanges,
    async newPage(options = {}) {
      const page = await context.newPage();
      await page.setViewportSize({ width: options.width ?? 1280, height: options.height ?? 900 });
      if (options.colorScheme) await page.emulateMedia({ colorScheme: options.colorScheme });
      page.on("console", (message) => {
        if (message.type() !== "error") return;
        // Chromium aborts requests in flight when the host's addresses change, as they do
        // whenever a test beside this one creates or removes a Docker network or a network
        // namespace (net::ERR_NETWORK_CHANGED; Chromium has no switch to ignore them). That
        // is this machine, not the page: the dashboard fetches again, and the tests still
        // assert what the page then shows. Counted apart so a test can see it happened.
        if (message.text().includes("net::ERR_NETWORK_CHANGED")) networkChanges.push(page.url());
        else errors.push(`${page.url()}: console error: ${message.text()}`);
      });
      page.on("pageerror", (error) => errors.push(`${page.url()}: uncaught: ${error.message}`));
      return page;
    },
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: string[]; failureSummary?: string }[];
}

/** axe-core's serious and critical findings on the page as it is now (WCAG 2.1 A and AA rules). */
export async function accessibilityViolations(page: Page): Promise<AxeViolation[]> {
  const source = await readFile(fileURLToPath(import.meta.resolve("axe-core/axe.min.js")), "utf8");
  // Through the DevTools protocol, which the page's Content-Security-Policy does not govern.
  await page.evaluate(source);
  // A string, not a function: this file is compiled without the DOM's types.
  const violations = (await page.evaluate(`axe
    .run(document, {
      runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] },
    })
    .then((result) => result.violations)`)) as AxeViolation[];
  return violations.filter((violation) => violation.impact === "serious" || violation.impact === "critical");
}

export function describeViolations(violations: AxeViolation[]): string {
  return violations
    .map(
      (violation) =>
        `${violation.impact} ${violation.id}: ${violation.help}\n${violation.nodes
          .slice(0, 5)
          .map((node) => `  ${node.target.join(" ")}: ${node.failureSummary ?? ""}`)
          .join("\n")}`,
    )
    .join("\n");
}

/**
 * Builds the dashboard into dist/web (what `ferry server` serves) unless it is newer than
 * every file of web/. Test files may run at once: a lock directory lets one build while
 * the others wait for it.
 */
export async function ensureWebBuilt(): Promise<void> {
  const lock = join(root, "dist", ".web-build-lock");
  mkdirSync(join(root, "dist"), { recursive: true });
  for (let attempt = 0; ; attempt++) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      // Another file is building (or a build died: a lock older than 2 minutes is stale).
      const since = Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (attempt > 600 || since > 120_000) {
        rmSync(lock, { recursive: true, force: true });
      }
      await sleep(200);
    }
  }
  try {
    const built = statSync(join(root, "dist", "web", "index.html"), { throwIfNoEntry: false })?.mtimeMs ?? 0;
    if (newestChange(join(root, "web")) > built) {
      execFileSync(
        process.execPath,
        [
          join(root, "node_modules", "vite", "bin", "vite.js"),
          "build",
          "--config",
          "web/vite.config.ts",
          "--logLevel",
          "warn",
        ],
        // Vitest sets NODE_ENV=test, which would bundle React's development build.
        { cwd: root, stdio: "inherit", env: { ...process.env, NODE_ENV: "production" } },
      );
    }
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

function newestChange(directory: string): number {
  let newest = 0;
  for (const entry of readdirSync(directory, { withFileTypes: true })) {
    const path = join(directory, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestChange(path) : statSync(path).mtimeMs);
  }
  return newest;
}
