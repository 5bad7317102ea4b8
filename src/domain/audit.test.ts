import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  AuditChainVerifier,
  type AuditEntryContent,
  CHANGED,
  type ChainedAuditEntry,
  canonicalJson,
  chainHash,
  diffOf,
  GENESIS_HASH,
  SENSITIVE,
} from "./audit.js";

describe("diffOf", () => {
  it("lists the fields that changed, ignoring the timestamps", () => {
    const before = { name: "Shop", description: "", tags: ["a"], updatedAt: "1", createdAt: "0" };
    const after = { name: "Shop", description: "Online shop", tags: ["a", "b"], updatedAt: "2", createdAt: "0" };
    expect(diffOf({ resource: { type: "project" }, before, after })).toEqual({
      description: { from: "", to: "Online shop" },
      tags: { from: ["a"], to: ["a", "b"] },
    });
  });

  it("compares objects whatever their key order", () => {
    const diff = diffOf({
      resource: { type: "variable" },
      before: { scope: { roles: [], environments: ["prod"] } },
      after: { scope: { environments: ["prod"], roles: [] } },
    });
    expect(diff).toEqual({});
  });

  it("records a secret only as set, changed or cleared", () => {
    const resource = { type: "feed" };
    expect(diffOf({ resource, after: { password: "set" }, sensitive: ["password"] })).toEqual({
      password: { from: null, to: SENSITIVE },
    });
    expect(
      diffOf({ resource, before: { password: "set" }, after: { password: "set" }, sensitive: ["password"] }),
    ).toEqual({});
    expect(
      diffOf({
        resource,
        before: { password: "set" },
        after: { password: "set" },
        sensitive: ["password"],
        written: ["password"],
      }),
    ).toEqual({ password: { from: SENSITIVE, to: CHANGED } });
    expect(
      diffOf({ resource, before: { password: "set" }, after: { password: null }, sensitive: ["password"] }),
    ).toEqual({ password: { from: SENSITIVE, to: null } });
    // A plain value that becomes a secret is not written down either.
    expect(
      diffOf({
        resource,
        before: { value: "old-plain" },
        after: { value: "set" },
        sensitive: ["value"],
        written: ["value"],
      }),
    ).toEqual({ value: { from: SENSITIVE, to: CHANGED } });
  });
});

describe("canonicalJson", () => {
  it("sorts keys at every level", () => {
    expect(canonicalJson({ b: 1, a: { d: [{ f: 1, e: 2 }], c: null } })).toBe(
      '{"a":{"c":null,"d":[{"e":2,"f":1}]},"b":1}',
    );
  });
});

describe("AuditChainVerifier", () => {
  const key = randomBytes(32);
  const chain = (count: number): ChainedAuditEntry[] => {
    const entries: ChainedAuditEntry[] = [];
    let prevHash = GENESIS_HASH;
    for (let seq = 1; seq <= count; seq++) {
      const content: AuditEntryContent = {
        seq,
        id: `aud_${seq}`,
        at: new Date(seq * 1000).toISOString(),
        actorId: "key_1",
        actorName: "admin",
        source: "127.0.0.1",
        action: "project.update",
        resourceType: "project",
        resourceId: "prj_1",
        resourceName: "shop",
        diff: canonicalJson({ description: { from: "", to: `v${seq}` } }),
        keyId: "k1",
      };
      const hash = chainHash(key, prevHash, content);
      entries.push({ ...content, prevHash, hash });
      prevHash = hash;
    }
    return entries;
  };
  const verify = (entries: ChainedAuditEntry[], head = { seq: 4, hash: chain(4)[3]?.hash ?? "" }) => {
    const verifier = new AuditChainVerifier(key, "k1", head);
    for (const entry of entries) {
      const fault = verifier.check(entry);
      if (fault) return fault;
    }
    return verifier.finish();
  };

  it("accepts an untouched chain", () => {
    expect(verify(chain(4))).toBeUndefined();
  });

  it("names an edited entry, a deleted one, a forged one and a truncated end", () => {
    const edited = chain(4).map((entry) => (entry.seq === 2 ? { ...entry, actorName: "someone else" } : entry));
    expect(verify(edited)).toMatchObject({ seq: 2, id: "aud_2", reason: expect.stringContaining("edited") });

    const deleted = chain(4).filter((entry) => entry.seq !== 3);
    expect(verify(deleted)).toMatchObject({
      seq: 4,
      id: "aud_4",
      reason: expect.stringContaining("entry 3 is missing"),
    });

    const forged = [...chain(4), { ...(chain(4)[3] as ChainedAuditEntry), seq: 5, id: "aud_forged" }];
    expect(verify(forged)).toMatchObject({ seq: 5, id: "aud_forged" });

    expect(verify(chain(3))).toMatchObject({ seq: 4, id: null, reason: expect.stringContaining("newest") });
  });

  it("refuses a chain computed with another key", () => {
    const verifier = new AuditChainVerifier(randomBytes(32), "k1", { seq: 1, hash: chain(1)[0]?.hash ?? "" });
    expect(verifier.check(chain(1)[0] as ChainedAuditEntry)).toMatchObject({ seq: 1, id: "aud_1" });
  });
});
