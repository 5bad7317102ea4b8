import type { z } from "zod";
import type { Decision } from "../store/decisions.js";
import type { PendingCleanup } from "../store/pendingCleanups.js";
import type { TaskLog } from "./taskLog.js";

/** What a running task can see and do. Everything it starts must stop when `signal` aborts. */
export interface TaskContext {
  readonly taskId: string;
  /** Aborted when the task is cancelled, its claim is lost, or the engine stops. */
  readonly signal: AbortSignal;
  readonly log: TaskLog;
  /** Marks the task waiting (approval, guided failure) while `wait` runs, then running again. */
  whileWaiting<T>(wait: () => Promise<T>): Promise<T>;
  /**
   * Asks a person (approval, guided failure) and waits, in state "waiting", for one of the
   * allowed answers, given through the API by anyone — on any server node.
   */
  waitForDecision(question: DecisionQuestion): Promise<Decision>;
}

interface DecisionQuestion {
  kind: string;
  prompt: string;
  allowed: readonly string[];
  /** True: the person who started the task may not approve (separation of duties). */
  separateFromStarter?: boolean | undefined;
  /**
   * Withdraws the question when it aborts (the step no longer needs the answer: a canary's
   * figures passed its thresholds while it waited): the question is closed as "withdrawn",
   * with the abort reason's message as its comment, so nobody can answer it any more, and
   * the wait rejects with that reason. An answer given first wins.
   */
  withdraw?: AbortSignal | undefined;
}

/** Why a task ended without succeeding: the message goes to the task's error and log. */
export class TaskFailure extends Error {}

/**
 * A failure no one may override (a rejected approval): guided failure does not offer
 * retry or skip, and it fails the task even when the step is optional.
 */
export class FinalFailure extends TaskFailure {}

/**
 * One kind of task (deployment, runbook run, health check…): one file implementing this,
 * plus one line in the engine's registry.
 */
export interface TaskKind<P = unknown> {
  readonly kind: string;
  readonly payload: z.ZodType<P>;
  /** Does the work. Returns the task's result; throws TaskFailure (or anything) to fail. */
  run(context: TaskContext, payload: P): Promise<unknown>;
  /**
   * Removes what an unfinished run created (containers, processes, files), found by the
   * task id. Called after cancel and when a task of a dead server is interrupted.
   */
  cleanup?(taskId: string, payload: P, log: TaskLog): Promise<void>;
  /**
   * Retries the clean-up of one host that could not be reached when `cleanup` ran (recorded
   * in pending_cleanups); true when it is done. The engine calls it on its heartbeat.
   */
  retryCleanup?(pending: PendingCleanup, log: TaskLog): Promise<boolean>;
}
