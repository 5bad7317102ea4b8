import { createInterface } from "node:readline/promises";
import type { Command } from "commander";
import { segment } from "./client.js";
import { UsageError } from "./errors.js";
import { printJson, writeOutput } from "./output.js";
import type { CliContext } from "./resourceGroup.js";

interface KeyState {
  address: string;
  presented: { fingerprint: string; type: string } | null;
  trusted: string | null;
}

interface TrustAnswer {
  target: string;
  host: KeyState;
  jumpHost: KeyState | null;
  changed: boolean;
}

/** Whether this host's key needs the person's word: it presents one that is not the trusted one. */
const needsTrust = (state: KeyState | null | undefined): state is KeyState & { presented: { fingerprint: string } } =>
  state?.presented != null && state.presented.fingerprint !== state.trusted;

function describe(what: string, state: KeyState): string {
  const presented = state.presented ? `${state.presented.type} ${state.presented.fingerprint}` : "(not reached)";
  const trusted =
    state.trusted === null
      ? "not trusted yet"
      : state.trusted === state.presented?.fingerprint
        ? "trusted"
        : `CHANGED: Ferry trusts ${state.trusted}`;
  return `${what} ${state.address} presents ${presented}: ${trusted}`;
}

/**
 * `ferry target trust NAME`: shows the SSH host key (and the jump host's) the target
 * presents and stores it once confirmed — by --fingerprint (which must match what the host
 * presents now), or by answering yes on a terminal after comparing it with the host's own.
 */
export function addTrustCommand(group: Command, context: CliContext): void {
  group
    .command("trust")
    .description("show an ssh target's host key and trust it once you have compared it with the host's own")
    .argument("<ref>", "id or slug")
    .option("--fingerprint <SHA256:…>", "trust this host key; it must be the one the host presents now")
    .option("--jump-host-fingerprint <SHA256:…>", "trust this key of the jump host; it must be the one it presents now")
    .option("--json", "print JSON")
    .action(async (reference: string, options: Record<string, unknown>) => {
      const client = await context.client();
      const path = `/api/v1/targets/${segment(reference)}/trust`;
      const send = (body: Record<string, string>) => client.request<TrustAnswer>("POST", path, body);
      const given = {
        ...(typeof options.fingerprint === "string" && { fingerprint: options.fingerprint }),
        ...(typeof options.jumpHostFingerprint === "string" && { jumpHostFingerprint: options.jumpHostFingerprint }),
      };
      let answer = await send(given);
      // On a terminal, each key not trusted yet is shown and stored once the person says yes.
      const interactive = process.stdin.isTTY && process.stdout.isTTY && !options.json;
      while (interactive) {
        const confirmed: Record<string, string> = { ...given };
        if (needsTrust(answer.jumpHost)) {
          if (!(await confirm(describe("the jump host", answer.jumpHost)))) break;
          confirmed.jumpHostFingerprint = answer.jumpHost.presented.fingerprint;
        } else if (needsTrust(answer.host)) {
          if (!(await confirm(describe("the host", answer.host)))) break;
          confirmed.fingerprint = answer.host.presented.fingerprint;
        } else break;
        Object.assign(given, confirmed);
        answer = await send(confirmed);
      }
      if (options.json) {
        printJson(answer);
        return;
      }
      if (answer.jumpHost) writeOutput(`${describe("jump host", answer.jumpHost)}\n`);
      writeOutput(`${describe("host", answer.host)}\n`);
      const pending = [answer.jumpHost, answer.host].filter((state) => needsTrust(state) || state?.presented === null);
      if (pending.length > 0) {
        const flags = [
          ...(needsTrust(answer.jumpHost) ? [`--jump-host-fingerprint ${answer.jumpHost.presented.fingerprint}`] : []),
          ...(needsTrust(answer.host) ? [`--fingerprint ${answer.host.presented.fingerprint}`] : []),
        ];
        throw new UsageError(
          flags.length > 0
            ? `not trusted. Compare the key with the host's own (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host), then run: ferry target trust ${reference} ${flags.join(" ")}`
            : `not trusted: trust the jump host's key first, then run ferry target trust ${reference} again`,
        );
      }
      writeOutput(answer.changed ? "trusted\n" : "already trusted: nothing changed\n");
    });
}

async function confirm(question: string): Promise<boolean> {
  const prompt = createInterface({ input: process.stdin, output: process.stdout });
  try {
    const reply = await prompt.question(
      `${question}\nHave you compared it with the host's own key (ssh-keygen -lf on the host)? Trust it? [yes/no] `,
    );
    return reply.trim().toLowerCase() === "yes";
  } finally {
    prompt.close();
  }
}
