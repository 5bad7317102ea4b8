import { ConflictError } from "../domain/errors.js";
import { commitPendingMasterKey, createPendingMasterKey, readPendingMasterKey } from "../security/masterKey.js";
import { masterKeyId } from "../security/secretBox.js";
import type { StoreContext } from "../store/common.js";
import { type ResealCounts, resealEverything } from "../store/masterKeyRotation.js";

/** What a rotation did: the key ids before and after, and what it re-sealed. */
export interface RotationResult {
  from: string;
  to: string;
  resealed: ResealCounts;
}

/**
 * Sweeps after the main transaction: a request that sealed a value under the old key just
 * before the switch may commit it after the transaction read its table. Each sweep finds
 * only such late values; more than a few in a row means something keeps writing under a
 * key this node does not seal with (another node that was not restarted with the new key).
 */
const MAX_SWEEPS = 3;

/**
 * Rotates the master key of a running server (ADR 0046), in this order so that a crash
 * anywhere leaves every value readable:
 *
 * 1. a new key is written to <data-dir>/master.key.next;
 * 2. this process's SecretBox seals under it from now on and opens under either key, so
 *    requests served meanwhile keep working;
 * 3. one transaction re-seals every value and re-chains the audit log under it (sweeps
 *    pick up values sealed under the old key by requests already under way);
 * 4. master.key.next replaces master.key, and the box forgets the old key.
 *
 * A crash after 1 leaves both files: the next start loads both and finishes (`resume`).
 */
export class MasterKeyRotation {
  private running = false;

  constructor(
    private readonly context: StoreContext,
    private readonly dataDir: string,
  ) {}

  async rotate(): Promise<RotationResult> {
    if (this.running) throw new ConflictError("a master key rotation is already running on this server; wait for it");
    this.running = true;
    try {
      const from = this.context.secrets.keyId;
      // A rotation of this process that failed in its transaction: its key is still held; finish it.
      const pending = await readPendingMasterKey(this.dataDir);
      if (pending && this.context.secrets.keyIds.includes(masterKeyId(pending))) {
        const to = this.context.secrets.beginRotation(pending);
        return { from, to, resealed: await this.finish() };
      }
      let next: Buffer;
      try {
        next = await createPendingMasterKey(this.dataDir);
      } catch (error) {
        throw new ConflictError((error as Error).message);
      }
      const to = this.context.secrets.beginRotation(next);
      const resealed = await this.finish();
      return { from, to, resealed };
    } finally {
      this.running = false;
    }
  }

  /** At start: a rotation that was interrupted is finished; undefined when there was none. */
  async resume(): Promise<RotationResult | undefined> {
    const next = await readPendingMasterKey(this.dataDir);
    if (!next) return undefined;
    const from = this.context.secrets.keyId;
    const to = this.context.secrets.beginRotation(next);
    return { from, to, resealed: await this.finish() };
  }

  /**
   * Steps 3 and 4. When the transaction fails (a tampered audit log, the database gone),
   * the box keeps both keys and master.key.next stays: values sealed under the new key
   * meanwhile stay readable, and a retry or the next start finishes the rotation.
   */
  private async finish(): Promise<ResealCounts> {
    const total = await resealEverything(this.context);
    for (let sweep = 0; sweep < MAX_SWEEPS; sweep += 1) {
      const late = await resealEverything(this.context);
      const moved = Object.values(late.values).reduce((sum, count) => sum + count, 0) + late.auditEntries;
      for (const [name, count] of Object.entries(late.values)) total.values[name] = (total.values[name] ?? 0) + count;
      if (moved === 0) break;
    }
    await commitPendingMasterKey(this.dataDir);
    this.context.secrets.finishRotation();
    return total;
  }
}
