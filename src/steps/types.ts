import type { z } from "zod";
import type { Step } from "../domain/process.js";
import type { StepArtifacts } from "../engine/artifacts.js";
import type { StepPackages } from "../engine/packages.js";
import type { RunScope } from "../engine/processRunner.js";
import type { StepLog } from "../engine/taskLog.js";
import type { TaskContext } from "../engine/types.js";
import type { RegistryClient } from "../feeds/registry.js";
import type { OutboundPolicy } from "../security/outboundGuard.js";
import type { Target } from "../transports/types.js";
import type { AllAtOnce } from "./blueGreen/allAtOnce.js";

/** What a step sees when it runs on one target. */
export interface StepRunContext {
  readonly taskId: string;
  readonly stepName: string;
  readonly signal: AbortSignal;
  /** The task's log; a lane of it (each line naming the target) when the step runs on several targets at once. */
  readonly log: StepLog;
  /** The deployment's variables for this step and target (sensitive values included, in clear). */
  readonly variables: ReadonlyMap<string, string>;
  /** Renders a `#{…}` template with those variables; a missing variable is an error naming it. */
  render(template: string): string;
  /** Labels every resource the step creates carries, so clean-up finds exactly what this run made. */
  readonly labels: Readonly<Record<string, string>>;
  /** Asks a person and waits for the answer (see TaskContext.waitForDecision). */
  readonly waitForDecision: TaskContext["waitForDecision"];
  /**
   * Credentials for pulling from a registry host ("registry.example.com:5000"), from the
   * project's feeds; undefined (or no function) means pull anonymously. Step configs never
   * hold registry secrets themselves.
   */
  readonly registryCredentials?: (registryHost: string) => Promise<{ username: string; password: string } | undefined>;
  /**
   * A client of the registry on that host ("registry.example.com:5000"), called from the
   * server with the credentials of the project's feed there (https and anonymous when no
   * feed is on that host), through the outbound guard.
   */
  registryClient(registryHost: string): Promise<RegistryClient>;
  /** What the process runs for (project, environment, release): names and labels derive from it. */
  readonly scope: RunScope;
  /** The host the step runs on, with its transport, runtimes and traffic router. */
  readonly target: Target;
  /**
   * What http-test and health-check requests whose address a variable chose may call
   * (FERRY_OUTBOUND_ALLOW; a blue/green colour's own address while it is checked).
   * Absent: the guard's defaults.
   */
  readonly outbound?: OutboundPolicy;
  /**
   * Attaches files to the task (ADR 0037): `attach({ name, fromTargetPath })` streams a file
   * of this step's target (read as the account the step's work runs as there) or `attach({
   * name, stream })` bytes the step makes, into the server's artifact storage, and resolves
   * with `{ id, name, sha256, size }` once they are stored. Listed and downloaded with `ferry
   * artifact list|get` and GET /api/v1/tasks/{task}/artifacts.
   */
  readonly artifacts: StepArtifacts;
  /** The package versions the run's release pins, and their bytes (ADR 0044): the `package` step and `process` with `package:`. */
  readonly packages: StepPackages;
  /** Set when the step runs on every target together (a blue/green `switch: allAtOnce`): where the targets meet. */
  readonly allAtOnce?: AllAtOnce;
  /**
   * Another target of the run's environment, by slug or name (a backup's second location):
   * a step reaches it only through its transport. Fails naming the environment's targets.
   */
  readonly environmentTarget?: (name: string) => Promise<Target>;
  /**
   * Set when the step runs inside an isolated test group (ADR 0045): what it starts joins the
   * group's network, gets the group's limits (unless it asks for lower ones) and carries the
   * group's labels.
   */
  readonly isolation?: Isolation;
  /**
   * Runs steps nested in this one (an isolated group's) on the same target, one after
   * another, with `variables` (the group's, e.g. Ferry.Isolated.Url, over this step's) and
   * each nested step's outputs for the ones after it. Resolves with the first required
   * step's failure (later steps run only by their condition), rejects on cancel.
   */
  /** The template text of the step's input file (StepKind.inputFile), when its config names one. */
  readonly inputFile?: string;
  readonly runNestedSteps?: (steps: readonly Step[], nested: NestedRun) => Promise<{ failed: string | undefined }>;
}

/** The resource limits every container of an isolated group gets. */
interface IsolationLimits {
  cpus: number;
  memoryMb: number;
  pids: number;
}

/** An isolated test group as the steps inside it see it. */
export interface Isolation {
  /** The group's own Docker network. */
  readonly network: string;
  readonly limits: IsolationLimits;
  /** The group's labels, over the step's own (ferry.isolated=<group>). */
  readonly labels: Readonly<Record<string, string>>;
  /** The prefix of the names of what the group starts ("ferry-iso-<task>-<group>"). */
  readonly namePrefix: string;
}

export interface NestedRun {
  variables: ReadonlyMap<string, string>;
  isolation: Isolation;
  /** What the nested steps' requests may call (the group's published addresses beside the policy's own). */
  outbound?: OutboundPolicy | undefined;
}

interface StepResult {
  /** Output variables, visible to later steps as Ferry.Step[<name>].Output.<key>. */
  outputs?: Record<string, string>;
}

/** One line of `ferry plan`: what the step would do, with sensitive values masked. */
interface PlannedAction {
  description: string;
}

/**
 * One kind of deployment step: one file implementing this, plus one line in
 * steps/registry.ts.
 */
export interface StepKind<C = unknown> {
  readonly kind: string;
  /** Validates the step's `config` in ferry.yml and the API. */
  readonly config: z.ZodType<C>;
  plan(config: C, render: (template: string) => string): PlannedAction[];
  run(context: StepRunContext, config: C): Promise<StepResult>;
  /**
   * True when this config runs on all its targets together, each waiting for the others at
   * the step's checkpoints (context.allAtOnce); absent or false: one target after another.
   */
  together?(config: C): boolean;
  /**
   * The kind deploys files, so a step of it may carry `files:` (ADR 0051): they are rendered
   * for the target and written before the step runs.
   */
  readonly deploysFiles?: boolean;
  /**
   * The one of the step's `files:` this config takes as its own input (the compose step's
   * `composeFile`): handed to the kind as context.inputFile instead of written to the target.
   */
  inputFile?(config: C): string | undefined;
  /** Checks that input file's captured text when the process is saved; pointers are into the file. */
  checkInputFile?(text: string): { pointer: string; detail: string }[];
  /**
   * The package this config unpacks: the step's `files:` are then rendered after it ran, in
   * (or relative to) the unpacked directory its `directory` output names.
   */
  unpackedPackage?(config: C): string;
}
