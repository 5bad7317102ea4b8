import { describe, expect, it } from "vitest";
import {
  AmbiguousScopeError,
  explainVariables,
  findAmbiguities,
  resolveVariables,
  type ScopeContext,
  type ScopedVariable,
  type VariableScope,
  withSystemVariables,
} from "./variableScoping.js";

function variable(name: string, value: string, scope: Partial<VariableScope> = {}, sensitive = false): ScopedVariable {
  return { name, value, sensitive, scope: { environments: [], roles: [], targets: [], ...scope } };
}

const webInProduction: ScopeContext = { environment: "prod", roles: ["web", "edge"], target: "web-1", step: "deploy" };

const resolvedValue = (candidates: ScopedVariable[], context: ScopeContext, name: string) =>
  resolveVariables(candidates, context).get(name)?.value;

describe("resolveVariables", () => {
  it("uses an unscoped value when nothing more specific applies", () => {
    const resolved = resolveVariables([variable("Port", "80"), variable("Secret", "s3", {}, true)], webInProduction);
    expect(resolved).toEqual(
      new Map([
        ["Port", { value: "80", sensitive: false }],
        ["Secret", { value: "s3", sensitive: true }],
      ]),
    );
  });

  it("applies precedence step > target > role > environment > unscoped", () => {
    const layers = [
      variable("Port", "project"),
      variable("Port", "environment", { environments: ["prod"] }),
      variable("Port", "role", { roles: ["web"] }),
      variable("Port", "target", { targets: ["web-1"] }),
      variable("Port", "step", { steps: ["deploy"] }),
    ];
    // Remove the winner each time: the next layer down must take over.
    for (const expected of ["step", "target", "role", "environment", "project"]) {
      expect(resolvedValue(layers, webInProduction, "Port")).toBe(expected);
      layers.splice(
        layers.findIndex((candidate) => candidate.value === expected),
        1,
      );
    }
    expect(resolvedValue(layers, webInProduction, "Port")).toBeUndefined();
  });

  it("skips values whose scope does not match every dimension it names", () => {
    const candidates = [
      variable("Port", "project"),
      variable("Port", "staging", { environments: ["staging"] }),
      variable("Port", "db role", { roles: ["db"] }),
      variable("Port", "other target", { targets: ["web-2"] }),
      variable("Port", "other step", { steps: ["migrate"] }),
      variable("Port", "prod db", { environments: ["prod"], roles: ["db"] }),
      variable("Port", "staging web-1", { environments: ["staging"], targets: ["web-1"] }),
    ];
    expect(resolvedValue(candidates, webInProduction, "Port")).toBe("project");
  });

  it("never applies a target- or step-scoped value to a context without a target or step", () => {
    const candidates = [
      variable("Port", "environment", { environments: ["prod"] }),
      variable("Port", "target", { targets: ["web-1"] }),
      variable("Port", "step", { steps: ["deploy"] }),
    ];
    expect(resolvedValue(candidates, { environment: "prod", roles: [] }, "Port")).toBe("environment");
  });

  it("matches a role scope when any of the target's roles is listed", () => {
    const candidates = [variable("Port", "project"), variable("Port", "edge", { roles: ["db", "edge"] })];
    expect(resolvedValue(candidates, webInProduction, "Port")).toBe("edge");
    expect(resolvedValue(candidates, { environment: "prod", roles: ["db"] }, "Port")).toBe("edge");
    expect(resolvedValue(candidates, { environment: "prod", roles: ["worker"] }, "Port")).toBe("project");
  });

  it("breaks a tie on the most specific dimension by the number of dimensions", () => {
    const candidates = [
      variable("Port", "role", { roles: ["web"] }),
      variable("Port", "role in prod", { roles: ["web"], environments: ["prod"] }),
      variable("Port", "environment", { environments: ["prod"] }),
    ];
    expect(resolvedValue(candidates, webInProduction, "Port")).toBe("role in prod");
    // A single more specific dimension still beats several less specific ones.
    candidates.push(variable("Port", "target", { targets: ["web-1"] }));
    expect(resolvedValue(candidates, webInProduction, "Port")).toBe("target");
  });

  it("resolves each name on its own", () => {
    const candidates = [
      variable("Port", "80"),
      variable("Host", "prod-host", { environments: ["prod"] }),
      variable("Host", "any-host"),
    ];
    const resolved = resolveVariables(candidates, webInProduction);
    expect([...resolved].map(([name, { value }]) => `${name}=${value}`)).toEqual(["Port=80", "Host=prod-host"]);
  });

  it("refuses equally specific values, naming the variable and the scopes", () => {
    const candidates = [
      variable("Port", "8080", { roles: ["web"] }),
      variable("Port", "443", { roles: ["edge"] }),
      variable("Host", "h", { environments: ["prod"] }),
      variable("Host", "h2", { environments: ["prod", "staging"] }),
      variable("Fine", "ok"),
    ];
    expect(() => resolveVariables(candidates, webInProduction)).toThrow(AmbiguousScopeError);
    try {
      resolveVariables(candidates, webInProduction);
    } catch (error) {
      if (!(error instanceof AmbiguousScopeError)) throw error;
      expect(error.message).toContain("variable 'Port' has 2 values whose scopes are ambiguous here");
      expect(error.message).toContain("roles web / roles edge");
      expect(error.message).toContain("variable 'Host'");
      expect(error.message).toContain("environments prod / environments prod, staging");
      expect(error.ambiguities.map((ambiguity) => ambiguity.name)).toEqual(["Port", "Host"]);
    }
  });

  it("is not ambiguous when a more specific value wins over the tied ones", () => {
    const candidates = [
      variable("Port", "8080", { roles: ["web"] }),
      variable("Port", "443", { roles: ["edge"] }),
      variable("Port", "9000", { targets: ["web-1"] }),
    ];
    expect(resolvedValue(candidates, webInProduction, "Port")).toBe("9000");
  });
});

describe("findAmbiguities", () => {
  it("lists the tied values per name for a context, and nothing when one wins", () => {
    const web = variable("Port", "8080", { roles: ["web"] });
    const edge = variable("Port", "443", { roles: ["edge"] });
    expect(findAmbiguities([web, edge], webInProduction)).toEqual([{ name: "Port", candidates: [web, edge] }]);
    // A target with only one of the roles sees no tie.
    expect(findAmbiguities([web, edge], { environment: "prod", roles: ["web"] })).toEqual([]);
  });

  it("counts two unscoped values of one name as ambiguous", () => {
    const first = variable("Port", "1");
    const second = variable("Port", "2");
    expect(findAmbiguities([first, second], webInProduction)).toEqual([{ name: "Port", candidates: [first, second] }]);
  });
});

describe("withSystemVariables", () => {
  const system = { releaseNumber: "1.4.2", environmentName: "Production", projectName: "Web", deploymentId: "d-17" };

  it("adds the Ferry.* variables as plain values", () => {
    const merged = withSystemVariables(new Map([["Port", { value: "80", sensitive: false }]]), system);
    expect(Object.fromEntries([...merged].map(([name, { value }]) => [name, value]))).toEqual({
      Port: "80",
      "Ferry.Release.Number": "1.4.2",
      "Ferry.Environment.Name": "Production",
      "Ferry.Project.Name": "Web",
      "Ferry.Deployment.Id": "d-17",
    });
    expect(merged.get("Ferry.Release.Number")?.sensitive).toBe(false);
  });

  it("includes the optional values only when given", () => {
    const merged = withSystemVariables(new Map(), { ...system, targetName: "web-1", taskId: "t-9" });
    expect(merged.get("Ferry.Target.Name")?.value).toBe("web-1");
    expect(merged.get("Ferry.Task.Id")?.value).toBe("t-9");
    expect(merged.has("Ferry.Project.Slug")).toBe(false);
  });

  it("overrides a user value of the same name and leaves the input map alone", () => {
    const user = new Map([["Ferry.Release.Number", { value: "spoofed", sensitive: true }]]);
    const merged = withSystemVariables(user, system);
    expect(merged.get("Ferry.Release.Number")).toEqual({ value: "1.4.2", sensitive: false });
    expect(user.get("Ferry.Release.Number")?.value).toBe("spoofed");
  });
});

describe("explainVariables", () => {
  const verdicts = (candidates: ScopedVariable[], context: ScopeContext, name: string) =>
    explainVariables(candidates, context)
      .get(name)
      ?.map((item) => `${item.candidate.value}: ${item.verdict} (${item.rank})`);

  it("agrees with resolveVariables on the winner, and says why each other value lost", () => {
    const candidates = [
      variable("Where", "project"),
      variable("Where", "environment", { environments: ["prod"] }),
      variable("Where", "role", { roles: ["web"] }),
      variable("Where", "other target", { targets: ["web-2"] }),
      variable("Where", "target", { targets: ["web-1"] }),
    ];
    expect(verdicts(candidates, webInProduction, "Where")).toEqual([
      "project: outranked (project)",
      "environment: outranked (environment)",
      "role: outranked (role)",
      "other target: not applicable (target)",
      "target: won (target)",
    ]);
    expect(resolvedValue(candidates, webInProduction, "Where")).toBe("target");
    const reasons = explainVariables(candidates, webInProduction).get("Where") ?? [];
    expect(reasons[3]?.reason).toBe("scoped to other targets");
    expect(reasons[2]?.reason).toBe(
      "applies, but a target-scoped value is more specific than this role-scoped one (step > target > role > environment > project)",
    );
  });

  it("marks equally specific winners as tied, where resolveVariables refuses to choose", () => {
    const candidates = [variable("Port", "80", { roles: ["web"] }), variable("Port", "81", { roles: ["edge"] })];
    expect(verdicts(candidates, webInProduction, "Port")).toEqual(["80: tied (role)", "81: tied (role)"]);
    expect(() => resolveVariables(candidates, webInProduction)).toThrow(AmbiguousScopeError);
  });

  it("says a role-scoped value does not apply where no target is in question", () => {
    const explained = explainVariables([variable("Port", "80", { roles: ["web"] })], {
      environment: "prod",
      roles: [],
    });
    expect(explained.get("Port")?.[0]?.reason).toBe("scoped to target roles, and no target is in question here");
  });
});

describe("variable sets (ADR 0047)", () => {
  const inSet = (value: ScopedVariable, slug: string, position: number): ScopedVariable => ({
    ...value,
    set: { slug, position },
  });

  it("ranks scope first: a set's environment-scoped value beats the project's unscoped one", () => {
    const candidates = [
      variable("Port", "project"),
      inSet(variable("Port", "set", { environments: ["prod"] }), "a", 0),
    ];
    expect(resolvedValue(candidates, webInProduction, "Port")).toBe("set");
    expect(resolvedValue(candidates, { environment: "dev", roles: [] }, "Port")).toBe("project");
  });

  it("on equal scope, the project's own value beats every set's, and an earlier set beats a later one", () => {
    const project = variable("Port", "project", { roles: ["web"] });
    const first = inSet(variable("Port", "first", { roles: ["web"] }), "first", 0);
    const second = inSet(variable("Port", "second", { roles: ["web"] }), "second", 1);
    // Whatever order the candidates come in: the answer depends only on scope and source.
    for (const candidates of [
      [project, first, second],
      [second, first, project],
    ]) {
      expect(resolvedValue(candidates, webInProduction, "Port")).toBe("project");
    }
    for (const candidates of [
      [first, second],
      [second, first],
    ]) {
      expect(resolvedValue(candidates, webInProduction, "Port")).toBe("first");
      expect(findAmbiguities(candidates, webInProduction)).toEqual([]);
    }
  });

  it("still refuses two equally specific values of one set", () => {
    const candidates = [
      inSet(variable("Port", "web", { roles: ["web"] }), "a", 0),
      inSet(variable("Port", "edge", { roles: ["edge"] }), "a", 0),
    ];
    expect(() => resolveVariables(candidates, webInProduction)).toThrow(/in variable set 'a'/);
  });

  it("explains why a set's value lost: to the project's own, or to an earlier set", () => {
    const project = variable("Port", "project");
    const first = inSet(variable("Port", "first"), "first", 0);
    const second = inSet(variable("Port", "second"), "second", 1);
    const explained = explainVariables([second, first, project], webInProduction).get("Port") ?? [];
    const reasonOf = (value: string) => explained.find((item) => item.candidate.value === value);
    expect(reasonOf("project")?.verdict).toBe("won");
    expect(reasonOf("first")?.verdict).toBe("outranked");
    expect(reasonOf("first")?.reason).toContain("the project's own value beats variable set 'first' (included #1)");
    expect(reasonOf("second")?.reason).toContain("the project's own value beats variable set 'second' (included #2)");
    const withoutProject = explainVariables([second, first], webInProduction).get("Port") ?? [];
    expect(withoutProject.find((item) => item.candidate.value === "second")?.reason).toContain(
      "variable set 'first' (included #1) beats variable set 'second' (included #2)",
    );
  });
});
