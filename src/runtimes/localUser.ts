import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { chmod, chown, lstat, mkdir, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

/**
 * Whose rights the processes a step starts on the server's own host run with
 * (docs/security.md "Work on the server's host"). A process running with the server's
 * rights can read the data directory: the master key, the database, every secret. One
 * running with another task's rights can read that task's environment (/proc/PID/environ),
 * where its secrets are.
 *
 * - `perTask`: the default when the server is root — each task gets a uid (and gid) of its
 *   own from a range no account uses, so tasks cannot read or signal each other's processes;
 * - `user`: one named account for all local work (FERRY_RUN_AS=<name>): simpler to give
 *   file access to, but every task shares it, so a script can read a concurrent task's
 *   environment — choose it only when every process editor may see every environment's secrets;
 * - `server`: the server's own account, chosen explicitly with FERRY_RUN_AS=server;
 * - `refused`: the server is not root (it cannot switch users) and nobody said
 *   FERRY_RUN_AS=server, so a local process is refused with `reason`.
 */
export type LocalUser =
  | { kind: "perTask"; firstUid: number; count: number }
  | { kind: "user"; name: string; uid: number; gid: number }
  | { kind: "server" }
  | { kind: "refused"; reason: string };

/** An account a process runs as. */
export interface LocalAccount {
  uid: number;
  gid: number;
}

/**
 * Per-task uids by default: 10,000 from 2,000,000,000, far above any range Debian, systemd
 * (DynamicUser: 61184–65519) or subordinate-id ranges for user namespaces (from 100000)
 * hand out. FERRY_RUN_AS_UIDS=FIRST-LAST chooses another.
 */
const DEFAULT_PER_TASK_UIDS = { firstUid: 2_000_000_000, count: 10_000 };

/** The account local work runs as, from FERRY_RUN_AS (a user name or uid, or "server") and FERRY_RUN_AS_UIDS. */
export function resolveLocalUser(
  setting: string | undefined,
  serverUid = process.getuid?.() ?? 0,
  uidRange?: string,
): LocalUser {
  if (setting === "server") return { kind: "server" };
  if (setting === undefined) {
    if (serverUid === 0) return { kind: "perTask", ...(uidRange ? parseUidRange(uidRange) : DEFAULT_PER_TASK_UIDS) };
    return {
      kind: "refused",
      reason:
        "this server does not run as root, so it cannot start local processes as another user, and with its own rights they could read the data directory (master key, database); run the server as root (each task's local work then runs as a uid of its own), set FERRY_RUN_AS=server to accept that local steps run with the server's rights, or run the step on a remote target",
    };
  }
  const uid = idOf(setting, "-u");
  const gid = idOf(setting, "-g");
  if (uid !== serverUid && serverUid !== 0) {
    throw new Error(
      `FERRY_RUN_AS=${setting}: only a server running as root can start processes as another user; run the server as root or set FERRY_RUN_AS=server`,
    );
  }
  return { kind: "user", name: setting, uid, gid };
}

function parseUidRange(text: string): { firstUid: number; count: number } {
  const match = /^(\d{1,10})-(\d{1,10})$/.exec(text.trim());
  const first = Number(match?.[1]);
  const last = Number(match?.[2]);
  if (!match || first < 1000 || last < first || last >= 2 ** 32 - 2 || last - first > 1_000_000) {
    throw new Error(
      `FERRY_RUN_AS_UIDS=${text}: use FIRST-LAST, a range of uids no account on this host uses (at least 1000, at most a million of them), e.g. 2000000000-2000009999`,
    );
  }
  return { firstUid: first, count: last - first + 1 };
}

function idOf(name: string, flag: "-u" | "-g"): number {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/.test(name)) {
    throw new Error(`FERRY_RUN_AS=${name}: use a user name or uid, or 'server'`);
  }
  try {
    // `id` asks NSS, so accounts from LDAP or sssd resolve too; argv only, no shell.
    return Number(execFileSync("id", [flag, name], { encoding: "utf8", timeout: 5000 }).trim());
  } catch {
    throw new Error(`FERRY_RUN_AS=${name}: there is no such user on this host; create it or name another`);
  }
}

/** The spawn options that make a child run as the account (none for the server's own). */
export function spawnCredentials(account: LocalAccount | undefined): { uid?: number; gid?: number } {
  return account ? { uid: account.uid, gid: account.gid } : {};
}

/** Hands a directory the server made for a step to the account the step runs as, who alone may use it. */
export async function giveToAccount(directory: string, account: LocalAccount | undefined): Promise<void> {
  if (!account) return;
  await chown(directory, account.uid, account.gid);
  await chmod(directory, 0o700);
}

/** The uids processes run as now (real, effective, saved or filesystem; Linux /proc). */
export async function runningUids(): Promise<Set<number>> {
  const uids = new Set<number>();
  await eachProcessUids((_processId, processUids) => {
    for (const uid of processUids) uids.add(uid);
  });
  return uids;
}

/** Ids of the processes running as the uid (Linux /proc), but the caller. */
export async function processesOfUid(uid: number): Promise<number[]> {
  const found: number[] = [];
  await eachProcessUids((processId, uids) => {
    // "Uid:\treal\teffective\tsaved\tfs": any of them makes it the account's process.
    if (processId !== process.pid && uids.includes(uid)) found.push(processId);
  });
  return found;
}

/** Status files read between two turns of the event loop. */
const STATUS_FILES_PER_TURN = 64;

/**
 * Calls `each` with every process's uids (the Uid: line of /proc/PID/status). The files are
 * read synchronously, a few dozen per turn of the event loop: one read each costs far less
 * CPU than a promise's open, read and close through the thread pool (76 ms of wall time and
 * 29 ms of CPU per scan of 126 processes that way, measured; an agent scans twice per task,
 * and on the rolling-agents benchmark's one machine every agent scans every agent's processes).
 */
async function eachProcessUids(each: (processId: number, uids: number[]) => void): Promise<void> {
  const names = (await readdir("/proc").catch(() => [] as string[])).filter((name) => /^\d+$/.test(name));
  for (let start = 0; start < names.length; start += STATUS_FILES_PER_TURN) {
    if (start > 0) await new Promise((resolveTurn) => setImmediate(resolveTurn));
    for (const name of names.slice(start, start + STATUS_FILES_PER_TURN)) {
      let status: string;
      try {
        status = readFileSync(`/proc/${name}/status`, "latin1");
      } catch {
        continue; // Exited meanwhile.
      }
      const uids = /^Uid:\s+(.*)$/m.exec(status)?.[1]?.split(/\s+/).map(Number) ?? [];
      each(Number(name), uids);
    }
  }
}

/**
 * Where tasks keep their working files when the server runs local work as other accounts:
 * outside the data directory (0700: those accounts must not reach it), one per data
 * directory so that several servers on one host never share one. The root and each task's
 * directory in it belong to the server (0711: a step's account may pass through to its own
 * directory, not list or write), so a step cannot tamper with the server's records of the
 * processes it started.
 */
export async function prepareWorkRoot(dataDir: string, configured: string | undefined): Promise<string> {
  const root =
    configured ??
    join(tmpdir(), `ferry-work-${createHash("sha256").update(resolve(dataDir)).digest("hex").slice(0, 16)}`);
  await mkdir(root, { recursive: true, mode: 0o711 });
  // In a shared /tmp someone else could have made the directory first: use it only if it
  // is ours, a real directory, and writable by nobody else.
  const status = await lstat(root);
  const serverUid = process.getuid?.();
  if (!status.isDirectory() || (serverUid !== undefined && status.uid !== serverUid)) {
    throw new Error(
      `the work directory ${root} is not a directory owned by this server's user; remove it, or set FERRY_WORK_DIR to a directory of the server's own`,
    );
  }
  await chmod(root, 0o711);
  return root;
}
