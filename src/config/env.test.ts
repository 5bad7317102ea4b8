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

describe("FERRY_OUTBOUND_ALLOW", () => {
  it("reads addresses, ranges and host names with optional ports", () => {
    expect(readEnvironment({}).FERRY_OUTBOUND_ALLOW.allow).toEqual([]);
    const policy = readEnvironment({
      FERRY_OUTBOUND_ALLOW: "127.0.0.1:5000, 10.0.0.0/8,registry.internal,[::1]:5000,Registry.Example.:443",
    }).FERRY_OUTBOUND_ALLOW;
    expect(policy.allow.map((rule) => ({ kind: rule.kind, port: rule.port }))).toEqual([
      { kind: "range", port: 5000 },
      { kind: "range", port: undefined },
      { kind: "host", port: undefined },
      { kind: "range", port: 5000 },
      { kind: "host", port: 443 },
    ]);
    expect(policy.allow[4]).toMatchObject({ host: "registry.example" });
  });

  it("refuses entries it cannot read, naming them", () => {
    for (const value of ["127.0.0.1:0", "10.0.0.0/33", "10.0.0.0/8:80", "[registry]:80", "bad host", "::1/200"]) {
      expect(() => readEnvironment({ FERRY_OUTBOUND_ALLOW: value }), value).toThrow(/FERRY_OUTBOUND_ALLOW/);
    }
  });
});

describe("FERRY_TRUSTED_PROXIES", () => {
  it("reads addresses and ranges; unset or empty trusts none", () => {
    expect(readEnvironment({}).FERRY_TRUSTED_PROXIES).toEqual([]);
    expect(readEnvironment({ FERRY_TRUSTED_PROXIES: "" }).FERRY_TRUSTED_PROXIES).toEqual([]);
    expect(
      readEnvironment({ FERRY_TRUSTED_PROXIES: "127.0.0.1, 10.0.0.0/8,::1,fd00::/8" }).FERRY_TRUSTED_PROXIES,
    ).toEqual(["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"]);
  });

  it("refuses entries that are not addresses or ranges, naming the variable and the entry", () => {
    for (const value of ["10.0.0.0/33", "::1/129", "proxy.internal", "10.0.0.0/8/8", "10.0.0.1:80", "10.0.0/8", "*"]) {
      expect(() => readEnvironment({ FERRY_TRUSTED_PROXIES: value }), value).toThrow(/FERRY_TRUSTED_PROXIES.*'/);
    }
  });
});

describe("FERRY_REQUESTS_PER_ADDRESS", () => {
  it("is 8 unless set, and refuses what is not a whole number from 1 to 10000", () => {
    expect(readEnvironment({}).FERRY_REQUESTS_PER_ADDRESS).toBe(8);
    expect(readEnvironment({ FERRY_REQUESTS_PER_ADDRESS: "64" }).FERRY_REQUESTS_PER_ADDRESS).toBe(64);
    for (const value of ["0", "-1", "2.5", "many", "10001"]) {
      expect(() => readEnvironment({ FERRY_REQUESTS_PER_ADDRESS: value }), value).toThrow(/FERRY_REQUESTS_PER_ADDRESS/);
    }
  });
});

describe("FERRY_PROXY_WORKERS", () => {
  it("is 1 (one process) unless set to a whole number from 1 to 64", () => {
    expect(readEnvironment({}).FERRY_PROXY_WORKERS).toBe(1);
    expect(readEnvironment({ FERRY_PROXY_WORKERS: "4" }).FERRY_PROXY_WORKERS).toBe(4);
    for (const value of ["0", "65", "2.5", "two", "-1"]) {
      expect(() => readEnvironment({ FERRY_PROXY_WORKERS: value }), value).toThrow(
        /FERRY_PROXY_WORKERS: must be a whole number of processes, 1 to 64/,
      );
    }
  });
});

describe("FERRY_SSH_KEEPALIVE_INTERVAL_SECONDS and FERRY_SSH_KEEPALIVE_COUNT_MAX", () => {
  it("are 10 s and 3 unless set, as before they could be set", () => {
    const environment = readEnvironment({});
    expect(environment.FERRY_SSH_KEEPALIVE_INTERVAL_SECONDS).toBe(10);
    expect(environment.FERRY_SSH_KEEPALIVE_COUNT_MAX).toBe(3);
    const set = readEnvironment({ FERRY_SSH_KEEPALIVE_INTERVAL_SECONDS: "15", FERRY_SSH_KEEPALIVE_COUNT_MAX: "5" });
    expect(set.FERRY_SSH_KEEPALIVE_INTERVAL_SECONDS).toBe(15);
    expect(set.FERRY_SSH_KEEPALIVE_COUNT_MAX).toBe(5);
  });

  it("refuse what is not a whole number in range, naming the variable and the range", () => {
    for (const value of ["0", "-1", "2.5", "often", "3601"]) {
      expect(() => readEnvironment({ FERRY_SSH_KEEPALIVE_INTERVAL_SECONDS: value }), value).toThrow(
        /FERRY_SSH_KEEPALIVE_INTERVAL_SECONDS: (must be|send keep-alives)/,
      );
    }
    for (const value of ["0", "1.5", "many", "101"]) {
      expect(() => readEnvironment({ FERRY_SSH_KEEPALIVE_COUNT_MAX: value }), value).toThrow(
        /FERRY_SSH_KEEPALIVE_COUNT_MAX: (must be|allow 1 to 100)/,
      );
    }
  });
});

describe("FERRY_SSH_CONNECT_TIMEOUT_SECONDS and FERRY_SSH_OPERATION_TIMEOUT_SECONDS", () => {
  it("are 15 s and 30 s unless set, as before they could be set", () => {
    const environment = readEnvironment({});
    expect(environment.FERRY_SSH_CONNECT_TIMEOUT_SECONDS).toBe(15);
    expect(environment.FERRY_SSH_OPERATION_TIMEOUT_SECONDS).toBe(30);
    const set = readEnvironment({ FERRY_SSH_CONNECT_TIMEOUT_SECONDS: "5", FERRY_SSH_OPERATION_TIMEOUT_SECONDS: "120" });
    expect(set.FERRY_SSH_CONNECT_TIMEOUT_SECONDS).toBe(5);
    expect(set.FERRY_SSH_OPERATION_TIMEOUT_SECONDS).toBe(120);
  });

  it("refuse what is not a whole number in range, naming the variable and the range", () => {
    for (const value of ["0", "-1", "2.5", "soon", "601"]) {
      expect(() => readEnvironment({ FERRY_SSH_CONNECT_TIMEOUT_SECONDS: value }), value).toThrow(
        /FERRY_SSH_CONNECT_TIMEOUT_SECONDS: (must be|allow connecting 1 to 600 seconds)/,
      );
    }
    for (const value of ["0", "1.5", "long", "3601"]) {
      expect(() => readEnvironment({ FERRY_SSH_OPERATION_TIMEOUT_SECONDS: value }), value).toThrow(
        /FERRY_SSH_OPERATION_TIMEOUT_SECONDS: (must be|allow an operation 1 to 3600 seconds)/,
      );
    }
  });
});
