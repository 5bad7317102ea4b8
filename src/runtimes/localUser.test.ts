import { describe, expect, it } from "vitest";
import { resolveLocalUser, spawnCredentials } from "./localUser.js";

describe("the account local steps run as", () => {
  it("is a uid of each task's own when the server is root and nothing is set", () => {
    expect(resolveLocalUser(undefined, 0)).toEqual({ kind: "perTask", firstUid: 2_000_000_000, count: 10_000 });
    expect(resolveLocalUser(undefined, 0, "3000000-3000099")).toEqual({
      kind: "perTask",
      firstUid: 3_000_000,
      count: 100,
    });
  });

  it("refuses a uid range it cannot use, saying what to write", () => {
    expect(() => resolveLocalUser(undefined, 0, "0-10")).toThrow(/FERRY_RUN_AS_UIDS=0-10: use FIRST-LAST/);
    expect(() => resolveLocalUser(undefined, 0, "5000-4000")).toThrow(/use FIRST-LAST/);
  });

  it("is refused, saying what to do, when the server is not root and nothing is set", () => {
    const user = resolveLocalUser(undefined, 1000);
    expect(user.kind).toBe("refused");
    expect(user.kind === "refused" && user.reason).toMatch(/FERRY_RUN_AS=server/);
  });

  it("is the server's own account only when FERRY_RUN_AS=server says so", () => {
    expect(resolveLocalUser("server", 1000)).toEqual({ kind: "server" });
    expect(spawnCredentials(undefined)).toEqual({});
  });

  it("is one named account when FERRY_RUN_AS names it", () => {
    expect(resolveLocalUser("nobody", 0)).toEqual({ kind: "user", name: "nobody", uid: 65534, gid: 65534 });
  });

  it("names a missing user and refuses what is not a user name", () => {
    expect(() => resolveLocalUser("no-such-user-here", 0)).toThrow(/no such user/);
    expect(() => resolveLocalUser("$(touch /tmp/x)", 0)).toThrow(/use a user name or uid/);
  });

  it("refuses another user when the server cannot switch to it", () => {
    expect(() => resolveLocalUser("nobody", 1000)).toThrow(/only a server running as root/);
  });
});
