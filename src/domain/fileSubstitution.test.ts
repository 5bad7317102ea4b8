import { describe, expect, it } from "vitest";
import {
  FileSubstitutionError,
  renderTemplateFile,
  replaceJsonPaths,
  replaceYamlPaths,
  splitKeyPath,
} from "./fileSubstitution.js";

const variables = new Map([
  ["LogLevel", "Warning"],
  ["Image", "registry.example/web@sha256:abc"],
  ["Port", "8081"],
  ["DbPassword", "s3cret-value"],
]);

describe("renderTemplateFile", () => {
  it("renders #{…} with the deployment's variables", () => {
    expect(renderTemplateFile("app.conf", "level=#{LogLevel}\nport=#{Port}\n", variables)).toBe(
      "level=Warning\nport=8081\n",
    );
  });

  it("fails naming the file, the line and the unknown variable, never a value", () => {
    const render = () =>
      renderTemplateFile("config/app.conf", "password=#{DbPassword}\n\nlevel=#{LogLevl}\n", variables);
    expect(render).toThrow(FileSubstitutionError);
    expect(render).toThrow("config/app.conf:3: variable 'LogLevl' is not defined for this deployment");
    try {
      render();
    } catch (error) {
      expect((error as FileSubstitutionError).line).toBe(3);
      expect((error as FileSubstitutionError).missing).toEqual(["LogLevl"]);
      expect(String((error as Error).message)).not.toContain("s3cret-value");
    }
  });
});

describe("replaceJsonPaths", () => {
  const appsettings = JSON.stringify({ Logging: { Level: "Debug" }, Port: 80, Hosts: ["a", "b"], Debug: true });

  it("replaces by key path, keeping a number a number and a boolean a boolean", () => {
    const replaced = replaceJsonPaths(
      "appsettings.json",
      appsettings,
      new Map([
        ["Logging:Level", "Warning"],
        ["Port", "8081"],
        ["Hosts:1", "c"],
        ["Debug", "false"],
      ]),
    );
    expect(JSON.parse(replaced)).toEqual({
      Logging: { Level: "Warning" },
      Port: 8081,
      Hosts: ["a", "c"],
      Debug: false,
    });
  });

  it("refuses a key path the file does not have, naming the file and the missing part", () => {
    expect(() => replaceJsonPaths("appsettings.json", appsettings, new Map([["Logging:Lvl", "x"]]))).toThrow(
      "appsettings.json has no 'Logging:Lvl' (from key path 'Logging:Lvl')",
    );
    expect(() => replaceJsonPaths("bad.json", "{", new Map())).toThrow("bad.json is not valid JSON");
  });
});

describe("replaceYamlPaths", () => {
  const compose = [
    "# the shop",
    "services:",
    "  web:",
    "    image: web:latest # pinned by Ferry",
    "    ports: [80]",
    "  db:",
    "    image: postgres:15",
    "",
  ].join("\n");

  it("replaces by dotted key path and keeps the comments", () => {
    const replaced = replaceYamlPaths(
      "compose.yaml",
      compose,
      new Map([
        ["services.web.image", "registry.example/web@sha256:abc"],
        ["services.web.ports.0", "8081"],
      ]),
    );
    expect(replaced).toContain("# the shop");
    expect(replaced).toContain("image: registry.example/web@sha256:abc # pinned by Ferry");
    expect(replaced).toContain("ports: [ 8081 ]");
    expect(replaced).toContain("image: postgres:15");
  });

  it("takes ':' paths too, so keys holding dots can be named, and refuses what is not there", () => {
    const labels = "labels:\n  traefik.http.routers.web.rule: Host(`old`)\n";
    expect(replaceYamlPaths("l.yaml", labels, new Map([["labels:traefik.http.routers.web.rule", "Host(`new`)"]]))).toBe(
      "labels:\n  traefik.http.routers.web.rule: Host(`new`)\n",
    );
    expect(() => replaceYamlPaths("compose.yaml", compose, new Map([["services.api.image", "x"]]))).toThrow(
      "compose.yaml has no 'services.api' (from key path 'services.api.image')",
    );
    expect(() => replaceYamlPaths("compose.yaml", compose, new Map([["services.web", "x"]]))).toThrow(
      "'services.web' holds a list or mapping, not a value",
    );
  });

  it("splits key paths on ':' when there is one, otherwise on '.'", () => {
    expect(splitKeyPath("Logging:Level")).toEqual(["Logging", "Level"]);
    expect(splitKeyPath("services.web.image")).toEqual(["services", "web", "image"]);
    expect(() => splitKeyPath("a..b")).toThrow("empty segment");
  });
});
