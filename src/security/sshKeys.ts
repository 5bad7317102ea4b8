import { createHash } from "node:crypto";
// ssh2 is CommonJS: Node's ESM loader gives its exports on the default import only.
import ssh2 from "ssh2";

const { utils } = ssh2;

/**
 * A host key's fingerprint as OpenSSH prints it (`ssh-keygen -lf`, the first connection's
 * prompt): "SHA256:" and the base64 of the SHA-256 of the key's wire form, without padding.
 */
export function hostKeyFingerprint(key: Buffer): string {
  return `SHA256:${createHash("sha256").update(key).digest("base64").replace(/=+$/, "")}`;
}

/**
 * Why a private key cannot be used, or undefined when it can: it must parse (with the
 * passphrase, when it is encrypted) and be a private key. The message never holds the key.
 */
export function privateKeyProblem(key: string, passphrase: string | undefined): string | undefined {
  let parsed: ReturnType<typeof utils.parseKey>;
  try {
    parsed = utils.parseKey(key, passphrase);
  } catch {
    parsed = new Error("unreadable");
  }
  if (parsed instanceof Error) {
    if (/encrypted/i.test(parsed.message) && /no passphrase/i.test(parsed.message)) {
      return "the private key is encrypted: give its passphrase too";
    }
    if (passphrase !== undefined && /(bad|wrong|decrypt|passphrase)/i.test(parsed.message)) {
      return "the private key cannot be decrypted with this passphrase: check the passphrase";
    }
    return "the private key cannot be read: give the whole file ssh-keygen wrote (OpenSSH or PEM, RSA, ECDSA or Ed25519)";
  }
  const first = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!first?.isPrivateKey()) return "this is a public key: give the private key (the file without .pub)";
  return undefined;
}
