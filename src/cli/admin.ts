import { once } from "node:events";
import { type Command, InvalidArgumentError } from "commander";
import type { AuditVerification } from "../domain/audit.js";
import { OperationError } from "./errors.js";
import { printJson, writeOutput } from "./output.js";
import type { CliContext } from "./resourceGroup.js";
import { addUserCommands } from "./users.js";

function parseSeq(value: string): number {
  if (!/^\d{1,15}$/.test(value)) throw new InvalidArgumentError("expected an entry's seq (0 or more)");
  return Number(value);
}

/** Writes to standard output, waiting while a slow reader (a pipe) has not taken the last chunk. */
async function writeOut(text: string | Uint8Array): Promise<void> {
  if (!process.stdout.write(text)) await once(process.stdout, "drain");
}

export function addAdminCommands(program: Command, context: CliContext): void {
  const group = program.command("admin").description("administration: the audit log, users, the master key");
  addUserCommands(group, context);

  group
    .command("verify-audit")
    .description(
      "re-compute the audit log's hash chain on the server; exits 1 naming the first entry found tampered with",
    )
    .option("--json", "print the server's answer as JSON")
    .action(async (options: { json?: boolean }) => {
      const client = await context.client();
      const result = await client.get<AuditVerification>("/api/v1/audit/verify");
      if (options.json) printJson(result);
      const bad = result.firstBad;
      if (!result.ok || bad) {
        throw new OperationError(
          `the audit log fails verification at entry ${bad?.seq ?? "?"}${bad?.id ? ` (${bad.id})` : ""}: ${bad?.reason ?? "no reason given"}`,
          [`${result.checked} ${result.checked === 1 ? "entry" : "entries"} before it verified`],
        );
      }
      if (!options.json) {
        const head = result.head ? `; newest entry ${result.head.seq}, hash ${result.head.hash}` : "";
        writeOutput(`audit log verified: ${result.checked} entries${head}\n`);
      }
    });

  group
    .command("rotate-master-key")
    .description(
      "re-encrypt every sensitive value under a new master key, in one transaction, on the running server (docs/security.md#master-key)",
    )
    .option("--json", "print the server's answer as JSON")
    .action(async (options: { json?: boolean }) => {
      const client = await context.client();
      const result = await client.request<{
        from: string;
        to: string;
        resealed: { values: Record<string, number>; auditEntries: number };
      }>("POST", "/api/v1/admin/master-key/rotate");
      if (options.json) {
        printJson(result);
        return;
      }
      const values = Object.values(result.resealed.values).reduce((sum, count) => sum + count, 0);
      writeOutput(
        `rotated the master key ${result.from} → ${result.to}: ${values} sensitive ${values === 1 ? "value" : "values"} re-encrypted, ${result.resealed.auditEntries} audit entries re-chained\n` +
          "back up the data directory's new master.key with the database: a backup of one without the other cannot be read\n",
      );
    });

  group
    .command("export-audit")
    .description("print the audit log as JSON lines, oldest first (ferry admin export-audit > audit.jsonl)")
    .option("--after <seq>", "only entries after this seq (the last line of an earlier export)", parseSeq, 0)
    .action(async (options: { after: number }) => {
      const client = await context.client();
      // One streamed response (GET /api/v1/audit/export): no time limit, however long the log.
      let response: Response;
      try {
        response = await fetch(new URL(`/api/v1/audit/export?after=${options.after}`, client.baseUrl), {
          headers: { accept: "application/x-ndjson, application/problem+json", ...client.authorization() },
        });
      } catch {
        throw new OperationError(`could not connect to the Ferry server at ${client.baseUrl}; is it running?`);
      }
      if (!response.ok || !response.body) {
        const problem = (await response.json().catch(() => ({}))) as { title?: string; detail?: string };
        throw new OperationError(
          `${problem.title ?? `HTTP ${response.status}`}: ${problem.detail ?? "the server refused the export"}`,
        );
      }
      try {
        for await (const chunk of response.body) await writeOut(chunk);
      } catch (error) {
        throw new OperationError(
          `the export stopped before its end (${(error as Error).message}); run it again with --after <seq of the last complete line>`,
        );
      }
    });
}
