import { execFile } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { renderExposition } from "../src/observability/exposition.js";
import { BuiltinRouter } from "../src/traffic/builtin.js";
import { FerryProxy } from "../src/traffic/proxy.js";
import { startProxyAdmin } from "../src/traffic/proxyAdmin.js";
import { ProxyAdminClient } from "../src/traffic/proxyClient.js";
import { dialects } from "./helpers/databases.js";
import { type ObservedApp, startObservedApp } from "./helpers/observedApp.js";

/** Runs Debian's `promtool check metrics` (package prometheus, installed by scripts/test-services.sh) on the text. */
function promtoolCheck(text: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile("promtool", ["check", "metrics"], (error, stdout, stderr) => {
      const code = (error as { code?: unknown } | null)?.code;
      if (code === "ENOENT") {
        reject(
          new Error("promtool is missing: run scripts/test-services.sh (it installs Debian's prometheus package)"),
        );
        return;
      }
      resolve({ code: typeof code === "number" ? code : 0, output: `${stdout}${stderr}` });
    });
    child.stdin?.end(text);
  });
}

/** The value of one sample line, matched by its exact name and labels as written. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("the exposition writer", () => {
  it("escapes HELP and label values and writes cumulative histograms that promtool accepts", async () => {
    const text = renderExposition([
      {
        name: "test_things_total",
        help: 'Back\\slash and\nnewline "quoted".',
        type: "counter",
        samples: [{ labels: { path: 'C:\\dir "x"\nnext' }, value: 3 }],
      },
      {
        name: "test_wait_seconds",
        help: "A histogram.",
        type: "histogram",
        samples: [
          {
            labels: { kind: "a" },
            buckets: [
              { le: 0.5, count: 1 },
              { le: 1, count: 2 },
            ],
            sum: 2.25,
            count: 3,
          },
        ],
      },
      { name: "test_ratio", help: "Odd values.", type: "gauge", samples: [{ labels: {}, value: Number.NaN }] },
    ]);
    expect(text).toBe(
      [
        '# HELP test_things_total Back\\\\slash and\\nnewline "quoted".',
        "# TYPE test_things_total counter",
        'test_things_total{path="C:\\\\dir \\"x\\"\\nnext"} 3',
        "# HELP test_wait_seconds A histogram.",
        "# TYPE test_wait_seconds histogram",
        'test_wait_seconds_bucket{kind="a",le="0.5"} 1',
        'test_wait_seconds_bucket{kind="a",le="1"} 2',
        'test_wait_seconds_bucket{kind="a",le="+Inf"} 3',
        'test_wait_seconds_sum{kind="a"} 2.25',
        'test_wait_seconds_count{kind="a"} 3',
        "# HELP test_ratio Odd values.",
        "# TYPE test_ratio gauge",
        "test_ratio NaN",
        "",
      ].join("\n"),
    );
    const check = await promtoolCheck(text);
    expect(check.output).toBe("");
    expect(check.code).toBe(0);
  });

  it("refuses names the format does not allow", () => {
    expect(() =>
      renderExposition([{ name: "bad-name", help: "x", type: "gauge", samples: [{ labels: {}, value: 1 }] }]),
    ).toThrow(/invalid metric name/);
    expect(() =>
      renderExposition([{ name: "ok", help: "x", type: "gauge", samples: [{ labels: { "1x": "v" }, value: 1 }] }]),
    ).toThrow(/invalid label name/);
  });
});

describe.each(dialects)("GET /metrics on %s", (dialect) => {
  let test: ObservedApp;
  const gate = join(tmpdir(), `ferry-metrics-gate-${process.pid}-${dialect}`);

  const scrape = async () => {
    const response = await test.app.inject({ method: "GET", url: "/metrics", headers: test.auth });
    expect(response.statusCode).toBe(200);
    expect(response.headers["content-type"]).toBe("text/plain; version=0.0.4; charset=utf-8");
    return response.body;
  };

  beforeAll(async () => {
    rmSync(gate, { force: true });
    test = await startObservedApp(dialect);
    await test.call("POST", "/api/v1/environments", { name: "prod" });
    await test.call("POST", "/api/v1/lifecycles", { name: "straight", phases: [{ environments: ["prod"] }] });
    await test.call("POST", "/api/v1/projects", { name: "shop", lifecycle: "straight" });
    const process = await test.call("PUT", "/api/v1/projects/shop/process", {
      steps: [
        {
          name: "wait for the gate",
          kind: "script",
          config: {
            // Holds the deployment running until the test opens the gate, so it can be scraped mid-way.
            script: 'while [ ! -f "$GATE" ]; do sleep 0.05; done; echo through',
            env: { GATE: gate },
            timeoutSeconds: 60,
          },
        },
      ],
    });
    expect(process.status).toBe(200);
    expect((await test.call("POST", "/api/v1/projects/shop/releases", { version: "1.0.0" })).status).toBe(201);
  });
  afterAll(async () => {
    writeFileSync(gate, "");
    await test?.close();
    rmSync(gate, { force: true });
  });

  it("needs an API key", async () => {
    const anonymous = await test.app.inject({ method: "GET", url: "/metrics" });
    expect(anonymous.statusCode).toBe(401);
    expect(anonymous.headers["content-type"]).toMatch(/^application\/problem\+json/);
    const wrong = await test.app.inject({
      method: "GET",
      url: "/metrics",
      headers: { authorization: "Bearer ferry_notavalidkeynotavalidkey" },
    });
    expect(wrong.statusCode).toBe(401);
  });

  it("shows a deployment while it runs and counts it when it ends; promtool accepts every scrape", async () => {
    const idle = await scrape();
    expect(sample(idle, 'ferry_tasks{kind="deployment",state="queued"}')).toBe(0);
    expect(sample(idle, 'ferry_task_oldest_queued_age_seconds{kind="deployment"}')).toBe(0);
    expect(idle).not.toContain("ferry_deployments_total{");

    const queued = await test.call<{ taskId: string }>("POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "prod",
    });
    expect(queued.status).toBe(201);
    let during = "";
    for (let attempt = 0; ; attempt++) {
      during = await scrape();
      const running = sample(during, 'ferry_tasks{kind="deployment",state="running"}') === 1;
      // The engine notes the start just after its claim commits: wait for both.
      if (running && sample(during, 'ferry_task_queue_wait_seconds_count{kind="deployment"}') === 1) break;
      if (attempt > 200) throw new Error(`the deployment never showed as running:\n${during}`);
      await sleep(25);
    }
    expect(sample(during, 'ferry_deployments_active{project="shop",environment="prod",state="running"}')).toBe(1);
    expect(sample(during, "ferry_task_locks_held")).toBe(1);
    expect(sample(during, 'ferry_deployments_total{project="shop",environment="prod",outcome="succeeded"}')).toBe(
      undefined,
    );
    const checkDuring = await promtoolCheck(during);
    expect(checkDuring.output).toBe("");
    expect(checkDuring.code).toBe(0);

    // A second deployment to the same environment waits for the first one's lock.
    const second = await test.call<{ taskId: string }>("POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "prod",
    });
    expect(second.status).toBe(201);
    await sleep(100);
    const waiting = await scrape();
    expect(sample(waiting, 'ferry_tasks{kind="deployment",state="queued"}')).toBe(1);
    expect(sample(waiting, "ferry_tasks_waiting_for_lock")).toBe(1);
    expect(sample(waiting, 'ferry_task_oldest_queued_age_seconds{kind="deployment"}')).toBeGreaterThan(0);
    expect(sample(waiting, 'ferry_deployments_active{project="shop",environment="prod",state="queued"}')).toBe(1);

    writeFileSync(gate, "");
    expect((await test.waitForTask(queued.body.taskId)).state).toBe("succeeded");
    expect((await test.waitForTask(second.body.taskId)).state).toBe("succeeded");
    // The engine notes the end just after the outcome commits, which waitForTask may see first.
    let after = await scrape();
    for (
      let attempt = 0;
      sample(after, 'ferry_task_duration_seconds_count{kind="deployment",outcome="succeeded"}') !== 2;
      attempt++
    ) {
      if (attempt > 100) break;
      await sleep(20);
      after = await scrape();
    }
    expect(sample(after, 'ferry_deployments_total{project="shop",environment="prod",outcome="succeeded"}')).toBe(2);
    expect(after).not.toContain("ferry_deployments_active{");
    expect(sample(after, 'ferry_tasks{kind="deployment",state="running"}')).toBe(0);
    expect(sample(after, "ferry_task_locks_held")).toBe(0);
    expect(sample(after, "ferry_tasks_waiting_for_lock")).toBe(0);
    expect(sample(after, 'ferry_task_duration_seconds_count{kind="deployment",outcome="succeeded"}')).toBe(2);
    expect(sample(after, 'ferry_task_duration_seconds_bucket{kind="deployment",outcome="succeeded",le="+Inf"}')).toBe(
      2,
    );
    expect(sample(after, 'ferry_task_queue_wait_seconds_count{kind="deployment"}')).toBe(2);
    expect(sample(after, 'ferry_task_duration_seconds_sum{kind="deployment",outcome="succeeded"}')).toBeGreaterThan(0);
    expect(after).toContain("# TYPE ferry_deployments_total counter");
    const checkAfter = await promtoolCheck(after);
    expect(checkAfter.output).toBe("");
    expect(checkAfter.code).toBe(0);
  });

  it("reports the database pool", async () => {
    const text = await scrape();
    expect(sample(text, `ferry_info{version="test",database="${dialect}"}`)).toBe(1);
    if (dialect === "postgres") {
      expect(sample(text, "ferry_db_pool_max_connections")).toBe(10);
      expect(sample(text, "ferry_db_pool_connections")).toBeGreaterThanOrEqual(1);
      expect(sample(text, "ferry_db_pool_idle_connections")).toBeGreaterThanOrEqual(0);
      expect(sample(text, "ferry_db_pool_waiting_requests")).toBeGreaterThanOrEqual(0);
    } else {
      expect(sample(text, "ferry_db_pool_connections")).toBe(1);
      expect(sample(text, "ferry_db_pool_max_connections")).toBe(1);
      expect(text).not.toContain("ferry_db_pool_idle_connections");
    }
  });

  it("shows the traffic router's counts once a source is registered, and survives a router that fails", async () => {
    test.observability.metrics.registerProxyStats(async () => [
      { route: "shop-prod", upstream: "http://127.0.0.1:32768", served: 41, failed: 1 },
    ]);
    const text = await scrape();
    const labels = '{route="shop-prod",upstream="http://127.0.0.1:32768"}';
    expect(sample(text, `ferry_proxy_requests_total${labels}`)).toBe(42);
    expect(sample(text, `ferry_proxy_request_failures_total${labels}`)).toBe(1);
    expect(sample(text, "ferry_proxy_up")).toBe(1);
    const check = await promtoolCheck(text);
    expect(check.output).toBe("");
    expect(check.code).toBe(0);

    // A router that does not answer costs its own figures only.
    test.observability.metrics.registerProxyStats(async () => {
      throw new Error("connect ENOENT admin.sock");
    });
    const down = await scrape();
    expect(sample(down, "ferry_proxy_up")).toBe(0);
    expect(down).not.toContain("ferry_proxy_requests_total{");
    expect(sample(down, 'ferry_tasks{kind="deployment",state="queued"}')).toBe(0);
    test.observability.metrics.registerProxyStats(async () => undefined);
    expect(await scrape()).not.toContain("ferry_proxy_up");
  });

  it("times the requests the builtin proxy passes into a histogram per route and upstream", async () => {
    // A real upstream answering at once, or after 300 ms on /slow.
    const upstream = http.createServer((request, response) => {
      request.resume();
      if (request.url === "/slow") setTimeout(() => response.end("slow"), 300);
      else response.end("fast");
    });
    upstream.listen(0, "127.0.0.1");
    await once(upstream, "listening");
    const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    const stateDir = mkdtempSync(join(tmpdir(), "ferry-metrics-proxy-"));
    const proxy = await FerryProxy.open(stateDir);
    const { port } = await proxy.listen("127.0.0.1", 0);
    const admin = await startProxyAdmin(proxy, { port: 0 }, "metrics-test-token");
    const client = new ProxyAdminClient({ url: admin.address }, "metrics-test-token");
    try {
      await client.putRoute("shop-prod", { host: "shop.test", pathPrefix: "/", upstream: upstreamUrl });
      const send = (path: string) =>
        new Promise<void>((resolve, reject) => {
          const request = http.get({ host: "127.0.0.1", port, path, headers: { host: "shop.test" } }, (response) => {
            response.resume();
            response.on("end", resolve);
          });
          request.on("error", reject);
        });
      for (let index = 0; index < 20; index++) await send("/");
      await Promise.all([send("/slow"), send("/slow"), send("/slow")]);
      const router = new BuiltinRouter(client);
      test.observability.metrics.registerProxyStats(() => router.traffic());

      const text = await scrape();
      const labels = `route="shop-prod",upstream="${upstreamUrl}"`;
      expect(sample(text, `ferry_proxy_requests_total{${labels}}`)).toBe(23);
      expect(sample(text, `ferry_proxy_request_duration_seconds_count{${labels}}`)).toBe(23);
      expect(sample(text, `ferry_proxy_request_duration_seconds_bucket{${labels},le="+Inf"}`)).toBe(23);
      // The three slow ones took at least 300 ms; the sum says so too.
      expect(sample(text, `ferry_proxy_request_duration_seconds_bucket{${labels},le="0.25"}`)).toBe(20);
      expect(sample(text, `ferry_proxy_request_duration_seconds_bucket{${labels},le="10"}`)).toBe(23);
      expect(sample(text, `ferry_proxy_request_duration_seconds_sum{${labels}}`)).toBeGreaterThanOrEqual(0.9);
      const check = await promtoolCheck(text);
      expect(check.output).toBe("");
      expect(check.code).toBe(0);
    } finally {
      test.observability.metrics.registerProxyStats(async () => undefined);
      await client.close();
      await admin.close();
      await proxy.close(1_000);
      const closed = new Promise<void>((resolve) => upstream.close(() => resolve()));
      upstream.closeAllConnections();
      await closed;
      rmSync(stateDir, { recursive: true, force: true });
    }
  });
});
