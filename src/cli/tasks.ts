import { type Command, Option } from "commander";
import { isTerminal, type Task, type TaskLogLine, type TaskState, taskStates } from "../domain/tasks.js";
import { segment } from "./client.js";
import { type Column, printFields, printJson, printTable, writeError, writeOutput } from "./output.js";
import type { CliContext } from "./resourceGroup.js";
import { followTaskLog, formatLogLine, type LogPage } from "./wait.js";

/** The answers a waiting task may accept (the server says which one it waits for). */
const decisions = {
  approve: "approve what the task is waiting on, so it goes on",
  reject: "reject what the task is waiting on, so it fails",
  retry: "run the failed step again",
  skip: "skip the failed step and go on",
  exclude: "leave the target the step failed on out of the rest of the deployment, and go on",
  abort: "stop the task after a failed step",
} as const;

const columns: Column<Task>[] = [
  ["id", (task) => task.id],
  ["state", (task) => task.state],
  ["title", (task) => task.title],
  ["created", (task) => task.createdAt],
  ["by", (task) => task.createdBy],
];

function taskFields(task: Task): [string, string][] {
  return [
    ["id", task.id],
    ["kind", task.kind],
    ["title", task.title],
    ["state", task.state + (task.cancelRequested && !isTerminal(task.state) ? " (cancel requested)" : "")],
    ["error", task.error ?? "-"],
    ["project", task.project ?? "-"],
    ["environment", task.environment ?? "-"],
    ["created by", task.createdBy],
    ["created at", task.createdAt],
    ["started at", task.startedAt ?? "-"],
    ["finished at", task.finishedAt ?? "-"],
    ["log lines", String(task.logLines)],
    ["result", task.result === null || task.result === undefined ? "-" : JSON.stringify(task.result)],
  ];
}

const taskPath = (id: string, rest = "") => `/api/v1/tasks/${segment(id)}${rest}`;

const printLine = (line: TaskLogLine) => writeOutput(`${formatLogLine(line)}\n`);

export function addTaskCommands(program: Command, context: CliContext): void {
  const group = program.command("task").description("tasks: deployments and other work the server runs");

  group
    .command("list")
    .description("list tasks, newest first")
    .addOption(new Option("--state <state>", "only tasks in this state").choices(taskStates))
    .option("--json", "print JSON (an array)")
    .action(async (options: { state?: TaskState; json?: boolean }) => {
      const client = await context.client();
      const query = options.state ? `?state=${options.state}` : "";
      const tasks = await client.getAll<Task>(`/api/v1/tasks${query}`);
      if (options.json) printJson(tasks);
      else printTable(tasks, columns);
    });

  group
    .command("show")
    .description("show one task")
    .argument("<id>", "task id")
    .option("--json", "print JSON")
    .action(async (id: string, options: { json?: boolean }) => {
      const client = await context.client();
      const task = await client.get<Task>(taskPath(id));
      if (options.json) printJson(task);
      else printFields(taskFields(task));
    });

  group
    .command("logs")
    .description("print a task's log as HH:MM:SS [step] text")
    .argument("<id>", "task id")
    .option("--follow", "keep printing new lines until the task ends")
    .action(async (id: string, options: { follow?: boolean }) => {
      const client = await context.client();
      if (options.follow) {
        const state = await followTaskLog(client, id, printLine);
        writeError(`task ${id} ${state}\n`);
        return;
      }
      for (let after = 0; ; ) {
        const page = await client.get<LogPage>(taskPath(id, `/log?after=${after}`));
        for (const line of page.lines) printLine(line);
        // The server caps a page in lines and in bytes; `next` says whether more are stored.
        if (page.next === null) {
          if (!isTerminal(page.state)) writeError(`task ${id} is ${page.state}; add --follow to keep reading\n`);
          return;
        }
        after = page.next;
      }
    });

  group
    .command("cancel")
    .description("cancel a task (a running one stops its step and cleans up)")
    .argument("<id>", "task id")
    .action(async (id: string) => {
      const client = await context.client();
      const task = await client.request<Task>("POST", taskPath(id, "/cancel"));
      writeOutput(`task ${id}: cancel requested (now ${task.state})\n`);
    });

  for (const [decision, description] of Object.entries(decisions)) {
    group
      .command(decision)
      .description(description)
      .argument("<id>", "task id")
      .option("--comment <text>", "why, for the task's history")
      .action(async (id: string, options: { comment?: string }) => {
        const client = await context.client();
        await client.request("POST", taskPath(id, "/decisions"), {
          decision,
          ...(options.comment !== undefined && { comment: options.comment }),
        });
        writeOutput(`task ${id}: ${decision} recorded\n`);
      });
  }
}
