import { randomBytes } from "node:crypto";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  accessibilityViolations,
  type Browser,
  describeViolations,
  ensureWebBuilt,
  launchBrowser,
} from "./helpers/browser.js";
import { failOnBrowserErrors, signInOnPage } from "./helpers/dashboard.js";
import { startLoad } from "./helpers/load.js";
import { type ProcessAppService, processAppStep, startProcessAppService } from "./helpers/processService.js";
import type { ProxyProcess } from "./helpers/proxy.js";
import type { TestServer } from "./helpers/server.js";

/*
 * The task page's traffic panel after real blue/green deployments: a real server deploys a
 * Node.js app as supervised processes (the process runtime, no Docker needed), a real
 * `ferry proxy` process switches the route, and keep-alive clients send requests through
 * it during the second deployment. Debian's Chromium then shows the task: the panel must
 * say what a person checks after a switch — which colour went live, which one it replaced,
 * that the old one drained, and the requests each colour served with none failed — with
 * the same figures as the proxy counted.
 */

const USERNAME = "grace";
const PASSWORD = "a long enough password";

interface Created {
  deployments: { taskId: string }[];
}

describe("the task page's traffic panel after a blue/green deployment (real proxy, supervisors, server, Chromium)", () => {
  const projectName = `traffic-${randomBytes(3).toString("hex")}`;
  const host = `${projectName}.test`;
  let service: ProcessAppService;
  let proxy: ProxyProcess;
  let test: TestServer;
  let projectSlug: string;
  let browser: Browser;
  let page: Page;
  const url = (path: string) => new URL(path, test.server.url).toString();

  const deployRelease = async (version: string) => {
    const created = await test.call<Created>("POST", `/api/v1/projects/${projectSlug}/releases`, { version });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const taskId = created.body.deployments[0]?.taskId ?? "";
    const task = await test.waitForTask(taskId, 90_000);
    const log = await test.call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`);
    const text = log.body.lines.map((line) => line.text);
    expect(task.state, text.join("\n")).toBe("succeeded");
    return { taskId, log: text };
  };

  /** The panel's entries, each without the time it starts with. */
  const panelEntries = async () => {
    const panel = page.getByRole("region", { name: "Traffic", exact: true });
    await panel.waitFor();
    const items = await panel.getByRole("listitem").allInnerTexts();
    return items.map((item) => item.replace(/^\d\d:\d\d:\d\d\s+/, ""));
  };

  beforeAll(async () => {
    await ensureWebBuilt();
    service = await startProcessAppService({ lifecycle: "traffic", project: projectName });
    ({ proxy, test, projectSlug } = service);
    const saved = await test.call("PUT", `/api/v1/projects/${projectSlug}/process`, {
      steps: [
        processAppStep(host, {
          blueGreen: {
            healthCheck: { path: "/health", intervalMs: 100, timeoutMs: 1000, deadlineSeconds: 5 },
            drainSeconds: 5,
            // The new colour serves the load for a second while the deployment still runs,
            // so its traffic is in the deployment's record however fast the switch went.
            bakeSeconds: 1,
            keepPreviousRunning: true,
            retain: 1,
          },
          settleSeconds: 0.2,
          stopTimeoutSeconds: 5,
        }),
      ],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    const user = await test.call("POST", "/api/v1/users", { username: USERNAME, password: PASSWORD, isAdmin: true });
    expect(user.status).toBe(201);
    browser = await launchBrowser();
    page = await browser.newPage();
    await signInOnPage(page, test.server.url, USERNAME, PASSWORD);
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await service?.close();
  });

  failOnBrowserErrors(() => browser);

  it("shows the first switch: the colour that went live, with nothing before it", async () => {
    const first = await deployRelease("1.0.0");
    await page.goto(url(`/tasks/${first.taskId}`));
    await page.locator(".log-count").getByText("complete").waitFor();
    const entries = await panelEntries();
    const switched = entries.find((entry) => entry.startsWith("switched route"));
    expect(switched).toMatch(
      new RegExp(
        `^switched route ${projectSlug}-prod to colour ferry-\\S+-prod-1\\.0\\.0-\\w+ \\(http://127\\.0\\.0\\.1:\\d+\\) in [\\d.]+ ms$`,
      ),
    );
    // Nothing was live before: no previous colour, nothing drained.
    expect(entries.some((entry) => entry.includes("previous colour"))).toBe(false);
    expect(entries.some((entry) => entry.includes("drained"))).toBe(false);
    expect(entries.at(-1)).toMatch(/^traffic during this deployment: \d+ request\(s\) served, 0 failed$/);
  });

  it("shows the second switch under load: new and previous colour, the drain, requests per colour, none failed", async () => {
    const load = startLoad({ port: proxy.port, host, connections: 4 });
    let second: Awaited<ReturnType<typeof deployRelease>>;
    try {
      second = await deployRelease("1.0.1");
    } finally {
      const seen = await load.stop();
      expect(seen.failures).toEqual([]);
      expect(seen.bodies.get("version 1.0.0")).toBeGreaterThan(0);
      expect(seen.bodies.get("version 1.0.1")).toBeGreaterThan(0);
    }

    await page.goto(url(`/tasks/${second.taskId}`));
    await page.locator(".log-count").getByText("complete").waitFor();
    const entries = await panelEntries();

    // The panel holds exactly the log's traffic record, in order: nothing lost, nothing else.
    const fromLog = second.log.filter((line) =>
      /^(switched route |traffic: |traffic during this deployment|colour \S+ (drained|still had))/.test(line),
    );
    expect(entries).toEqual(fromLog);

    const switched = entries.find((entry) => entry.startsWith("switched route")) ?? "";
    const colours =
      /to colour (\S+) \((http:\/\/127\.0\.0\.1:\d+)\) in [\d.]+ ms; previous colour (\S+) at (\S+)$/.exec(switched);
    expect(colours, switched).not.toBeNull();
    const [, newColour = "", newUpstream = "", oldColour = "", oldUpstream = ""] = colours ?? [];
    expect(newColour).toMatch(/-prod-1\.0\.1-/);
    expect(oldColour).toMatch(/-prod-1\.0\.0-/);
    expect(entries).toContainEqual(expect.stringMatching(new RegExp(`^colour ${oldColour} drained in \\d+ ms$`)));

    // Requests each colour served while the deployment ran, as the proxy counted them.
    const perColour = new Map(
      entries
        .map((entry) => /^traffic: \S+ → (\S+): (\d+) served, (\d+) failed$/.exec(entry))
        .filter((match) => match !== null)
        .map((match) => [match[1], { served: Number(match[2]), failed: Number(match[3]) }]),
    );
    expect(perColour.get(oldUpstream)?.served).toBeGreaterThan(0);
    expect(perColour.get(newUpstream)?.served).toBeGreaterThan(0);
    for (const counted of perColour.values()) expect(counted.failed).toBe(0);
    const total = [...perColour.values()].reduce((sum, counted) => sum + counted.served, 0);
    expect(entries.at(-1)).toBe(`traffic during this deployment: ${total} request(s) served, 0 failed`);

    // Nothing in the panel is told by colour alone, and the page passes axe's serious rules.
    const violations = await accessibilityViolations(page);
    expect(violations, describeViolations(violations)).toEqual([]);
  });
});
