import { TARGET_LABEL } from "../../engine/processRunner.js";
import { TaskFailure } from "../../engine/types.js";
import { isProcessName, type Processes } from "../../runtimes/process.js";
import { waitUntilSettled } from "../../runtimes/processColours.js";
import { unpackPackage } from "../package.js";
import type { StepRunContext } from "../types.js";
import type { ProcessRecreateConfig } from "./config.js";
import { describeProcessStart, renderProcessInputs } from "./shared.js";

/** Lines of the instance's log put into the task log when it fails to start. */
const FAILURE_LOG_LINES = 20;

/**
 * The recreate strategy of the process step: the previous instance of the same name is
 * stopped and removed, and the new one started in its place (a short gap).
 */
export async function runProcessRecreate(context: StepRunContext, config: ProcessRecreateConfig, processes: Processes) {
  const { log, signal } = context;
  const { spec } = renderProcessInputs(
    context,
    config,
    config.package === undefined ? undefined : await unpackPackage(context, config.package),
  );
  const { project, environment } = context.scope;
  // With the target's slug: two targets on one host must not replace each other's instance.
  const legacyName = `ferry-${project.slug}-${environment.slug}`;
  const name =
    config.name !== undefined
      ? context.render(config.name)
      : context.target.slug === undefined
        ? legacyName
        : `${legacyName}-${context.target.slug}`;
  if (!isProcessName(name)) {
    throw new TaskFailure(
      `'${name.slice(0, 200)}' is not a process instance name: use up to 128 letters, digits, '_', '.' and '-', starting with a letter or digit`,
    );
  }
  const previous = await processes.inspect(name, { signal });
  if (previous) {
    // Never remove an instance Ferry did not start for this project and environment.
    if (previous.labels["ferry.project"] !== project.slug || previous.labels["ferry.env"] !== environment.slug) {
      throw new TaskFailure(
        `a process instance named ${name} exists that Ferry did not start for this project and environment; remove it or give the step another name`,
      );
    }
    log.info(`stopping and removing the previous process ${name} (${previous.status})`);
    await processes.stopAndRemove(name, { stopTimeoutSeconds: config.stopTimeoutSeconds, signal });
  }
  if (config.name === undefined && name !== legacyName) {
    // What a step on this target left before default names carried the target: its previous instance.
    const legacy = await processes.inspect(legacyName, { signal });
    if (
      legacy &&
      legacy.labels["ferry.project"] === project.slug &&
      legacy.labels["ferry.env"] === environment.slug &&
      legacy.labels[TARGET_LABEL] === undefined
    ) {
      log.info(
        `stopping and removing ${legacyName}, named before instance names carried the target: ${name} replaces it`,
      );
      await processes.stopAndRemove(legacyName, { stopTimeoutSeconds: config.stopTimeoutSeconds, signal });
    }
  }
  log.info(describeProcessStart("process", name, spec));
  const started = await processes.createAndStart(
    { ...spec, name, labels: { ...context.labels, "ferry.step": context.stepName }, port: config.port ?? "auto" },
    { signal },
  );
  const settled = await waitUntilSettled(processes, name, config.settleSeconds * 1000, signal);
  if (settled.failure !== undefined) {
    const lines = await processes.logTail(name, FAILURE_LOG_LINES).catch(() => [] as string[]);
    log.warn(`last ${lines.length} log lines of process ${name}:`);
    for (const line of lines) log.warn(`  ${line}`);
    // With a restart policy a crashing process would come back forever: take it away.
    await processes.stopAndRemove(name, { stopTimeoutSeconds: 0 }).catch(() => false);
    throw new TaskFailure(`process ${name} ${settled.failure}; its last log lines are in the task log`);
  }
  log.info(`process ${name} is running${started.port !== undefined ? ` with PORT=${started.port}` : ""}`);
  return { outputs: { processName: name, ...(started.port !== undefined && { port: String(started.port) }) } };
}
