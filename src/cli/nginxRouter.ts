import type { Command } from "commander";
import { UsageError } from "./errors.js";

/**
 * `ferry nginx-router`: nginx as a remote target's router, driven by the server through the
 * target's transport (src/traffic/remoteNginx.ts, ADR 0039). Hidden: the server runs it, and
 * nobody else needs to. The request comes on standard input; the answer is one JSON line.
 */
export function addNginxRouterCommand(program: Command): void {
  program
    .command("nginx-router", { hidden: true })
    .description("run one operation of the nginx router on this host (started by the server)")
    .action(async () => {
      if (process.stdin.isTTY) throw new UsageError("ferry nginx-router reads its request from standard input");
      const { answerNginxHostRequest } = await import("../traffic/nginxHost.js");
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      const answer = await answerNginxHostRequest(Buffer.concat(chunks).toString("utf8"));
      process.stdout.write(`${JSON.stringify(answer)}\n`);
      // nginx, when this started it, is daemonised in a session of its own: nothing else may keep this process.
      process.exit(0);
    });
}
