import type { Command } from "commander";
import { UsageError } from "./errors.js";

/** A router a remote target's host runs, driven by the server through the target's transport. */
const HOST_ROUTERS: readonly {
  command: string;
  router: string;
  answer: () => Promise<(request: string) => Promise<unknown>>;
}[] = [
  // src/traffic/remoteNginx.ts, ADR 0039
  {
    command: "nginx-router",
    router: "nginx",
    answer: async () => (await import("../traffic/nginxHost.js")).answerNginxHostRequest,
  },
  // src/traffic/remoteHaproxy.ts, ADR 0048
  {
    command: "haproxy-router",
    router: "HAProxy",
    answer: async () => (await import("../traffic/haproxyHost.js")).answerHaproxyHostRequest,
  },
];

/**
 * `ferry nginx-router` and `ferry haproxy-router`: one operation of a remote target's router.
 * Hidden: the server runs them, and nobody else needs to. The request comes on standard
 * input; the answer is one JSON line.
 */
export function addHostRouterCommands(program: Command): void {
  for (const { command, router, answer } of HOST_ROUTERS) {
    program
      .command(command, { hidden: true })
      .description(`run one operation of the ${router} router on this host (started by the server)`)
      .action(async () => {
        if (process.stdin.isTTY) throw new UsageError(`ferry ${command} reads its request from standard input`);
        const answerRequest = await answer();
        const chunks: Buffer[] = [];
        for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
        const answered = await answerRequest(Buffer.concat(chunks).toString("utf8"));
        process.stdout.write(`${JSON.stringify(answered)}\n`);
        // The router, when this started it, is daemonised in a session of its own: nothing else may keep this process.
        process.exit(0);
      });
  }
}
