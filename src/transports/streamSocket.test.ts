import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { StreamSocket } from "./streamSocket.js";

/** A peer's side failing (an agent's host killed mid-tunnel) as its request stream reports it. */
function reset(): Error {
  return Object.assign(new Error("aborted"), { code: "ECONNRESET" });
}

describe("StreamSocket when the other side goes away", () => {
  it("hands the error to a consumer that listens for it", async () => {
    const incoming = new PassThrough();
    const socket = new StreamSocket(incoming, new PassThrough());
    const failed = new Promise<Error>((resolve) => socket.once("error", resolve));
    incoming.destroy(reset());
    expect((await failed).message).toBe("aborted");
    expect(socket.destroyed).toBe(true);
  });

  it("closes, without an uncaught error, when its consumer no longer listens", async () => {
    const uncaught: unknown[] = [];
    const record = (error: unknown) => uncaught.push(error);
    process.on("uncaughtException", record);
    try {
      const incoming = new PassThrough();
      const socket = new StreamSocket(incoming, new PassThrough());
      const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
      incoming.destroy(reset());
      await closed;
      await new Promise((resolve) => setImmediate(resolve));
      expect(socket.destroyed).toBe(true);
      expect(uncaught).toEqual([]);
    } finally {
      process.off("uncaughtException", record);
    }
  });
});
