import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { InputError } from "../domain/errors.js";
import { ferryFileJsonSchema, parseFerryFile } from "./ferryFile.js";

/** The full example of docs/ferry-yml.md: the documentation cannot drift from the parser. */
function documentedExample(): string {
  const guide = readFileSync(new URL("../../docs/ferry-yml.md", import.meta.url), "utf8");
  const example = /```yaml\n(# ferry\.yml\n[\s\S]*?)```/.exec(guide)?.[1];
  if (!example) throw new Error("docs/ferry-yml.md has no full example");
  return example;
}

/** Parses text that must be refused; returns the error's message lines and issues. */
function problems(text: string) {
  try {
    parseFerryFile(text, "ferry.yml");
  } catch (error) {
    if (!(error instanceof InputError)) throw error;
    const [, ...lines] = error.message.split("\n");
    return { lines, issues: error.issues as unknown as readonly { pointer: string; line: number; column: number }[] };
  }
  throw new Error("the file was accepted");
}

const minimal = `project: { name: hello }
environments: [dev, prod]
lifecycle:
  name: hello
  phases:
    - environments: [dev]
    - environments: [prod]
`;

describe("parseFerryFile", () => {
  it("reads runbooks with their steps checked by kind and references checked against the file", () => {
    const config = parseFerryFile(
      `${minimal}runbooks:
  - name: Flush cache
    environments: [prod]
    publish: true
    parameters: [{ name: Region, type: choice, choices: [eu, us] }]
    steps: [{ name: flush, kind: script, config: { script: "echo flush" } }]
`,
      "ferry.yml",
    );
    expect(config.runbooks?.[0]).toMatchObject({
      slug: "flush-cache",
      publish: true,
      environments: ["prod"],
      parameters: [{ name: "Region", type: "choice", required: true, sensitive: false }],
      steps: [{ name: "flush", config: { interpreter: "bash", timeoutSeconds: 600 } }],
    });

    const refused = problems(`${minimal}runbooks:
  - name: Broken
    environments: [staging]
    parameters: [{ name: Secret, sensitive: true, default: hunter2 }]
    steps: [{ name: s, kind: script, config: { scrpt: x } }]
`);
    const pointers = refused.issues.map((issue) => issue.pointer);
    expect(pointers).toContain("/runbooks/0/environments/0");
    expect(pointers).toContain("/runbooks/0/parameters/0/default");
    expect(pointers.some((pointer) => pointer.startsWith("/runbooks/0/steps/0/config"))).toBe(true);
  });

  it("parses the documented full example into the typed config", () => {
    const config = parseFerryFile(documentedExample(), "ferry.yml");

    expect(config.project).toEqual({ name: "hello", slug: "hello", description: "The hello-world web app" });
    expect(config.environments.map((environment) => environment.slug)).toEqual(["dev", "test", "prod"]);
    expect(config.lifecycle.phases).toEqual([
      { environments: ["dev"], autoDeploy: true, optional: false },
      { environments: ["test"], autoDeploy: false, optional: false },
      { name: "Production", environments: ["prod"], autoDeploy: false, optional: false },
    ]);
    expect(config.feeds).toEqual([
      {
        name: "local",
        slug: "local",
        url: "http://127.0.0.1:5000",
        username: "ci",
        passwordFrom: { env: "FERRY_FEED_LOCAL_PASSWORD" },
      },
    ]);
    expect(config.images).toEqual([
      { name: "web", feed: "local", repository: "demo/app", version: { kind: "semver", range: ">=1.0.0" } },
      {
        name: "worker",
        feed: "local",
        repository: "demo/worker",
        version: { kind: "regex", pattern: "^1\\.0\\.\\d+$" },
      },
    ]);
    expect(config.variables?.find((variable) => variable.name === "DatabasePassword")).toEqual({
      name: "DatabasePassword",
      sensitive: true,
      valueFrom: { env: "HELLO_DB_PASSWORD" },
      scope: { environments: ["prod"], roles: ["web"], targets: [] },
    });
    expect(config.versionPattern).toBe("1.0.#{n}");
    // Each step's config went through its kind: the kind's defaults are filled in.
    expect(config.steps?.[0]).toMatchObject({
      name: "Say hello",
      kind: "script",
      roles: ["web"],
      condition: "success",
      required: true,
      config: { interpreter: "bash", arguments: [], timeoutSeconds: 600, env: { GREETING: "#{Greeting}" } },
    });
  });

  it("takes an environment's policy for unavailable targets and a step's rolling window", () => {
    const config = parseFerryFile(
      `project: { name: fleet }
environments: [dev, { name: prod, unavailableTargets: skip }]
lifecycle: { name: fleet, phases: [{ environments: [dev] }, { environments: [prod] }] }
steps:
  - name: web
    kind: script
    roles: [web]
    rolling: { window: 25%, pauseSeconds: 30 }
    config: { script: "true" }
`,
      "ferry.yml",
    );
    expect(config.environments.map((environment) => environment.unavailableTargets)).toEqual([undefined, "skip"]);
    expect(config.steps?.[0]?.rolling).toEqual({ window: "25%", pauseSeconds: 30 });
  });

  it("refuses an unknown policy and a window that is no count or percentage, at their lines", () => {
    const found = problems(`project: { name: fleet }
environments: [{ name: prod, unavailableTargets: ignore }]
lifecycle: { name: fleet, phases: [{ environments: [prod] }] }
steps:
  - name: web
    kind: script
    roles: [web]
    rolling: { window: half }
    config: { script: "true" }
`);
    expect(found.issues.map((issue) => [issue.pointer, issue.line])).toEqual([
      ["/environments/0/unavailableTargets", 2],
      ["/steps/0/rolling/window", 8],
    ]);
    expect(found.lines.join("\n")).toContain('"skip"');
    expect(found.lines.join("\n")).toContain('("25%")');
  });

  it("derives slugs from names and leaves unmanaged sections out", () => {
    const config = parseFerryFile(
      minimal.replace("environments: [dev, prod]", "environments: [Dev, { name: Production EU, slug: prod }]"),
      "ferry.yml",
    );
    expect(config.environments).toEqual([
      { name: "Dev", slug: "dev", description: undefined },
      { name: "Production EU", slug: "prod" },
    ]);
    expect(config.steps).toBeUndefined();
    expect(config.images).toBeUndefined();
    expect(config.variables).toBeUndefined();
    expect(config.feeds).toEqual([]);
  });

  it("points at the line and column of each unknown field", () => {
    const { lines, issues } = problems(`project:
  name: hello
  colour: blue
environments: [dev]
lifecycle:
  name: hello
  phases:
    - environments: [dev]
      autodeploy: true
enviroments: [prod]
`);
    expect(lines).toEqual([
      "ferry.yml:3:3 /project/colour: unknown field; remove it or fix its spelling (docs/ferry-yml.md lists the fields)",
      "ferry.yml:9:7 /lifecycle/phases/0/autodeploy: unknown field; remove it or fix its spelling (docs/ferry-yml.md lists the fields)",
      "ferry.yml:10:1 /enviroments: unknown field; remove it or fix its spelling (docs/ferry-yml.md lists the fields)",
    ]);
    expect(issues.map(({ pointer, line, column }) => [pointer, line, column])).toEqual([
      ["/project/colour", 3, 3],
      ["/lifecycle/phases/0/autodeploy", 9, 7],
      ["/enviroments", 10, 1],
    ]);
  });

  it("refuses a sensitive value written in the file", () => {
    const { lines } = problems(`${minimal}variables:
  - name: DbPassword
    sensitive: true
    value: hunter2
`);
    expect(lines).toEqual([
      "ferry.yml:11:12 /variables/0/value: a sensitive value must not be written in ferry.yml; remove it and use valueFrom: { env: NAME } (or { file: PATH }), which `ferry apply` reads",
    ]);
    expect(lines.join("\n")).not.toContain("hunter2");
  });

  it("asks for a reference where a secret belongs, and only there", () => {
    const { lines } = problems(`${minimal}feeds:
  - name: local
    url: http://127.0.0.1:5000
    passwordFrom: { env: REGISTRY_PASSWORD }
    password: hunter2
variables:
  - name: DbPassword
    sensitive: true
  - name: Plain
    valueFrom: { env: PLAIN }
`);
    expect(lines).toEqual([
      "ferry.yml:9:5 /feeds/0/username: a password needs a username; add username",
      "ferry.yml:12:5 /feeds/0/password: unknown field; remove it or fix its spelling (docs/ferry-yml.md lists the fields)",
      "ferry.yml:14:5 /variables/0: required: a sensitive variable needs valueFrom: { env: NAME } or { file: PATH }",
      "ferry.yml:17:16 /variables/1/valueFrom: valueFrom is for sensitive variables: add sensitive: true, or write the value inline with value",
    ]);
  });

  it("reports every problem at once, step configs checked by their kind", () => {
    const { lines } = problems(`project: { name: hello }
environments: [dev, test, prod]
lifecycle:
  name: hello
  phases:
    - environments: [dev, staging]
    - environments: [test, dev]
images:
  - name: web
    feed: registry
    repository: Demo/App
    version: { semver: ">=1.0.0", regex: "^1" }
variables:
  - name: Port
    value: 8080
steps:
  - name: Say hello
    kind: script
    condition: sucess
    config:
      interpreter: bash
      scrpt: echo hello
  - name: Deploy
    kind: scrpt
    environments: [qa]
`);
    expect(lines).toEqual([
      "ferry.yml:6:27 /lifecycle/phases/0/environments/1: no environment 'staging' under environments; refer to one by its slug: dev, test, prod",
      "ferry.yml:10:11 /images/0/feed: no feed 'registry' under feeds; refer to one by its slug: (none: add the feed under feeds)",
      "ferry.yml:11:17 /images/0/repository: use lowercase letters and digits, separated by '.', '_' or '-', in components joined by '/' (e.g. team/web-api)",
      "ferry.yml:12:14 /images/0/version: give semver or regex, not both",
      "ferry.yml:15:12 /variables/0/value: expected text, but YAML read the number 8080; put the value in quotes",
      'ferry.yml:19:16 /steps/0/condition: Invalid option: expected one of "success"|"failure"|"always"',
      "ferry.yml:21:7 /steps/0/config/script: required: add this field (string)",
      "ferry.yml:22:7 /steps/0/config/scrpt: unknown field; remove it or fix its spelling (docs/ferry-yml.md lists the fields)",
      expect.stringMatching(/^ferry\.yml:24:11 \/steps\/1\/kind: unknown step kind 'scrpt'; use one of: .*script/),
      "ferry.yml:25:20 /steps/1/environments/0: no environment 'qa' under environments; refer to one by its slug: dev, test, prod",
    ]);
  });

  it("applies the lifecycle rules of the API with line numbers", () => {
    const { lines } = problems(`project: { name: hello }
environments: [dev, prod]
lifecycle:
  name: hello
  phases:
    - environments: [dev]
    - environments: [prod, dev]
`);
    expect(lines).toEqual([
      "ferry.yml:7:28 /lifecycle/phases/1/environments/1: this environment is already in phase 0; an environment can be in one phase only",
    ]);
  });

  it("refuses things listed twice", () => {
    const { lines } = problems(`project: { name: hello }
environments: [dev, Dev]
lifecycle: { name: hello, phases: [{ environments: [dev] }] }
variables:
  - { name: A, value: "1", scope: { environments: [dev] } }
  - { name: A, value: "2", scope: { environments: [dev] } }
`);
    expect(lines).toEqual([
      "ferry.yml:2:21 /environments/1: environment 'dev' is listed twice",
      "ferry.yml:6:5 /variables/1: variable 'A' is listed twice with the same scope",
    ]);
  });

  it("reads webhooks and team grants, defaults a webhook's events, and checks them against the file", () => {
    const config = parseFerryFile(
      `${minimal}webhooks:
  - url: https://hooks.example.com/ferry
    secretFrom: { env: HOOK_SECRET }
teams:
  - { team: ops, role: deployer, environments: [prod] }
  - { team: ops, role: viewer }
`,
      "ferry.yml",
    );
    expect(config.webhooks).toEqual([
      {
        url: "https://hooks.example.com/ferry",
        events: ["deployment.started", "deployment.succeeded", "deployment.failed"],
        secretFrom: { env: "HOOK_SECRET" },
      },
    ]);
    expect(config.teams).toEqual([
      { team: "ops", role: "deployer", environments: ["prod"] },
      { team: "ops", role: "viewer" },
    ]);
    const { lines } = problems(`${minimal}webhooks:
  - { url: "https://hooks.example.com/a", secretFrom: { env: A } }
  - { url: "https://hooks.example.com/a", secretFrom: { env: B }, events: [deployment.done] }
  - { url: "ftp://hooks.example.com/", secret: inline }
teams:
  - { team: ops, role: deployer, environments: [staging] }
  - { team: ops, role: viewer }
  - { team: ops, role: viewer }
  - { team: Ops Team, role: viewer, environments: [] }
`);
    expect(lines).toEqual([
      "ferry.yml:10:12 /webhooks/1/url: this URL is listed twice; list each webhook once",
      expect.stringMatching(/^ferry\.yml:10:76 \/webhooks\/1\/events\/0: .*"deployment\.started"/),
      "ferry.yml:11:5 /webhooks/2/secretFrom: required: add this field (object)",
      "ferry.yml:11:12 /webhooks/2/url: use an http:// or https:// URL without credentials in it",
      expect.stringMatching(/^ferry\.yml:11:40 \/webhooks\/2\/secret: unknown field/),
      "ferry.yml:13:49 /teams/0/environments/0: no environment 'staging' under environments; refer to one by its slug: dev, prod",
      "ferry.yml:15:5 /teams/2: role 'viewer' is granted to team 'ops' twice alike",
      expect.stringMatching(/^ferry\.yml:16:13 \/teams\/3\/team: /),
      "ferry.yml:16:51 /teams/3/environments: name at least one environment, or leave the field out for every environment",
    ]);
  });

  it("reports YAML syntax errors and duplicate keys with their position", () => {
    expect(problems("project:\n  name: [hello\nenvironments: [dev]\n").lines).toEqual([
      expect.stringMatching(/^ferry\.yml:3:1 \(yaml\): /),
    ]);
    expect(problems(`${minimal}project: { name: again }\n`).lines).toEqual([
      "ferry.yml:8:1 (yaml): Map keys must be unique",
    ]);
    expect(problems("").lines).toEqual([
      "ferry.yml:1:1 /: the file is empty; it needs at least project, environments and lifecycle",
    ]);
  });

  it("says what is missing where it is missing", () => {
    const { lines } = problems("project:\n  description: no name\nenvironments: []\n");
    expect(lines).toEqual([
      "ferry.yml:1:1 /lifecycle: required: add this field (object)",
      "ferry.yml:2:3 /project/name: required: add this field (string)",
      "ferry.yml:3:15 /environments: list at least one environment",
    ]);
  });
});

describe("ferryFileJsonSchema", () => {
  it("describes the file as written, unknown fields refused", () => {
    const schema = ferryFileJsonSchema() as {
      title: string;
      additionalProperties: boolean;
      required: string[];
      properties: Record<string, { items?: { properties?: Record<string, unknown> } }>;
    };
    expect(schema.title).toBe("ferry.yml");
    expect(schema.additionalProperties).toBe(false);
    expect(schema.required).toEqual(["project", "environments", "lifecycle"]);
    expect(Object.keys(schema.properties)).toEqual([
      "project",
      "environments",
      "lifecycle",
      "feeds",
      "targets",
      "images",
      "packages",
      "variables",
      "variableSets",
      "versionPattern",
      "runbooks",
      "steps",
      "webhooks",
      "teams",
    ]);
    // The input side: a secret reference, never a secret value.
    expect(Object.keys(schema.properties.variables?.items?.properties ?? {})).toEqual([
      "name",
      "value",
      "sensitive",
      "valueFrom",
      "scope",
    ]);
    expect(Object.keys(schema.properties.feeds?.items?.properties ?? {})).not.toContain("password");
  });
});

describe("variable sets in ferry.yml", () => {
  const base =
    "project:\n  name: shop\n  variableSets: [common, common]\nenvironments: [dev]\nlifecycle:\n  name: l\n  phases:\n    - environments: [dev]\n";

  it("refuses a set included twice, a set declared twice, and a set value scoped to an undeclared environment", () => {
    const text = `${base}variableSets:\n  - name: common\n    variables:\n      - name: A\n        value: x\n        scope: { environments: [prod] }\n  - name: common\n    variables: []\n`;
    let message = "";
    try {
      parseFerryFile(text, "ferry.yml");
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toContain("variable set 'common' is included twice");
    expect(message).toContain("variable set 'common' is listed twice");
    expect(message).toContain("no environment 'prod' under environments");
  });

  it("reads a set's sensitive value only as a reference", () => {
    const text = `${base.replace("[common, common]", "[common]")}variableSets:\n  - name: common\n    variables:\n      - name: Token\n        sensitive: true\n        value: plain\n`;
    expect(() => parseFerryFile(text, "ferry.yml")).toThrow("a sensitive value must not be written in ferry.yml");
  });
});
