import { createHash, randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { LocalTransport } from "../../transports/local.js";
import type { Target } from "../../transports/types.js";
import type { StepRunContext } from "../types.js";
import { copyToTarget } from "./copyToTarget.js";

/**
 * The backup's copy to a second target, between two real local transports (real bash, cat,
 * head, sha256sum; the server's own account): a file of several MiB arrives byte for byte
 * under its final name, streamed, and a copy whose checksum does not match leaves nothing.
 */
describe("copyToTarget", () => {
  const root = mkdtempSync(join(tmpdir(), "ferry-copy-"));
  const destination = join(root, "vault");
  const lines: string[] = [];
  const target = (name: string): Target => {
    const workRoot = join(root, `${name}-work`);
    const transport = new LocalTransport(workRoot);
    return { id: name, slug: name, name, roles: [], transport } as unknown as Target;
  };
  const source = target("db-1");
  const vault = target("vault-1");
  const context = {
    taskId: "task_copytest",
    stepName: "backup",
    signal: new AbortController().signal,
    log: {
      info: (text: string) => lines.push(text),
      warn: (text: string) => lines.push(text),
      error: (text: string) => lines.push(text),
      writeCutLine: (_level: string, text: string) => lines.push(text),
      redact: (text: string) => text,
    },
    target: source,
  } as unknown as StepRunContext;
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it("copies a file of several MiB byte for byte, checked by sha256 on the destination", async () => {
    const bytes = randomBytes(9 * 1024 * 1024 + 12345);
    const file = join(root, "dump.sql.gz");
    writeFileSync(file, bytes);
    chmodSync(root, 0o755);
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    const copied = await copyToTarget(
      context,
      { path: file, name: "dump.sql.gz", bytes: bytes.length, sha256 },
      { target: vault, directory: destination },
      60,
    );
    expect(copied).toBe(join(destination, "dump.sql.gz"));
    expect(readFileSync(copied).equals(bytes)).toBe(true);
    expect(readdirSync(destination)).toEqual(["dump.sql.gz"]);
    expect(lines.join("\n")).toContain(`copied to vault-1:${copied} (sha256 ${sha256}, checked there)`);
  });

  it("leaves nothing when the copy's sha256 is not the file's", async () => {
    const file = join(root, "other.sql.gz");
    writeFileSync(file, randomBytes(1000));
    await expect(
      copyToTarget(
        context,
        { path: file, name: "other.sql.gz", bytes: 1000, sha256: "0".repeat(64) },
        { target: vault, directory: destination },
        60,
      ),
    ).rejects.toThrow(/sha256 is [0-9a-f]{64}, not 0{64}/);
    expect(readdirSync(destination)).toEqual(["dump.sql.gz"]);
  });
});
