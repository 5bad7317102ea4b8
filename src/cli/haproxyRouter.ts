import type { Command } from "commander";
import { UsageError } from "./errors.js";

/**
 * `ferry haproxy-router`: HAProxy as a remote target's router, driven by the server through the
 * target's transport (src/traffic/remoteHaproxy.ts, ADR 0048). Hidden: the server runs it, and
 * nobody else needs to. The request comes on standard input; the answer is one JSON line.
 */
export function addHaproxyRouterCommand(program: Command): void {
  program
    .command("haproxy-router", { hidden: true })
    .description("run one operation of the haproxy router on this host (started by the server)")
    .action(async () => {
      if (process.stdin.isTTY) throw new UsageError("ferry haproxy-router reads its request from standard input");
      const { answerHaproxyHostRequest } = await import("../traffic/haproxyHost.js");
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      const answer = await answerHaproxyHostRequest(Buffer.concat(chunks).toString("utf8"));
      process.stdout.write(`${JSON.stringify(answer)}\n`);
      // HAProxy, when this started it, is daemonised in a session of its own: nothing else may keep this process.
      process.exit(0);
    });
}
