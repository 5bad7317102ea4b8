import { EventEmitter } from "node:events";
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { TaskLogFeeds } from "../src/api/logFeed.js";
import { appendLogLines, claimTasks, enqueueTask, finishTask, type NewLogLine } from "../src/store/tasks.js";
import { dialects, openTestDatabase, type TestDatabase } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

interface ServerSentEvent {
  id: number | undefined;
  event: string;
  data: unknown;
}

/** The events of a complete text/event-stream body (comments dropped). */
function parseEvents(body: string): ServerSentEvent[] {
  const events: ServerSentEvent[] = [];
  for (const block of body.split("\n\n")) {
    let id: number | undefined;
    let event = "message";
    let data: string | undefined;
    for (const field of block.split("\n")) {
      if (field.startsWith("id: ")) id = Number(field.slice(4));
      else if (field.startsWith("event: ")) event = field.slice(7);
      else if (field.startsWith("data: ")) data = field.slice(6);
    }
    if (data !== undefined) events.push({ id, event, data: JSON.parse(data) });
  }
  return events;
}

/** Asserts a follower got lines after+1…total, each once and in order, then the end event. */
function expectEveryLineOnce(body: string, after: number, total: number, texts: (line: number) => string | undefined) {
  const events = parseEvents(body);
  const lines = events.filter((event) => event.event === "line");
  const expected = Array.from({ length: total - after }, (_, index) => after + 1 + index);
  expect(lines.map((event) => event.id)).toEqual(expected);
  expect(lines.map((event) => (event.data as { line: number }).line)).toEqual(expected);
  for (const event of lines) {
    const wanted = texts(event.id ?? 0);
    if (wanted !== undefined) expect((event.data as { text: string }).text).toBe(wanted);
  }
  expect(events.at(-1)).toEqual({ id: undefined, event: "end", data: { state: "succeeded" } });
  expect(events.filter((event) => event.event === "end")).toHaveLength(1);
}

/** A follower writing into memory, as slowly as asked; `finished` is what it got once the feed ended it. */
function follow(
  feeds: TaskLogFeeds,
  task: { id: string; storedLines: number },
  after: number,
  errors: unknown[],
  options: { highWaterMark?: number; delayMs?: number } = {},
) {
  const chunks: Buffer[] = [];
  const output = new Writable({
    highWaterMark: options.highWaterMark ?? 16 * 1024,
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      if (options.delayMs === undefined) callback();
      else setTimeout(callback, options.delayMs);
    },
  });
  const stop = feeds.follow(task.id, { after, storedLines: task.storedLines }, output, (error) => errors.push(error));
  output.on("close", stop);
  const finished = new Promise<string>((resolve, reject) => {
    output.on("finish", () => resolve(Buffer.concat(chunks).toString("utf8")));
    output.on("error", reject);
  });
  return { after, finished, output };
}

function logLines(from: number, count: number): NewLogLine[] {
  return Array.from({ length: count }, (_, index) => ({
    at: new Date().toISOString(),
    level: "info",
    step: "print",
    text: `line ${from + index} ✓`,
  }));
}

describe.each(dialects)("followers sharing one task's log feed on %s", (dialect) => {
  let database: TestDatabase;
  let events: EventEmitter;
  let feeds: TaskLogFeeds;
  let taskId: string;
  const errors: unknown[] = [];

  beforeEach(async () => {
    database = await openTestDatabase(dialect);
    events = new EventEmitter();
    // Small reads, buffer and writes, so that followers fall behind the buffer and catch up from the database.
    feeds = new TaskLogFeeds(database.store.db, events, {
      pollMs: 50,
      readLines: 100,
      spareBytes: 4_000,
      maxBytes: 40_000,
      writeBytes: 3_000,
      keepAliveMs: 60_000,
    });
    const task = await enqueueTask(database.store.db, {
      kind: "test",
      title: "chatty",
      payload: {},
      lockKeys: [],
      createdBy: "test",
    });
    const [claimed] = await claimTasks(database.store.db, dialect, { owner: "node-1", capacity: 1, leaseMs: 60_000 });
    expect(claimed?.id).toBe(task.id);
    taskId = task.id;
    errors.length = 0;
  });
  afterEach(async () => {
    expect(errors).toEqual([]);
    // Every feed is gone once its followers are: nothing listens to the engine any more.
    expect(events.listenerCount("log")).toBe(0);
    expect(events.listenerCount("state")).toBe(0);
    await database.dispose();
  });

  it("gives each follower every line once, in order, however fast it reads and whenever it joins", async () => {
    const { db } = database.store;
    const total = 3_000;
    let written = 0;
    const task = { id: taskId, storedLines: 0 };
    const followers = [
      follow(feeds, task, 0, errors),
      follow(feeds, task, 0, errors, { highWaterMark: 512, delayMs: 3 }),
      follow(feeds, task, 1_234, errors),
    ];
    // One that leaves half way must not disturb the others.
    const leaver = follow(feeds, task, 0, errors, { highWaterMark: 256, delayMs: 5 });
    while (written < total) {
      const count = Math.min(total - written, 20 + ((written * 7) % 180));
      await appendLogLines(db, taskId, logLines(written + 1, count));
      written += count;
      task.storedLines = written;
      // Half the time tell the feed, half the time leave it to its poll (another node wrote).
      if (written % 2 === 0) events.emit("log", taskId);
      if (written >= 1_500 && followers.length === 3) {
        leaver.output.destroy();
        // Late, from the start (far behind the buffer), and late from the middle.
        followers.push(follow(feeds, task, 0, errors), follow(feeds, task, 1_400, errors));
      }
      await sleep(2);
    }
    expect(await finishTask(db, taskId, "node-1", { state: "succeeded" })).toBe(true);
    events.emit("state", taskId);
    // After the end: still every line, then the end event.
    followers.push(follow(feeds, task, 2_990, errors));
    for (const follower of followers) {
      expectEveryLineOnce(await follower.finished, follower.after, total, (line) => `line ${line} ✓`);
    }
  });

  it("reads on, one batch ahead, for followers that all drain slowly", async () => {
    const { db } = database.store;
    const total = 2_000;
    await appendLogLines(db, taskId, logLines(1, total));
    expect(await finishTask(db, taskId, "node-1", { state: "succeeded" })).toBe(true);
    const task = { id: taskId, storedLines: total };
    // Every write leaves these over their high-water mark, so the feed has to wait for them.
    const followers = [
      follow(feeds, task, 0, errors, { highWaterMark: 256, delayMs: 1 }),
      follow(feeds, task, 0, errors, { highWaterMark: 256, delayMs: 2 }),
      follow(feeds, task, 700, errors, { highWaterMark: 256, delayMs: 1 }),
    ];
    for (const follower of followers) {
      expectEveryLineOnce(await follower.finished, follower.after, total, (line) => `line ${line} ✓`);
    }
  });
});

describe("GET /api/v1/tasks/:id/log?follow=1 with several followers (real script, SQLite)", () => {
  let test: TestServer;

  beforeAll(async () => {
    test = await startTestServer();
    await test.call("POST", "/api/v1/environments", { name: "dev" });
    await test.call("POST", "/api/v1/lifecycles", { name: "follow", phases: [{ environments: ["dev"] }] });
    await test.call("POST", "/api/v1/projects", { name: "chatty", lifecycle: "follow" });
    await test.call("PUT", "/api/v1/projects/chatty/process", {
      steps: [
        {
          name: "print",
          kind: "script",
          // Bursts with pauses, so followers can join while lines are still coming.
          config: { script: 'for burst in $(seq 1 20); do seq -f "burst $burst line %g" 1 400; sleep 0.1; done' },
        },
      ],
    });
    await test.call("POST", "/api/v1/projects/chatty/releases", { version: "1.0.0" });
  });
  afterAll(async () => {
    await test?.close();
  });

  it("streams every line exactly once, in order, to followers that join early, late and from the middle", async () => {
    const created = await test.call<{ taskId: string }>("POST", "/api/v1/projects/chatty/deployments", {
      release: "1.0.0",
      environment: "dev",
    });
    const taskId = created.body.taskId;
    const received = new Map<number, string>();
    const follow = (after: number) => {
      let body = "";
      const done = (async () => {
        const response = await fetch(new URL(`/api/v1/tasks/${taskId}/log?follow=1&after=${after}`, test.server.url), {
          headers: { authorization: `Bearer ${test.apiKey}` },
        });
        expect(response.status).toBe(200);
        expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
        if (!response.body) throw new Error("the log stream has no body");
        const decoder = new TextDecoder();
        for await (const chunk of response.body) {
          body += decoder.decode(chunk, { stream: true });
          received.set(after, body);
        }
        return body;
      })();
      return { after, done };
    };
    const followers = [follow(0), follow(0)];
    // Join once the first followers have seen a few thousand lines.
    for (let attempt = 0; attempt < 400 && (received.get(0)?.match(/event: line/g)?.length ?? 0) < 3_000; attempt++) {
      await sleep(10);
    }
    followers.push(follow(0), follow(1_500));
    const task = await test.waitForTask(taskId);
    expect(task.state).toBe("succeeded");
    const total = Number(task.logLines);
    const { body: log } = await test.call<{ lines: { line: number; text: string }[] }>(
      "GET",
      `/api/v1/tasks/${taskId}/log?after=0`,
    );
    expect(log.lines).toHaveLength(total);
    expect(log.lines.filter((line) => line.text.startsWith("burst ")).length).toBe(8_000);
    const texts = new Map(log.lines.map((line) => [line.line, line.text]));
    for (const follower of followers) {
      expectEveryLineOnce(await follower.done, follower.after, total, (line) => texts.get(line));
    }
  });

  it("answers 404 for an unknown task, before any stream starts", async () => {
    const response = await fetch(new URL("/api/v1/tasks/task_nope/log?follow=1", test.server.url), {
      headers: { authorization: `Bearer ${test.apiKey}` },
    });
    expect(response.status).toBe(404);
    expect(response.headers.get("content-type")).toMatch(/^application\/problem\+json/);
  });
});
