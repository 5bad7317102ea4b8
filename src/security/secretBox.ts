import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from "node:crypto";

const VERSION = "v1";
const IV_BYTES = 12;
const KEY_BYTES = 32;

/** The fingerprint a sealed value and an audit entry name their master key by: 12 hex digits of its SHA-256. */
export function masterKeyId(key: Buffer): string {
  return createHash("sha256").update(key).digest("hex").slice(0, 12);
}

/** The master key id a sealed value names ("v1:<key id>:…"), or undefined for text that is not one. */
export function sealedKeyId(sealed: string): string | undefined {
  const [version, keyId] = sealed.split(":", 2);
  return version === VERSION && keyId ? keyId : undefined;
}

/**
 * AES-256-GCM encryption of sensitive values under the install's master key.
 *
 * Every value is bound to where it is stored (the `context`, e.g. "variable:var_123")
 * as additional authenticated data, so a ciphertext copied into another row through the
 * database fails to decrypt instead of revealing itself somewhere it was not meant to be.
 * The stored text names the key (its fingerprint) so keys can be rotated.
 *
 * During a rotation (ADR 0046) the box holds two keys: it seals under the new one and
 * opens a value under whichever key the value names. The rotation ends by forgetting the
 * old key; from then on a value naming it fails to open with a message that says so.
 */
export class SecretBox {
  private readonly keys = new Map<string, Buffer>();
  private sealingKeyId: string;

  constructor(key: Buffer) {
    this.sealingKeyId = this.add(key);
  }

  /** The id of the key new values are sealed under. */
  get keyId(): string {
    return this.sealingKeyId;
  }

  /** Every key id this box can open values of (two during a rotation). */
  get keyIds(): string[] {
    return [...this.keys.keys()];
  }

  seal(plaintext: string, context: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.keyFor(this.sealingKeyId), iv);
    cipher.setAAD(Buffer.from(context, "utf8"));
    const ciphertext = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    const tag = cipher.getAuthTag();
    return [
      VERSION,
      this.sealingKeyId,
      iv.toString("base64"),
      tag.toString("base64"),
      ciphertext.toString("base64"),
    ].join(":");
  }

  /**
   * A 32-byte key for another purpose (e.g. "audit-chain"), derived from the master key
   * (the sealing one, or the one `keyId` names) with HKDF-SHA256: independent of the
   * encryption key and of every other purpose's key, and the same on every server node that
   * shares the master key.
   */
  deriveKey(purpose: string, keyId: string = this.sealingKeyId): Buffer {
    return Buffer.from(hkdfSync("sha256", this.keyFor(keyId), Buffer.alloc(0), `ferry:${purpose}`, KEY_BYTES));
  }

  open(sealed: string, context: string): string {
    const [version, keyId, iv, tag, ciphertext] = sealed.split(":");
    if (
      version !== VERSION ||
      keyId === undefined ||
      iv === undefined ||
      tag === undefined ||
      ciphertext === undefined
    ) {
      throw new Error("stored secret has an unknown format");
    }
    const decipher = createDecipheriv("aes-256-gcm", this.keyFor(keyId), Buffer.from(iv, "base64"));
    decipher.setAAD(Buffer.from(context, "utf8"));
    decipher.setAuthTag(Buffer.from(tag, "base64"));
    return Buffer.concat([decipher.update(Buffer.from(ciphertext, "base64")), decipher.final()]).toString("utf8");
  }

  /** Starts a rotation: new values are sealed under `next`; values under either key open. */
  beginRotation(next: Buffer): string {
    this.sealingKeyId = this.add(next);
    return this.sealingKeyId;
  }

  /** Ends a rotation: every key but the sealing one is forgotten. */
  finishRotation(): void {
    for (const keyId of [...this.keys.keys()]) if (keyId !== this.sealingKeyId) this.keys.delete(keyId);
  }

  private add(key: Buffer): string {
    if (key.length !== KEY_BYTES) throw new Error(`master key must be ${KEY_BYTES} bytes, got ${key.length}`);
    const keyId = masterKeyId(key);
    this.keys.set(keyId, key);
    return keyId;
  }

  private keyFor(keyId: string): Buffer {
    const key = this.keys.get(keyId);
    if (!key) {
      throw new Error(
        `stored secret was encrypted with master key ${keyId}, but this install has ${this.sealingKeyId}: restore the master.key that was backed up with this database (docs/security.md)`,
      );
    }
    return key;
  }
}
