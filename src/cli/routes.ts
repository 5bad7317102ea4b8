import { readFile } from "node:fs/promises";
import { type Command, InvalidArgumentError } from "commander";
import { segment } from "./client.js";
import { UsageError } from "./errors.js";
import { printJson, writeOutput } from "./output.js";
import type { CliContext } from "./resourceGroup.js";

interface ModeAnswer {
  target: string;
  route: string;
  router: string;
  mode: "maintenance" | "paused" | null;
}

interface RouteOptions {
  target: string;
  page?: string;
  timeout?: number;
  json?: boolean;
}

/** 1–600 seconds. */
function parseTimeout(value: string): number {
  const seconds = Number(value);
  if (!/^\d+$/.test(value) || seconds < 1 || seconds > 600) {
    throw new InvalidArgumentError("--timeout is how long a request may be held: 1 to 600 seconds");
  }
  return seconds;
}

/**
 * `ferry route maintenance|pause|resume <route> --target T`: a route's mode on a target's
 * router, through the server (PUT|DELETE /api/v1/targets/{t}/routes/{r}/mode), whichever
 * router the target's host runs and however the server reaches it. `ferry proxy
 * maintenance|pause|resume` does the same on the host itself, to its own proxy only.
 */
export function addRouteCommands(program: Command, context: CliContext): void {
  const group = program
    .command("route")
    .description("put a route of a target's router in maintenance, pause it, or serve it again");
  const withTarget = (command: Command) =>
    command
      .requiredOption("--target <ref>", "the target whose router serves the route (id or slug)")
      .option("--json", "print JSON");
  const send = async (route: string, options: RouteOptions, body: Record<string, unknown> | null) => {
    const client = await context.client();
    const path = `/api/v1/targets/${segment(options.target)}/routes/${segment(route)}/mode`;
    const answer =
      body === null
        ? await client.request<ModeAnswer>("DELETE", path)
        : await client.request<ModeAnswer>("PUT", path, body);
    if (options.json) printJson(answer);
    return answer;
  };
  withTarget(
    group
      .command("maintenance <route>")
      .description(
        "answer every request of the route with 503 (a page, or a problem document) until `ferry route resume`",
      )
      .option("--page <file>", "an HTML file to serve (builtin router: at most 32 KiB; HAProxy: 8 KiB)"),
  ).action(async (route: string, options: RouteOptions) => {
    let page: string | undefined;
    if (options.page !== undefined) {
      try {
        page = await readFile(options.page, "utf8");
      } catch (error) {
        throw new UsageError(
          `--page ${options.page}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
        );
      }
    }
    const answer = await send(route, options, { mode: "maintenance", ...(page !== undefined && { page }) });
    if (!options.json) {
      writeOutput(
        `route ${answer.route} on target ${answer.target} (${answer.router}): in maintenance (503)${options.page ? ` with ${options.page}` : ""}\n`,
      );
    }
  });
  withTarget(
    group
      .command("pause <route>")
      .description("hold the route's requests (while something is swapped) until `ferry route resume` or the timeout")
      .option("--timeout <seconds>", "how long a request may be held before it gets a 503 (1–600)", parseTimeout, 30),
  ).action(async (route: string, options: RouteOptions) => {
    const timeoutSeconds = options.timeout ?? 30;
    const answer = await send(route, options, { mode: "paused", timeoutSeconds });
    if (!options.json) {
      writeOutput(
        `route ${answer.route} on target ${answer.target} (${answer.router}): paused; requests are held for up to ${timeoutSeconds} s\n`,
      );
    }
  });
  withTarget(
    group
      .command("resume <route>")
      .description("serve a route in maintenance or paused again; held requests go on to the live colour"),
  ).action(async (route: string, options: RouteOptions) => {
    const answer = await send(route, options, null);
    if (!options.json) writeOutput(`route ${answer.route} on target ${answer.target} (${answer.router}): serving\n`);
  });
}
