import { describe, expect, it } from "vitest";
import { describeStepFile, stepFileSchema, substituteStepFile } from "./stepFiles.js";

const variables = new Map([
  ["LogLevel", "Warning"],
  ["Port", "8081"],
  ["DbPassword", "s3cret-value"],
]);

const parse = (input: unknown) => stepFileSchema.parse(input);

describe("stepFileSchema", () => {
  it("takes a captured template and a package's file, with defaults", () => {
    expect(parse({ file: "config/app.json", content: "{}", path: "/srv/app.json" })).toEqual({
      file: "config/app.json",
      content: "{}",
      path: "/srv/app.json",
      substitute: true,
      replace: {},
    });
    expect(parse({ file: "appsettings.yml", package: "web", replace: { "Logging:Level": "#{LogLevel}" } })).toEqual({
      file: "appsettings.yml",
      package: "web",
      substitute: true,
      replace: { "Logging:Level": "#{LogLevel}" },
    });
  });

  it("refuses paths that leave the directory, both sources at once, and key paths on other files", () => {
    const problems = (input: unknown) => stepFileSchema.safeParse(input).error?.issues.map((issue) => issue.message);
    expect(problems({ file: "../etc/passwd", content: "" })?.[0]).toContain("without '..'");
    expect(problems({ file: "/etc/passwd", content: "" })?.[0]).toContain("relative path");
    expect(problems({ file: "a.json", content: "{}", package: "web" })?.[0]).toContain("leave one out");
    expect(problems({ file: "app.conf", content: "", replace: { "a.b": "x" } })?.[0]).toContain(".json, .yml");
    expect(problems({ file: "a.json", content: "{}", replace: { "a..b": "x" } })?.[0]).toContain("empty segment");
    expect(problems({ file: "a.json", content: "x".repeat(64 * 1024 + 1) })?.[0]).toContain("at most 64 KiB");
  });
});

describe("substituteStepFile", () => {
  it("renders #{…}, then replaces by key path with rendered values (a number stays a number)", () => {
    const file = parse({
      file: "appsettings.json",
      content: "",
      replace: { "Logging:Level": "#{LogLevel}", Port: "#{Port}" },
    });
    const text = JSON.stringify({ Logging: { Level: "Debug" }, Port: 80, Password: "#{DbPassword}" });
    expect(JSON.parse(substituteStepFile(file, text, variables))).toEqual({
      Logging: { Level: "Warning" },
      Port: 8081,
      Password: "s3cret-value",
    });
  });

  it("leaves #{…} alone when substitute is false", () => {
    const file = parse({ file: "a.yml", content: "", substitute: false, replace: { "a.b": "#{LogLevel}" } });
    expect(substituteStepFile(file, "a:\n  b: x\nc: '#{Literal}'\n", variables)).toBe(
      "a:\n  b: Warning\nc: '#{Literal}'\n",
    );
  });

  it("fails naming file, line and variable (or key path and variable), never a value", () => {
    const file = parse({ file: "app.conf", content: "" });
    expect(() => substituteStepFile(file, "password=#{DbPassword}\nlevel=#{Nope}\n", variables)).toThrow(
      "app.conf:2: variable 'Nope' is not defined for this deployment",
    );
    const json = parse({ file: "a.json", content: "", replace: { "x:y": "#{DbPassword}#{Missing}" } });
    expect(() => substituteStepFile(json, '{"x":{"y":1}}', variables)).toThrow(
      "a.json: the replacement for 'x:y' names 'Missing', not defined for this deployment",
    );
    try {
      substituteStepFile(json, '{"x":{"y":1}}', variables);
    } catch (error) {
      expect((error as Error).message).not.toContain("s3cret-value");
    }
  });

  it("describes a file for the plan without its content", () => {
    const file = parse({ file: "a.json", content: '{"p":"#{DbPassword}"}', path: "/srv/#{LogLevel}/a.json" });
    const line = describeStepFile(file, (template) => template.replace("#{LogLevel}", "Warning"));
    expect(line).toBe("write a.json (#{…} substituted) to /srv/Warning/a.json");
  });
});

describe("a rendered file that is not valid JSON", () => {
  it("is refused naming the file and line, without quoting the text (a secret may be in it)", () => {
    const file = parse({ file: "a.json", content: "", replace: { "x:y": "1" } });
    const unquoted = '{ "x": { "y": 1 }, "p": #{DbPassword} }';
    expect(() => substituteStepFile(file, unquoted, variables)).toThrow(
      "a.json is not valid JSON (Unexpected token); fix the file",
    );
    const twoLines = '{ "x": { "y": 1 },\n  "#{DbPassword}": 2,, }';
    expect(() => substituteStepFile(file, twoLines, variables)).toThrow("a.json is not valid JSON at line 2");
    for (const text of [unquoted, twoLines]) {
      try {
        substituteStepFile(file, text, variables);
      } catch (error) {
        expect((error as Error).message).not.toMatch(/s3cret|'s'/);
      }
    }
  });
});
