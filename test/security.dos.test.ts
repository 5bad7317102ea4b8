import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { sql } from "kysely";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../src/api/app.js";
import { LINE_CUT_MARK, MAX_LOG_LINE_BYTES } from "../src/domain/logLines.js";
import { generateApiKey } from "../src/security/apiKeys.js";
import { parseOutboundAllow } from "../src/security/outboundGuard.js";
import { insertApiKey } from "../src/store/apiKeys.js";
import { expectSuccess, isolatedEnv, runFerry } from "./helpers/cli.js";
import { createPostgresDatabase, dialects, openTestDatabase } from "./helpers/databases.js";
import { slowestHealthCheckWhile } from "./helpers/healthProbe.js";
import { pushTestImage, startRegistry, type TestRegistry } from "./helpers/registry.js";
import { startTestServer, startTestServerOn, type TestServer } from "./helpers/server.js";

/**
 * Issue 11, findings 5, 6 and 7: denial of service by what a user may send or run, attacked
 * the way the attack pass did it, against a real server and engine (in-process, real HTTP),
 * a real registry, real scripts and the real `bin/ferry`.
 *
 * 5. Catastrophic regular expressions: an http-test `bodyMatches: "^(a+)+$"` against
 *    "aaa…a!" held /healthz for 6 s; a version rule `(((.+)+)+)+!` held release creation
 *    and /healthz for 10 s.
 * 6. Deeply nested JSON: 4,000 levels of '[' overflowed the stack (500, a stack trace in the
 *    log) before authentication; 400 such requests held /healthz for 2.5 s.
 * 7. Huge log lines: one 48 MB line took the server to 1.18 GB; a 15 MB line of control
 *    characters became a 90 MB answer, and three reads of it 1.2 GB.
 *
 * The time bounds are loose (what a health check would notice); the benchmarks measure.
 */

/** How far this process's resident memory rose above where it was (sampled every 20 ms) while `work` ran. */
async function rssGrowthWhile<T>(work: Promise<T>): Promise<{ result: T; growthBytes: number }> {
  const baseline = process.memoryUsage.rss();
  let peak = baseline;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 20);
  try {
    const result = await work;
    peak = Math.max(peak, process.memoryUsage.rss());
    return { result, growthBytes: peak - baseline };
  } finally {
    clearInterval(sampler);
  }
}

interface Problem {
  type: string;
  detail: string;
  errors?: { pointer: string; detail: string }[];
}

interface LogLine {
  line: number;
  level: string;
  step: string | null;
  text: string;
}

interface LogPage {
  state: string;
  lines: LogLine[];
  next: number | null;
}

const MIB = 1024 * 1024;

describe.each(dialects)(
  "finding 5: user-supplied patterns run on RE2 (real server, registry, http-test; %s)",
  { concurrent: true },
  (dialect) => {
    let test: TestServer;
    let registry: TestRegistry;
    let target: Server;
    let targetUrl: string;
    /** What the target answers; set by each test. */
    let body = "";

    const deploy = async (project: string, steps: unknown[]) => {
      const saved = await test.call("PUT", `/api/v1/projects/${project}/process`, { steps });
      expect(saved.status, JSON.stringify(saved.body)).toBe(200);
      const created = await test.call<{ deployments: { taskId: string }[] }>(
        "POST",
        `/api/v1/projects/${project}/releases`,
        {},
      );
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      return created.body.deployments[0]?.taskId ?? "";
    };

    beforeAll(async () => {
      registry = await startRegistry();
      target = createServer((_request, response) => {
        response.writeHead(200, { "content-type": "text/plain" });
        response.end(body);
      });
      await new Promise<void>((resolve) => target.listen(0, "127.0.0.1", resolve));
      targetUrl = `http://127.0.0.1:${(target.address() as AddressInfo).port}/`;
      test = await startTestServerOn(dialect);
      await test.call("POST", "/api/v1/environments", { name: "dev" });
      await test.call("POST", "/api/v1/lifecycles", {
        name: "auto",
        phases: [{ environments: ["dev"], autoDeploy: true }],
      });
      for (const name of ["probe", "images"]) await test.call("POST", "/api/v1/projects", { name, lifecycle: "auto" });
      await test.call("POST", "/api/v1/feeds", { name: "local", url: registry.url });
    });
    afterAll(async () => {
      await test?.close();
      await registry?.stop();
      await new Promise((resolve) => target?.close(resolve));
    });

    it.sequential("tests bodyMatches ^(a+)+$ against 1 MiB of aaa…a! at once, and /healthz answers meanwhile", async () => {
      body = `${"a".repeat(MIB - 1)}!`;
      const taskId = await deploy("probe", [
        { name: "smoke", kind: "http-test", config: { url: targetUrl, assertions: { bodyMatches: "^(a+)+$" } } },
      ]);
      const started = performance.now();
      const { result: task, slowestMs } = await slowestHealthCheckWhile(test.server.url, test.waitForTask(taskId));
      expect(task.state).toBe("failed");
      expect(task.error).toContain("body does not match /^(a+)+$/");
      expect(performance.now() - started).toBeLessThan(10_000);
      // A liveness bound (the attack held /healthz 2.3–10.5 s on a quiet machine); the
      // figure itself, against the 100 ms goal, is npm run bench -- attack-flood's.
      expect(slowestMs).toBeLessThan(2_000);
    });

    it.sequential("stops a pattern that is slow even for RE2 after 5 s, off the main thread", async () => {
      // RE2 simulates ~1,000 threads per character for this pattern over random a/b: ~14 s for 1 MiB.
      let seed = 3;
      body = Array.from({ length: MIB }, () => {
        seed = (seed * 1103515245 + 12345) % 2147483648;
        return seed < 1073741824 ? "a" : "b";
      }).join("");
      const taskId = await deploy("probe", [
        {
          name: "smoke",
          kind: "http-test",
          config: { url: targetUrl, assertions: { bodyMatches: "a[ab]{1000}[cd]" } },
        },
      ]);
      const { result: task, slowestMs } = await slowestHealthCheckWhile(test.server.url, test.waitForTask(taskId));
      expect(task.state).toBe("failed");
      expect(task.error).toContain("body was not matched against /a[ab]{1000}[cd]/ within 5 s: simplify the pattern");
      // A liveness bound (the attack held /healthz 2.3–10.5 s on a quiet machine); the
      // figure itself, against the 100 ms goal, is npm run bench -- attack-flood's.
      expect(slowestMs).toBeLessThan(2_000);
    });

    it.sequential("refuses a bodyMatches RE2 cannot run when the process is saved, naming the field and what is not supported", async () => {
      const refused = await test.call<Problem>("PUT", "/api/v1/projects/probe/process", {
        steps: [
          { name: "a", kind: "http-test", config: { url: targetUrl, assertions: { bodyMatches: "(ok)\\1" } } },
          { name: "b", kind: "http-test", config: { url: targetUrl, assertions: { bodyMatches: "ok(?!ay)" } } },
          {
            name: "c",
            kind: "http-test",
            config: { url: targetUrl, assertions: { bodyMatches: ".{0,1000}".repeat(10) } },
          },
        ],
      });
      expect(refused.status).toBe(400);
      const issues = refused.body.errors ?? [];
      expect(issues.map((issue) => issue.pointer)).toEqual([
        "/steps/0/config/assertions/bodyMatches",
        "/steps/1/config/assertions/bodyMatches",
        "/steps/2/config/assertions/bodyMatches",
      ]);
      expect(issues[0]?.detail).toContain("backreferences such as \\1 or \\k<name> are not supported");
      expect(issues[1]?.detail).toContain("lookahead and lookbehind");
      expect(issues[2]?.detail).toContain("the pattern is too large");
    });

    it.sequential("matches a version rule (((.+)+)+)+! against a long tag at once while creating a release", async () => {
      await pushTestImage(registry.url, "demo/app", "a".repeat(120));
      const saved = await test.call("PUT", "/api/v1/projects/images/process", {
        images: [
          { name: "web", feed: "local", repository: "demo/app", version: { kind: "regex", pattern: "(((.+)+)+)+!" } },
        ],
        steps: [],
      });
      expect(saved.status, JSON.stringify(saved.body)).toBe(200);
      const started = performance.now();
      const { result: refused, slowestMs } = await slowestHealthCheckWhile(
        test.server.url,
        test.call<Problem>("POST", "/api/v1/projects/images/releases", { version: "1.0.0" }),
      );
      expect(refused.status).toBe(400);
      expect(refused.body.detail).toBe("no tag of demo/app in feed 'local' matches the image's version rule");
      expect(performance.now() - started).toBeLessThan(5_000);
      // A liveness bound (the attack held /healthz 2.3–10.5 s on a quiet machine); the
      // figure itself, against the 100 ms goal, is npm run bench -- attack-flood's.
      expect(slowestMs).toBeLessThan(2_000);
    });

    it.sequential("refuses a version rule RE2 cannot run when the process is saved", async () => {
      const refused = await test.call<Problem>("PUT", "/api/v1/projects/images/process", {
        images: [
          {
            name: "web",
            feed: "local",
            repository: "demo/app",
            version: { kind: "regex", pattern: "\\d+(?=-alpine)" },
          },
        ],
        steps: [],
      });
      expect(refused.status).toBe(400);
      expect(refused.body.errors).toEqual([
        {
          pointer: "/images/0/version/pattern",
          detail: expect.stringMatching(
            /^lookahead and lookbehind \(\(\?=…\), \(\?!…\), \(\?<=…\), \(\?<!…\)\) are not supported/,
          ),
        },
      ]);
    });
  },
);

describe("finding 6: deeply nested JSON bodies", () => {
  let test: TestServer;
  const nested = (depth: number) => `${"[".repeat(depth)}${"]".repeat(depth)}`;
  const post = (path: string, text: string, key?: string) =>
    fetch(new URL(path, test.server.url), {
      method: "POST",
      headers: { "content-type": "application/json", ...(key && { authorization: `Bearer ${key}` }) },
      body: text,
    });

  beforeAll(async () => {
    test = await startTestServer();
  });
  afterAll(async () => {
    await test?.close();
  });

  it("answers 400 with what to send for 4,000 and 100,000 levels, before and after authentication", async () => {
    for (const depth of [4_000, 100_000]) {
      for (const [path, key] of [
        ["/api/v1/session", undefined],
        ["/api/v1/projects", test.apiKey],
      ] as const) {
        const response = await post(path, nested(depth), key);
        expect(response.status, `${path} ${depth}`).toBe(400);
        const problem = (await response.json()) as Problem;
        expect(problem.type).toBe("urn:ferry:problem:malformed-body");
        expect(problem.detail).toBe(
          "the body nests arrays and objects more than 64 levels deep (at character 64); send a flatter JSON document",
        );
      }
    }
  });

  it("keeps /healthz quick while 400 such requests arrive at the public sign-in route", async () => {
    const attack = Promise.all(
      Array.from({ length: 400 }, async () => {
        const response = await post("/api/v1/session", nested(4_000));
        await response.arrayBuffer();
        return response.status;
      }),
    );
    const { result: statuses, slowestMs } = await slowestHealthCheckWhile(test.server.url, attack);
    expect(new Set(statuses)).toEqual(new Set([400]));
    // A liveness bound (the attack held /healthz 2.3–10.5 s on a quiet machine); the
    // figure itself, against the 100 ms goal, is npm run bench -- attack-flood's.
    expect(slowestMs).toBeLessThan(2_000);
  });

  it("logs no error for them (the 500 came with a stack trace in the log)", async () => {
    const database = await openTestDatabase("sqlite");
    const logged: string[] = [];
    const logger = pino(
      { level: "info" },
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          logged.push(chunk.toString("utf8"));
          callback();
        },
      }),
    );
    const apiKey = generateApiKey();
    await insertApiKey(database.context, apiKey, { name: "test admin", role: "admin" });
    const app = await buildApp({
      store: database.store,
      context: database.context,
      logger,
      version: "test",
      outbound: parseOutboundAllow("127.0.0.1"),
    });
    try {
      for (const url of ["/api/v1/session", "/api/v1/projects"]) {
        const response = await app.inject({
          method: "POST",
          url,
          headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` },
          payload: nested(4_000),
        });
        expect(response.statusCode).toBe(400);
      }
      const entries = logged.map((line) => JSON.parse(line) as { level: number; msg?: string; err?: unknown });
      expect(entries.length).toBeGreaterThan(0);
      expect(entries.filter((entry) => entry.level >= 50 || entry.err !== undefined)).toEqual([]);
      expect(logged.join("")).not.toContain("RangeError");
    } finally {
      await app.close();
      await database.dispose();
    }
  });
});

describe.each(dialects)("finding 7: huge log lines on %s", (dialect) => {
  let test: TestServer;
  let dropDatabase: (() => Promise<void>) | undefined;
  let home: string;
  const secret = `canary-${randomBytes(16).toString("hex")}`;

  const logPage = async (taskId: string, after: number) => {
    const response = await fetch(new URL(`/api/v1/tasks/${taskId}/log?after=${after}`, test.server.url), {
      headers: { authorization: `Bearer ${test.apiKey}` },
    });
    const bytes = Buffer.from(await response.arrayBuffer());
    expect(response.status).toBe(200);
    return { bytes: bytes.length, page: JSON.parse(bytes.toString("utf8")) as LogPage };
  };
  /** Every line, page by page, as a client pages; each answer's size. */
  const readAll = async (taskId: string) => {
    const lines: LogLine[] = [];
    const sizes: number[] = [];
    for (let after = 0; ; ) {
      const { bytes, page } = await logPage(taskId, after);
      lines.push(...page.lines);
      sizes.push(bytes);
      if (page.next === null) return { lines, sizes };
      expect(page.next).toBe(page.lines.at(-1)?.line);
      after = page.next;
    }
  };
  const runScript = async (name: string, config: Record<string, unknown>) => {
    await test.call("POST", "/api/v1/projects", { name, lifecycle: "auto" });
    const saved = await test.call("PUT", `/api/v1/projects/${name}/process`, {
      steps: [{ name: "print", kind: "script", config }],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    const created = await test.call<{ deployments: { taskId: string }[] }>(
      "POST",
      `/api/v1/projects/${name}/releases`,
      {},
    );
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    return created.body.deployments[0]?.taskId ?? "";
  };

  beforeAll(async () => {
    let databaseUrl: string | undefined;
    if (dialect === "postgres") {
      const database = await createPostgresDatabase();
      databaseUrl = database.url;
      dropDatabase = database.drop;
    }
    test = await startTestServer({ databaseUrl });
    home = await mkdtemp(join(tmpdir(), "ferry-dos-cli-"));
    await test.call("POST", "/api/v1/environments", { name: "dev" });
    await test.call("POST", "/api/v1/lifecycles", {
      name: "auto",
      phases: [{ environments: ["dev"], autoDeploy: true }],
    });
  });
  afterAll(async () => {
    await test?.close();
    await dropDatabase?.();
    if (home) await rm(home, { recursive: true, force: true });
  });

  it("cuts a 48 MB line at 64 KiB as it is read, keeps what follows, and keeps memory flat", async () => {
    const taskId = await runScript("long-line", {
      script: "head -c 50331648 /dev/zero | tr '\\0' a; echo; echo after the long line",
    });
    const { result: task, growthBytes } = await rssGrowthWhile(test.waitForTask(taskId, 60_000));
    expect(task.state).toBe("succeeded");
    expect(growthBytes).toBeLessThan(200 * MIB);
    const { lines } = await readAll(taskId);
    const printed = lines.filter((line) => line.step === "print" && line.level === "info");
    expect(printed.map((line) => line.text)).toEqual([
      `${"a".repeat(MAX_LOG_LINE_BYTES - Buffer.byteLength(LINE_CUT_MARK))}${LINE_CUT_MARK}`,
      "after the long line",
    ]);
  });

  it("never keeps the start of a secret the cut falls in", async () => {
    await test.call("POST", "/api/v1/projects", { name: "cut-secret", lifecycle: "auto" });
    await test.call("POST", "/api/v1/projects/cut-secret/variables", { name: "Token", value: secret, sensitive: true });
    // The secret starts 10 bytes before where the mark must begin and ends past 64 KiB.
    const before = MAX_LOG_LINE_BYTES - Buffer.byteLength(LINE_CUT_MARK) - 10;
    const saved = await test.call("PUT", "/api/v1/projects/cut-secret/process", {
      steps: [
        {
          name: "print",
          kind: "script",
          config: {
            script: `head -c ${before} /dev/zero | tr '\\0' x; printf %s "$TOKEN"; head -c 100000 /dev/zero | tr '\\0' y; echo`,
            env: { TOKEN: "#{Token}" },
          },
        },
      ],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    const created = await test.call<{ deployments: { taskId: string }[] }>(
      "POST",
      "/api/v1/projects/cut-secret/releases",
      {},
    );
    const taskId = created.body.deployments[0]?.taskId ?? "";
    expect((await test.waitForTask(taskId)).state).toBe("succeeded");
    const { lines } = await readAll(taskId);
    const cut = lines.find((line) => line.text.endsWith(LINE_CUT_MARK));
    expect(cut?.text).toBe(`${"x".repeat(before)}${LINE_CUT_MARK}`);
    for (const line of lines) expect(line.text).not.toContain(secret.slice(0, 6));
  });

  it("answers a 15 MB line of control characters with at most 1 MiB, cut with the mark", async () => {
    const taskId = await runScript("controls", {
      interpreter: "node",
      script: 'process.stdout.write("\\u001b".repeat(15_000_000) + "\\nafter the control line\\n")',
    });
    expect((await test.waitForTask(taskId, 60_000)).state).toBe("succeeded");
    const { lines, sizes } = await readAll(taskId);
    for (const size of sizes) expect(size).toBeLessThanOrEqual(MIB + 1024);
    const texts = lines.map((line) => line.text);
    expect(texts).toContain(
      `${"\u001b".repeat(MAX_LOG_LINE_BYTES - Buffer.byteLength(LINE_CUT_MARK))}${LINE_CUT_MARK}`,
    );
    expect(texts).toContain("after the control line");
  });

  it("reads a 15 MB line stored before the caps in answers of at most 1 MiB, three readers at once in flat memory", async () => {
    const taskId = await runScript("legacy", { script: "echo placeholder; echo short 1; echo short 2; echo short 3" });
    const task = await test.waitForTask(taskId);
    expect(task.state).toBe("succeeded");
    // The line as the attack stored it before lines were cut: 15 MB of ESC, made by the database itself.
    const { db } = test.server.store;
    const fifteenMegabytes =
      dialect === "postgres" ? sql`repeat(chr(27), 15000000)` : sql`replace(hex(zeroblob(15000000)), '00', char(27))`;
    await sql`update task_logs set text = ${fifteenMegabytes} where task_id = ${taskId} and text = 'placeholder'`.execute(
      db,
    );
    const cutLine = `${"\u001b".repeat(MAX_LOG_LINE_BYTES - Buffer.byteLength(LINE_CUT_MARK))}${LINE_CUT_MARK}`;
    const follow = async () => {
      const response = await fetch(new URL(`/api/v1/tasks/${taskId}/log?follow=1`, test.server.url), {
        headers: { authorization: `Bearer ${test.apiKey}` },
      });
      return await response.text();
    };
    const { result: answers, growthBytes } = await rssGrowthWhile(
      Promise.all([readAll(taskId), readAll(taskId), readAll(taskId), follow()]),
    );
    expect(growthBytes).toBeLessThan(200 * MIB);
    const [first, second, third, stream = ""] = answers;
    for (const { lines, sizes } of [first, second, third]) {
      for (const size of sizes) expect(size).toBeLessThanOrEqual(MIB + 1024);
      expect(lines.map((line) => line.line)).toEqual(
        Array.from({ length: Number(task.logLines) }, (_, index) => index + 1),
      );
      expect(lines.map((line) => line.text)).toEqual(
        expect.arrayContaining([cutLine, "short 1", "short 2", "short 3"]),
      );
    }
    expect(Buffer.byteLength(stream)).toBeLessThan(MIB);
    expect(stream).toContain(JSON.stringify(cutLine));
    expect(stream).toContain('event: end\ndata: {"state":"succeeded"}');
  });

  it("pages a log longer than one answer, and ferry task logs and --follow print every line", async () => {
    const taskId = await runScript("chatty", {
      interpreter: "node",
      script:
        'for (let i = 1; i <= 3000; i++) console.log("line " + String(i).padStart(5, "0") + " " + "z".repeat(1000))',
    });
    expect((await test.waitForTask(taskId, 60_000)).state).toBe("succeeded");
    const { lines, sizes } = await readAll(taskId);
    expect(sizes.length).toBeGreaterThan(2);
    for (const size of sizes) expect(size).toBeLessThanOrEqual(MIB + 1024);
    const printed = lines.filter((line) => line.text.startsWith("line ")).map((line) => line.text.slice(0, 10));
    expect(printed).toEqual(Array.from({ length: 3000 }, (_, index) => `line ${String(index + 1).padStart(5, "0")}`));
    const env = isolatedEnv(home, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey });
    for (const args of [
      ["task", "logs", taskId],
      ["task", "logs", taskId, "--follow"],
    ]) {
      const result = await runFerry(args, env);
      expectSuccess(result);
      const outputLines = result.stdout.split("\n").filter((line) => line !== "");
      expect(outputLines, args.join(" ")).toHaveLength(lines.length);
      expect(outputLines.filter((line) => / line \d{5} z{1000}$/.test(line))).toHaveLength(3000);
    }
  });
});
