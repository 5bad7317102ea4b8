import { describe, expect, it } from "vitest";
import { InputError } from "../../domain/errors.js";
import { validateSteps } from "../registry.js";
import { processStep } from "./processStep.js";

const step = (config: Record<string, unknown>) => ({
  name: "web",
  kind: "process",
  roles: [],
  environments: [],
  excludeEnvironments: [],
  condition: "success" as const,
  required: true,
  config,
});

/** The problems a process saved with this step would be refused with, as the API words them. */
function problems(config: Record<string, unknown>): string[] {
  try {
    validateSteps([step(config)]);
    return [];
  } catch (error) {
    if (!(error instanceof InputError)) throw error;
    return error.issues.map((issue) => `${issue.pointer}: ${issue.detail}`);
  }
}

describe("the process step's config", () => {
  it("fills in the defaults: recreate, restart always, 2 s settle, 10 s stop", () => {
    const [parsed] = validateSteps([step({ command: "node", args: ["server.js"] })]);
    expect(parsed?.config).toMatchObject({
      strategy: "recreate",
      restartPolicy: "always",
      settleSeconds: 2,
      stopTimeoutSeconds: 10,
      env: {},
      limits: {},
    });
  });

  it("needs a route for blue/green, and refuses a fixed port or name there", () => {
    expect(problems({ strategy: "blueGreen", command: "node" })).toEqual([
      expect.stringMatching(/^\/steps\/0\/config\/route: strategy blueGreen needs a route/),
    ]);
    expect(problems({ strategy: "blueGreen", command: "node", route: { host: "a.test" }, port: 8080 })).toEqual([
      expect.stringMatching(/\/config\/port: two colours run side by side/),
    ]);
    expect(problems({ strategy: "blueGreen", command: "node", route: { host: "a.test" }, name: "x" })).toEqual([
      expect.stringMatching(/\/config\/name: blue\/green colours are named/),
    ]);
    expect(problems({ command: "node", route: { host: "a.test" } })).toEqual([
      expect.stringMatching(/\/config\/route: route is only used with strategy: blueGreen/),
    ]);
  });

  it("refuses PORT in env, copyFrom with workingDirectory, and unknown fields", () => {
    expect(problems({ command: "node", env: { PORT: "1" } })).toEqual([expect.stringMatching(/PORT is set by Ferry/)]);
    expect(problems({ command: "node", copyFrom: "/srv/app", workingDirectory: "/srv" })).toEqual([
      expect.stringMatching(/\/config\/workingDirectory: give copyFrom .* or workingDirectory, not both/),
    ]);
    expect(problems({ command: "node", image: "x" })).toEqual([expect.stringMatching(/image/)]);
  });

  it("plans what it will run and how it switches", () => {
    const [parsed] = validateSteps([
      step({
        strategy: "blueGreen",
        command: "node",
        args: ["server.js"],
        limits: { openFiles: 1024 },
        route: { host: "#{Env}.shop.test" },
        blueGreen: { healthCheck: { path: "/health" }, bakeSeconds: 5 },
      }),
    ]);
    const render = (template: string) => template.replace("#{Env}", "prod");
    expect(processStep.plan(processStep.config.parse(parsed?.config), render)).toEqual([
      {
        description:
          "blue/green: start a new colour running node with 1 argument(s); open files 1024 on a free port, wait for /health to answer HTTP 200, switch prod.shop.test/ to it, drain the old colour (30 s), bake 5 s, retain 3",
      },
    ]);
  });
});
