import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ssh2 from "ssh2";
import { afterAll, describe, expect, it } from "vitest";
import { hostKeyFingerprint, privateKeyProblem } from "./sshKeys.js";

describe("SSH keys", () => {
  const directory = mkdtempSync(join(tmpdir(), "ferry-sshkeys-"));
  afterAll(() => rmSync(directory, { recursive: true, force: true }));

  it("prints a host key's fingerprint exactly as ssh-keygen -lf does", () => {
    const file = join(directory, "host");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", file]);
    const [, base64 = ""] = readFileSync(`${file}.pub`, "utf8").split(" ");
    const printed = execFileSync("ssh-keygen", ["-lf", `${file}.pub`], { encoding: "utf8" }).split(" ")[1];
    expect(hostKeyFingerprint(Buffer.from(base64, "base64"))).toBe(printed);
  });

  it("accepts a readable private key, with its passphrase when it is encrypted", () => {
    const plain = ssh2.utils.generateKeyPairSync("ed25519");
    const encrypted = ssh2.utils.generateKeyPairSync("ecdsa", {
      bits: 256,
      passphrase: "open sesame",
      cipher: "aes256-ctr",
      rounds: 16,
    });
    expect(privateKeyProblem(plain.private, undefined)).toBeUndefined();
    expect(privateKeyProblem(encrypted.private, "open sesame")).toBeUndefined();
  });

  it("says what is wrong with a key it cannot use, without the key in the message", () => {
    const encrypted = ssh2.utils.generateKeyPairSync("ed25519", {
      passphrase: "open sesame",
      cipher: "aes256-ctr",
      rounds: 16,
    });
    const plain = ssh2.utils.generateKeyPairSync("ed25519");
    expect(privateKeyProblem(encrypted.private, undefined)).toMatch(/encrypted: give its passphrase/);
    expect(privateKeyProblem(encrypted.private, "wrong")).toMatch(/passphrase/);
    expect(privateKeyProblem(plain.public, undefined)).toMatch(/public key|cannot be read/);
    const broken = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
    expect(privateKeyProblem(broken, undefined)).toMatch(/cannot be read/);
  });
});
