import type { Command } from "commander";
import { UsageError } from "./errors.js";

/** A router a remote target's host runs, driven by the server through the target's transport. */
const HOST_ROUTERS = [
  // ADR 0039
  { command: "nginx-router", router: "nginx", driver: "nginx" },
  // ADR 0048
  { command: "haproxy-router", router: "HAProxy", driver: "haproxy" },
] as const;

/**
 * `ferry nginx-router` and `ferry haproxy-router`: one operation of a remote target's router.
 * Hidden: the server runs them, and nobody else needs to. The request comes on standard
 * input; the answer is one JSON line.
 */
export function addHostRouterCommands(program: Command): void {
  // src/traffic/remoteRouter.ts sends the request, src/traffic/routerHost.ts answers it.
  for (const { command, router, driver } of HOST_ROUTERS) {
    program
      .command(command, { hidden: true })
      .description(`run one operation of the ${router} router on this host (started by the server)`)
      .action(async () => {
        if (process.stdin.isTTY) throw new UsageError(`ferry ${command} reads its request from standard input`);
        const { answerHostRouterRequest } = await import("../traffic/routerHost.js");
        const chunks: Buffer[] = [];
        for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
        const answered = await answerHostRouterRequest(driver, Buffer.concat(chunks).toString("utf8"));
        process.stdout.write(`${JSON.stringify(answered)}\n`);
        // The router, when this started it, is daemonised in a session of its own: nothing else may keep this process.
        process.exit(0);
      });
  }
}
