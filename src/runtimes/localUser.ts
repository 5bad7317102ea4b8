import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, chown, lstat, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

/**
 * Whose rights the processes a step starts on the server's own host run with
 * (docs/security.md "Work on the server's host"). A process running with the server's
 * rights can read the data directory: the master key, the database, every secret.
 *
 * - `user`: a separate account (FERRY_RUN_AS, `nobody` by default when the server is root);
 * - `server`: the server's own account, chosen explicitly with FERRY_RUN_AS=server;
 * - `refused`: the server is not root (it cannot switch users) and nobody said
 *   FERRY_RUN_AS=server, so a local process is refused with `reason`.
 */
export type LocalUser =
  | { kind: "user"; name: string; uid: number; gid: number }
  | { kind: "server" }
  | { kind: "refused"; reason: string };

/** The account local work runs as, from FERRY_RUN_AS (a user name or uid, or "server"). */
export function resolveLocalUser(setting: string | undefined, serverUid = process.getuid?.() ?? 0): LocalUser {
  if (setting === "server") return { kind: "server" };
  const name = setting ?? (serverUid === 0 ? "nobody" : undefined);
  if (name === undefined) {
    return {
      kind: "refused",
      reason:
        "this server does not run as root, so it cannot start local processes as another user, and with its own rights they could read the data directory (master key, database); run the server as root (local work then runs as FERRY_RUN_AS, default nobody), set FERRY_RUN_AS=server to accept that local steps run with the server's rights, or run the step on a remote target",
    };
  }
  const uid = idOf(name, "-u");
  const gid = idOf(name, "-g");
  if (uid !== serverUid && serverUid !== 0) {
    throw new Error(
      `FERRY_RUN_AS=${name}: only a server running as root can start processes as another user; run the server as root or set FERRY_RUN_AS=server`,
    );
  }
  return { kind: "user", name, uid, gid };
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

/** The spawn options that make a child run as the local user (none for the server's own account). */
export function spawnCredentials(user: LocalUser | undefined): { uid?: number; gid?: number } {
  if (user?.kind === "refused") throw new Error(user.reason);
  return user?.kind === "user" ? { uid: user.uid, gid: user.gid } : {};
}

/** Hands a directory the server made for a step to the local user, who alone may use it. */
export async function giveToLocalUser(directory: string, user: LocalUser | undefined): Promise<void> {
  if (user?.kind !== "user") return;
  await chown(directory, user.uid, user.gid);
  await chmod(directory, 0o700);
}

/**
 * Where tasks keep their working files when the server runs local work as another user:
 * outside the data directory (0700: the local user must not reach it), one per data
 * directory so that several servers on one host never share one. The root and each task's
 * directory in it belong to the server (0711: the local user may pass through, not list or
 * write), so a step cannot tamper with the server's records of the processes it started.
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
