import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from "node:crypto";

const VERSION = "v1";
const IV_BYTES = 12;
const KEY_BYTES = 32;

/**
 * AES-256-GCM encryption of sensitive values under the install's master key.
 *
 * Every value is bound to where it is stored (the `context`, e.g. "variable:var_123")
 * as additional authenticated data, so a ciphertext copied into another row through the
 * database fails to decrypt instead of revealing itself somewhere it was not meant to be.
 * The stored text names the key (its fingerprint) so keys can be rotated later.
 */
export class SecretBox {
  readonly keyId: string;

  constructor(private readonly key: Buffer) {
    if (key.length !== KEY_BYTES) throw new Error(`master key must be ${KEY_BYTES} bytes, got ${key.length}`);
    this.keyId = createHash("sha256").update(key).digest("hex").slice(0, 12);
  }

  seal(plaintext: string, context: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.key, iv);
    cipher.setAAD(Buffer.from(context, "utf8"));
    const ciphertext = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    const tag = cipher.getAuthTag();
    return [VERSION, this.keyId, iv.toString("base64"), tag.toString("base64"), ciphertext.toString("base64")].join(
      ":",
    );
  }

  /**
   * A 32-byte key for another purpose (e.g. "audit-chain"), derived from the master key
   * with HKDF-SHA256: independent of the encryption key and of every other purpose's key,
   * and the same on every server node that shares the master key.
   */
  deriveKey(purpose: string): Buffer {
    return Buffer.from(hkdfSync("sha256", this.key, Buffer.alloc(0), `ferry:${purpose}`, KEY_BYTES));
  }

  open(sealed: string, context: string): string {
    const [version, keyId, iv, tag, ciphertext] = sealed.split(":");
    if (version !== VERSION || iv === undefined || tag === undefined || ciphertext === undefined) {
      throw new Error("stored secret has an unknown format");
    }
    if (keyId !== this.keyId) {
      throw new Error(`stored secret was encrypted with master key ${keyId}, but this install has ${this.keyId}`);
    }
    const decipher = createDecipheriv("aes-256-gcm", this.key, Buffer.from(iv, "base64"));
    decipher.setAAD(Buffer.from(context, "utf8"));
    decipher.setAuthTag(Buffer.from(tag, "base64"));
    return Buffer.concat([decipher.update(Buffer.from(ciphertext, "base64")), decipher.final()]).toString("utf8");
  }
}
