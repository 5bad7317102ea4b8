import { describe, expect, it } from "vitest";
import type { InputError } from "../domain/errors.js";
import { stepFileSchema } from "../domain/stepFiles.js";
import { validateSteps } from "./registry.js";

const parse = (input: unknown) => stepFileSchema.parse(input);

describe("files on steps", () => {
  const step = (kind: string, config: Record<string, unknown>, files: unknown[]) => ({
    name: "s",
    kind,
    roles: [],
    environments: [],
    excludeEnvironments: [],
    condition: "success" as const,
    required: true,
    config,
    files: files.map(parse),
  });
  const problems = (steps: ReturnType<typeof step>[], options = {}) => {
    try {
      validateSteps(steps, "/steps", options);
      return [];
    } catch (error) {
      return (error as InputError).issues ?? [];
    }
  };

  it("are taken by kinds that deploy files, and refused by name on others", () => {
    const file = { file: "a.json", content: "{}", path: "/srv/a.json" };
    expect(problems([step("script", { script: "true" }, [file])])).toEqual([]);
    expect(problems([step("health-check", { url: "http://127.0.0.1/" }, [file])])).toEqual([
      expect.objectContaining({ pointer: "/steps/0/files", detail: expect.stringContaining("writes no files") }),
    ]);
  });

  it("take a package's file only on the step that unpacks it", () => {
    expect(problems([step("package", { package: "web" }, [{ file: "a.json", package: "web" }])])).toEqual([]);
    expect(problems([step("package", { package: "web" }, [{ file: "a.json", package: "api" }])])).toEqual([
      expect.objectContaining({ pointer: "/steps/0/files/0/package" }),
    ]);
    expect(problems([step("script", { script: "true" }, [{ file: "a.json", package: "web" }])])[0]?.detail).toContain(
      "put it on the package step that unpacks web",
    );
  });

  it("need their content through the API, and a path unless they go beside a package", () => {
    const beside = { file: "a.json", path: "/srv/a.json" };
    expect(problems([step("script", { script: "true" }, [beside])])[0]).toMatchObject({
      pointer: "/steps/0/files/0/content",
    });
    expect(problems([step("script", { script: "true" }, [beside])], { filesBesideFerryYml: true })).toEqual([]);
    expect(problems([step("script", { script: "true" }, [{ file: "a.json", content: "{}" }])])[0]).toMatchObject({
      pointer: "/steps/0/files/0/path",
    });
    expect(problems([step("package", { package: "web" }, [{ file: "extra.json", content: "{}" }])])).toEqual([]);
  });
});

it("template files are refused on a step inside an isolated group", () => {
  const nested = { name: "t", kind: "script", config: { script: "true" } };
  const group = (files?: unknown[]) => ({
    name: "group",
    kind: "isolated",
    roles: [],
    environments: [],
    excludeEnvironments: [],
    condition: "success" as const,
    required: true,
    config: { steps: [{ ...nested, ...(files && { files }) }] },
  });
  const problems = (step: ReturnType<typeof group>) => {
    try {
      validateSteps([step]);
      return "";
    } catch (error) {
      return JSON.stringify((error as InputError).issues);
    }
  };
  expect(problems(group())).not.toContain("template files");
  expect(problems(group([{ file: "a.json", content: "{}", path: "/srv/a.json" }]))).toContain(
    "a step inside an isolated group takes no template files",
  );
});

describe("a compose step's Compose file from its files", () => {
  const compose = (files: unknown[], config: Record<string, unknown> = { composeFile: "docker-compose.yml" }) => ({
    name: "app",
    kind: "compose",
    roles: [],
    environments: [],
    excludeEnvironments: [],
    condition: "success" as const,
    required: true,
    config,
    files: files.map(parse),
  });
  const problems = (step: ReturnType<typeof compose>, options = {}) => {
    try {
      validateSteps([step], "/steps", options);
      return [];
    } catch (error) {
      return [...((error as InputError).issues ?? [])];
    }
  };

  it("is checked like an inline one, with pointers into the file, and needs no path", () => {
    const valid = 'services:\n  web:\n    image: app\n    environment: { A: "#{A}" }\n';
    expect(problems(compose([{ file: "docker-compose.yml", content: valid }]))).toEqual([]);
    expect(
      problems(
        compose([{ file: "docker-compose.yml", content: "services:\n  web:\n    image: a\n    privileged: true\n" }]),
      ),
    ).toContainEqual(expect.objectContaining({ pointer: "/steps/0/files/0/content/services/web/privileged" }));
    // Beside ferry.yml its text is not there yet: apply captures it, and the API checks it then.
    expect(problems(compose([{ file: "docker-compose.yml" }]), { filesBesideFerryYml: true })).toEqual([]);
  });

  it("must be one of the step's files, read as it is, and not beside an inline file", () => {
    expect(problems(compose([]))[0]).toMatchObject({
      pointer: "/steps/0/config",
      detail: expect.stringContaining("add { file: docker-compose.yml }"),
    });
    expect(
      problems(compose([{ file: "docker-compose.yml", content: "services: {}\n", path: "/srv/compose.yml" }]))[0],
    ).toMatchObject({ pointer: "/steps/0/files/0", detail: expect.stringContaining("the step's own input") });
    expect(
      problems(
        compose([{ file: "docker-compose.yml", content: "" }], {
          composeFile: "docker-compose.yml",
          compose: "services: {}\n",
        }),
      )[0],
    ).toMatchObject({ pointer: "/steps/0/config/compose", detail: expect.stringContaining("not both") });
  });
});
