import { EventEmitter } from "node:events";
import type { AddressInfo } from "node:net";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import { afterEach, describe, expect, it } from "vitest";
import { AddressQueue } from "./addressQueue.js";

/**
 * A real server with the queue hooked in as buildApp hooks it (src/api/app.ts), a route
 * that holds each request until the test lets it go, and real HTTP clients. The client's
 * address comes from X-Forwarded-For (trustProxy), so one test can be several clients.
 */
async function serverWithQueue(limit: number) {
  const queue = new AddressQueue(limit);
  const app: FastifyInstance = Fastify({ trustProxy: true });
  const running = new Map<string, number>();
  let mostAtOnce = 0;
  const order: string[] = [];
  const held: (() => void)[] = [];
  app.addHook("onRequest", async (request, reply) => {
    if (!request.routeOptions.config?.unqueued) await queue.acquire(request, reply);
  });
  app.get<{ Querystring: { name: string } }>("/work", async (request) => {
    const count = (running.get(request.ip) ?? 0) + 1;
    running.set(request.ip, count);
    mostAtOnce = Math.max(mostAtOnce, count);
    order.push(request.query.name);
    await new Promise<void>((resolve) => held.push(resolve));
    running.set(request.ip, (running.get(request.ip) ?? 1) - 1);
    return { name: request.query.name };
  });
  app.get("/healthz", { config: { unqueued: true } }, async () => ({ status: "ok" }));
  await app.listen({ port: 0, host: "127.0.0.1" });
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const get = (path: string, address: string, signal?: AbortSignal) =>
    fetch(`${url}${path}`, { headers: { "x-forwarded-for": address }, ...(signal && { signal }) });
  const until = async (condition: () => boolean) => {
    while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
  };
  return { app, queue, get, until, order, held, mostAtOnce: () => mostAtOnce };
}

let server: Awaited<ReturnType<typeof serverWithQueue>> | undefined;
afterEach(async () => {
  for (const release of server?.held ?? []) release();
  await server?.app.close();
  server = undefined;
});

describe("requests of one client address run a few at a time", () => {
  it("runs at most the limit at once and the rest in the order they came, answering every one", async () => {
    server = await serverWithQueue(3);
    const { get, until, order, held, queue } = server;
    const answers: Promise<Response>[] = [];
    for (let index = 0; index < 10; index += 1) {
      answers.push(get(`/work?name=a${index}`, "10.0.0.1"));
      // One at a time into the line, so the order they came in is known.
      await until(() => order.length + queue.usage("10.0.0.1").waiting === index + 1);
    }
    await until(() => order.length === 3);
    expect(queue.usage("10.0.0.1")).toEqual({ running: 3, waiting: 7 });

    // Another client is not behind the first one's line, and /healthz is behind none.
    const other = get("/work?name=b0", "10.0.0.2");
    await until(() => order.includes("b0"));
    expect((await get("/healthz", "10.0.0.1")).status).toBe(200);

    while (held.length > 0 || order.length < 11) {
      held.shift()?.();
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    const names = await Promise.all(
      answers.map(async (answer) => ((await (await answer).json()) as { name: string }).name),
    );
    expect(names).toEqual(Array.from({ length: 10 }, (_, index) => `a${index}`));
    expect(((await (await other).json()) as { name: string }).name).toBe("b0");
    expect(order.filter((name) => name.startsWith("a"))).toEqual(names);
    expect(server.mostAtOnce()).toBe(3);
    await until(() => queue.usage("10.0.0.1").running === 0);
  });

  it("starts one request of a client in a turn of the event loop, also when each ends within its turn", async () => {
    // On SQLite a refused request runs start to end within the turn its data arrived in: here,
    // 30 requests read one after another in one turn, each answered before the next is read.
    // Counting only the requests running at once let all 30 run in that turn.
    const queue = new AddressQueue(2);
    let turn = 0;
    let counting = true;
    const next = () => {
      turn += 1;
      if (counting) setImmediate(next);
    };
    setImmediate(next);
    const startedIn: number[] = [];
    try {
      for (let index = 0; index < 30; index += 1) {
        const request = { ip: "10.0.0.1" } as FastifyRequest;
        const reply = { raw: Object.assign(new EventEmitter(), { closed: false }) } as unknown as FastifyReply;
        expect(await queue.acquire(request, reply)).toBe(true);
        startedIn.push(turn);
        queue.release(request);
      }
    } finally {
      counting = false;
    }
    const perTurn = new Map<number, number>();
    for (const started of startedIn) perTurn.set(started, (perTurn.get(started) ?? 0) + 1);
    expect(Math.max(...perTurn.values())).toBe(1);
    expect(perTurn.size).toBe(30);
  });

  it("gives back the place of a client that left while running or waiting", async () => {
    server = await serverWithQueue(1);
    const { get, until, order, held, queue } = server;
    const leaving = new AbortController();
    const first = get("/work?name=first", "10.0.0.1", leaving.signal).catch(() => "gone");
    await until(() => order.length === 1);
    const waitingOne = new AbortController();
    const second = get("/work?name=second", "10.0.0.1", waitingOne.signal).catch(() => "gone");
    await until(() => queue.usage("10.0.0.1").waiting === 1);
    waitingOne.abort();
    leaving.abort();
    expect(await first).toBe("gone");
    expect(await second).toBe("gone");
    // The first handler is still held, but its client has gone: the line moves on.
    const third = get("/work?name=third", "10.0.0.1");
    await until(() => order.includes("third"));
    for (const release of held.splice(0)) release();
    expect(((await (await third).json()) as { name: string }).name).toBe("third");
  });
});
