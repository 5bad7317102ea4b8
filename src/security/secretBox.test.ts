import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { SecretBox } from "./secretBox.js";

describe("SecretBox", () => {
  const box = new SecretBox(randomBytes(32));

  it("round-trips a value and never stores it in clear", () => {
    const sealed = box.seal("p@ssw0rd\nline two", "variable:var_1");
    expect(sealed).not.toContain("p@ssw0rd");
    expect(sealed.startsWith(`v1:${box.keyId}:`)).toBe(true);
    expect(box.open(sealed, "variable:var_1")).toBe("p@ssw0rd\nline two");
  });

  it("uses a fresh IV each time", () => {
    expect(box.seal("same", "c")).not.toBe(box.seal("same", "c"));
  });

  it("refuses a ciphertext moved to another row or tampered with", () => {
    const sealed = box.seal("secret", "variable:var_1");
    expect(() => box.open(sealed, "variable:var_2")).toThrow();
    const parts = sealed.split(":");
    const ciphertext = Buffer.from(parts[4] ?? "", "base64");
    ciphertext[0] = (ciphertext[0] ?? 0) ^ 1;
    parts[4] = ciphertext.toString("base64");
    expect(() => box.open(parts.join(":"), "variable:var_1")).toThrow();
  });

  it("says which master key a value needs when the key differs", () => {
    const other = new SecretBox(randomBytes(32));
    expect(() => other.open(box.seal("x", "c"), "c")).toThrow(new RegExp(`master key ${box.keyId}`));
  });

  it("during a rotation seals under the new key and opens under both; afterwards only the new one", () => {
    const oldKey = randomBytes(32);
    const rotating = new SecretBox(oldKey);
    const before = rotating.seal("before", "c");
    const oldId = rotating.keyId;
    const newId = rotating.beginRotation(randomBytes(32));
    expect(newId).not.toBe(oldId);
    const during = rotating.seal("during", "c");
    expect(during.startsWith(`v1:${newId}:`)).toBe(true);
    expect(rotating.open(before, "c")).toBe("before");
    expect(rotating.open(during, "c")).toBe("during");
    // The audit chain key follows the sealing key; an older one is still derivable meanwhile.
    expect(rotating.deriveKey("audit-chain", oldId)).toEqual(new SecretBox(oldKey).deriveKey("audit-chain"));
    rotating.finishRotation();
    expect(rotating.keyIds).toEqual([newId]);
    expect(() => rotating.open(before, "c")).toThrow(/restore the master\.key that was backed up with this database/);
    expect(rotating.open(during, "c")).toBe("during");
  });
});
