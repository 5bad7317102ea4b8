import { UsageError } from "./errors.js";

/**
 * Reads a secret from standard input (one value; a single trailing newline is dropped),
 * so it never appears in the command line, shell history or `ps`.
 */
export async function readSecretFromStdin(what: string): Promise<string> {
  if (process.stdin.isTTY) {
    throw new UsageError(`pipe the ${what} into standard input, e.g. printf %s "$SECRET" | ferry …`);
  }
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const value = Buffer.concat(chunks)
    .toString("utf8")
    .replace(/\r?\n$/, "");
  if (value === "") throw new UsageError(`standard input was empty; pipe the ${what} in`);
  return value;
}
