import { describe, expect, it } from "vitest";
import { resolveLocalUser, spawnCredentials } from "./localUser.js";

describe("the account local steps run as", () => {
  it("is nobody when the server is root and nothing is set", () => {
    expect(resolveLocalUser(undefined, 0)).toEqual({ kind: "user", name: "nobody", uid: 65534, gid: 65534 });
  });

  it("is refused, saying what to do, when the server is not root and nothing is set", () => {
    const user = resolveLocalUser(undefined, 1000);
    expect(user.kind).toBe("refused");
    expect(() => spawnCredentials(user)).toThrow(/FERRY_RUN_AS=server/);
  });

  it("is the server's own account only when FERRY_RUN_AS=server says so", () => {
    expect(resolveLocalUser("server", 1000)).toEqual({ kind: "server" });
    expect(spawnCredentials({ kind: "server" })).toEqual({});
  });

  it("names a missing user and refuses what is not a user name", () => {
    expect(() => resolveLocalUser("no-such-user-here", 0)).toThrow(/no such user/);
    expect(() => resolveLocalUser("$(touch /tmp/x)", 0)).toThrow(/use a user name or uid/);
  });

  it("refuses another user when the server cannot switch to it", () => {
    expect(() => resolveLocalUser("nobody", 1000)).toThrow(/only a server running as root/);
  });
});
