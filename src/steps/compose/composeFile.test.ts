import { describe, expect, it } from "vitest";
import { stepKind } from "../registry.js";
import { ComposeFileError, composeHostPaths, loadComposeApplication, parseComposeText } from "./composeFile.js";
import { composeConfigSchema } from "./config.js";

const issuesOf = (document: unknown) => {
  try {
    loadComposeApplication(document);
  } catch (error) {
    if (error instanceof ComposeFileError) return error.issues.map((issue) => `${issue.pointer}: ${issue.detail}`);
    throw error;
  }
  return [];
};

describe("Compose files (the specification's schema, then what Ferry supports)", () => {
  it("orders services after their dependencies and reads every supported key", () => {
    const application = loadComposeApplication(
      parseComposeText(`
services:
  web:
    image: registry.test/shop/web:1
    depends_on: { db: { condition: service_healthy } }
    environment: [GREETING=hi, EMPTY]
    ports: ["8080"]
    deploy: { resources: { limits: { cpus: "0.5", memory: 64m } } }
    x-ferry: { route: { host: shop.test, port: 8080 } }
  worker:
    image: registry.test/shop/web:1
    command: [/bin/worker, --once]
    depends_on: [db]
  db:
    image: postgres:15
    volumes: [data:/var/lib/postgresql/data]
    healthcheck: { test: [CMD, pg_isready], interval: 1s500ms, retries: 5 }
volumes:
  data: {}
`),
    );
    expect(application.services.map((service) => service.name)).toEqual(["db", "web", "worker"]);
    const [db, web] = application.services;
    expect(db?.healthcheck).toEqual({ test: ["CMD", "pg_isready"], intervalMs: 1500, retries: 5 });
    expect(db?.mounts).toEqual([
      { source: "data", kind: "volume", target: "/var/lib/postgresql/data", readOnly: false },
    ]);
    expect(web?.environment).toEqual({ GREETING: "hi", EMPTY: "" });
    expect(web?.cpus).toBe(0.5);
    expect(web?.memoryMb).toBe(64);
    expect(web?.ferry?.route).toEqual({ host: "shop.test", port: 8080, pathPrefix: "/" });
    expect(application.networks).toEqual({ default: { internal: false, labels: {} } });
  });

  it("refuses what the specification refuses, naming the key", () => {
    expect(issuesOf({ services: { web: { image: "a", colour: "blue" } } }).join("\n")).toContain("'colour'");
    expect(issuesOf({ services: { web: { image: "a", ports: [{ target: "eighty" }] } } }).join("\n")).toContain(
      "/services/web/ports/0",
    );
  });

  it("refuses valid Compose keys Ferry would otherwise silently ignore, by name", () => {
    const issues = issuesOf({
      services: { web: { image: "a", privileged: true, build: ".", deploy: { replicas: 2 } } },
      secrets: { key: { file: "./key" } },
    });
    expect(issues).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^\/secrets: 'secrets' is valid Compose but not supported/),
        expect.stringMatching(/^\/services\/web\/privileged: 'privileged'/),
        expect.stringMatching(/^\/services\/web\/build: 'build'/),
        expect.stringMatching(/^\/services\/web\/deploy\/replicas: 'replicas'/),
      ]),
    );
  });

  it("refuses undeclared volumes and networks, unknown dependencies, cycles and host ports on routed services", () => {
    expect(issuesOf({ services: { web: { image: "a", volumes: ["data:/d"] } } }).join()).toContain("volume 'data'");
    expect(issuesOf({ services: { web: { image: "a", networks: ["back"] } } }).join()).toContain("network 'back'");
    expect(issuesOf({ services: { web: { image: "a", depends_on: ["db"] } } }).join()).toContain("'db'");
    expect(
      issuesOf({ services: { a: { image: "a", depends_on: ["b"] }, b: { image: "b", depends_on: ["a"] } } }).join(),
    ).toContain("cycle");
    expect(
      issuesOf({
        services: { web: { image: "a", ports: ["8081:8080"], "x-ferry": { route: { host: "h", port: 8080 } } } },
      }).join(),
    ).toContain("cannot share a host port");
    expect(
      issuesOf({
        services: {
          web: { image: "a", "x-ferry": { route: { host: "h", port: 8080 }, blueGreen: { switch: "allAtOnce" } } },
        },
      }).join(),
    ).toContain("/services/web/x-ferry/blueGreen/switch: a compose step switches its routed services target by target");
  });

  it("reports the step's problems at the field, when the process is saved", () => {
    const result = composeConfigSchema.safeParse({ compose: "services:\n  web:\n    image: a\n    links: [db]\n" });
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.path).toEqual(["compose", "services", "web", "links"]);
  });

  it("plans one line per service, in dependency order, saying which are blue/green", () => {
    const config = composeConfigSchema.parse({
      compose: {
        services: {
          web: {
            image: "#{Registry}/shop/web",
            depends_on: ["db"],
            "x-ferry": { route: { host: "#{Env}.shop.test", port: 8080 }, blueGreen: { drainSeconds: 5 } },
          },
          db: { image: "postgres:15" },
        },
      },
    });
    const render = (template: string) => template.replace("#{Registry}", "registry.test").replace("#{Env}", "dev");
    // Through the registry, as the engine finds it (importing the step first would enter the
    // step → strategy → process runner → registry cycle from its middle).
    const composeStep = stepKind("compose");
    expect(composeStep?.plan(config, render).map((line) => line.description)).toEqual([
      "service db: recreate from postgres:15 only if its definition changed",
      "service web: blue/green from registry.test/shop/web, wait for / to answer HTTP 200, switch dev.shop.test/ to it, drain the old colour (5 s), retain 3",
    ]);
  });

  it("lists bind mounts (and templates that could become one) for the administer check", () => {
    expect(
      composeHostPaths({
        compose:
          "services:\n  a:\n    image: a\n    volumes: [data:/d, /etc:/host-etc:ro, '#{Dir}:/x', {type: bind, source: /srv, target: /s}]\nvolumes: { data: {} }\n",
      }),
    ).toEqual(["/etc", "#{Dir}", "/srv"]);
  });
});
