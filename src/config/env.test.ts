import { describe, expect, it } from "vitest";
import { readEnvironment } from "./env.js";

describe("FERRY_STATSD", () => {
  it("reads host:port, IPv6 in brackets and host names", () => {
    expect(readEnvironment({ FERRY_STATSD: "127.0.0.1:8125" }).FERRY_STATSD).toEqual({ host: "127.0.0.1", port: 8125 });
    expect(readEnvironment({ FERRY_STATSD: "[::1]:8125" }).FERRY_STATSD).toEqual({ host: "::1", port: 8125 });
    expect(readEnvironment({ FERRY_STATSD: "statsd.internal:9125" }).FERRY_STATSD).toEqual({
      host: "statsd.internal",
      port: 9125,
    });
    expect(readEnvironment({}).FERRY_STATSD).toBeUndefined();
  });

  it("refuses what is not host:port", () => {
    for (const value of ["statsd", "host:0", "host:70000", "udp://host:8125"]) {
      expect(() => readEnvironment({ FERRY_STATSD: value }), value).toThrow(/FERRY_STATSD/);
    }
  });
});
