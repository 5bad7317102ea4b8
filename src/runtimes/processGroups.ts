import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

const SUFFIX = ".pgid";

/** Notes a process group a task started, in the task's work directory. */
export async function recordProcessGroup(workDirectory: string, processGroupId: number): Promise<void> {
  await writeFile(join(workDirectory, `${processGroupId}${SUFFIX}`), String(processGroupId), { mode: 0o600 });
}

/**
 * Kills the process groups a task started, as recorded in its work directory, then removes
 * the directory. Only a group whose leader still carries the task's FERRY_TASK_ID is
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
  await rm(workDirectory, { recursive: true, force: true });
  return killed;
}
