import { writeFileSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

const SUFFIX = ".pgid";

/** Notes a process group a task started, in the task's work directory (synchronously: right after spawn). */
export function recordProcessGroup(workDirectory: string, processGroupId: number): void {
  writeFileSync(join(workDirectory, `${processGroupId}${SUFFIX}`), String(processGroupId), { mode: 0o600 });
}

/**
 * Kills the process groups a task started, as recorded in its work directory (the caller
 * removes the directory). Only a group whose leader still carries the task's FERRY_TASK_ID is
 * killed: after a long outage the id may belong to an unrelated process by now.
 */
export async function killTaskProcesses(workDirectory: string, taskId: string): Promise<number> {
  let killed = 0;
  const entries = await readdir(workDirectory).catch(() => [] as string[]);
  for (const entry of entries.filter((name) => name.endsWith(SUFFIX))) {
    const processGroupId = Number(entry.slice(0, -SUFFIX.length));
    if (!Number.isInteger(processGroupId) || processGroupId <= 1) continue;
    const environment = await readFile(`/proc/${processGroupId}/environ`, "latin1").catch(() => "");
    if (!environment.split("\0").includes(`FERRY_TASK_ID=${taskId}`)) continue;
    try {
      process.kill(-processGroupId, "SIGKILL");
      killed++;
    } catch {
      // Gone meanwhile.
    }
  }
  // A crash between spawn and writing the group file leaves no record: also kill any
  // process that still carries the task's id (every script step sets FERRY_TASK_ID).
  for (const processId of await processesCarrying(`FERRY_TASK_ID=${taskId}`)) {
    try {
      process.kill(processId, "SIGKILL");
      killed++;
    } catch {
      // Gone meanwhile.
    }
  }
  return killed;
}

/** Ids of the processes whose environment holds exactly this NAME=value entry (Linux /proc). */
async function processesCarrying(entry: string): Promise<number[]> {
  const found: number[] = [];
  for (const name of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const environment = await readFile(`/proc/${name}/environ`, "latin1").catch(() => "");
    if (environment.split("\0").includes(entry)) found.push(Number(name));
  }
  return found;
}
