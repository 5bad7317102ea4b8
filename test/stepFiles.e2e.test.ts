import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { type SshHosts, startSshHosts } from "./helpers/sshHosts.js";

/**
 * File substitution (issue 16 part 4, ADR 0051) on real SSH targets: two network-namespace
 * hosts with Debian's sshd (test/helpers/sshHosts.ts), one in dev and one in prod. What a
 * user notices: the same release writes a JSON config file with each environment's values
 * on its host (read back from the host), a file that holds a sensitive value is readable by
 * its owner only and the value shows in no log, API answer or plan; a template naming an
 * unknown variable fails the step naming file, line and variable, and writes nothing; a
 * release keeps the template it was made with.
 */

interface LogLine {
  text: string;
}

const SECRET = `pw-${randomBytes(8).toString("hex")}`;

/** The template as it would sit beside ferry.yml: values by #{…}, and a port by key path. */
const TEMPLATE = `{
  "Logging": { "Level": "#{LogLevel}" },
  "ConnectionStrings": { "Main": "Host=db.#{Ferry.Environment.Slug};Password=#{DbPassword}" },
  "Kestrel": { "Port": 80 },
  "Release": "#{Ferry.Release.Number}"
}
`;

describe("file substitution on SSH targets", { timeout: 300_000 }, () => {
  let hosts: SshHosts;
  let test: TestServer;
  /** Where the hosts' files go: the namespaces share this machine's file system, so each environment has its own. */
  const root = `/tmp/ferry-subst-e2e-${process.pid}-${randomBytes(3).toString("hex")}`;

  const logText = async (taskId: string) =>
    (await test.call<{ lines: LogLine[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
      .map((line) => line.text)
      .join("\n");
  const finished = async (taskId: string) => {
    const task = await test.waitForTask(taskId, 120_000);
    return { task, log: await logText(taskId) };
  };
  /** Creates release `version` of the project; its auto-deployment's task and log once it ends. */
  const released = async (slug: string, version: string) => {
    const created = await test.call<{ deployments: { taskId: string }[] }>(
      "POST",
      `/api/v1/projects/${slug}/releases`,
      { version },
    );
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    return finished(created.body.deployments[0]?.taskId ?? "");
  };
  const newProject = async (files: unknown[]) => {
    const created = await test.call<{ slug: string }>("POST", "/api/v1/projects", {
      name: `subst-${randomBytes(4).toString("hex")}`,
      lifecycle: "subst",
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const slug = created.body.slug;
    const variables = [
      { name: "LogLevel", value: "Debug", scope: { environments: ["dev"] } },
      { name: "LogLevel", value: "Warning", scope: { environments: ["prod"] } },
      { name: "Port", value: "5001", scope: { environments: ["dev"] } },
      { name: "Port", value: "8443", scope: { environments: ["prod"] } },
      { name: "DbPassword", value: SECRET, sensitive: true },
    ];
    for (const variable of variables) {
      const answer = await test.call("POST", `/api/v1/projects/${slug}/variables`, variable);
      expect(answer.status, JSON.stringify(answer.body)).toBe(201);
    }
    const saved = await test.call("PUT", `/api/v1/projects/${slug}/process`, {
      steps: [
        {
          name: "configure",
          kind: "script",
          roles: ["web"],
          files,
          config: {
            // Shows the file's mode and content: the content goes through the log's masking.
            script: 'stat -c "mode=%a" "$1"; cat "$1"',
            arguments: [`${root}/#{Ferry.Environment.Slug}/appsettings.json`],
          },
        },
      ],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    return slug;
  };
  const appsettings = (overrides: Record<string, unknown> = {}) => ({
    file: "config/appsettings.json",
    content: TEMPLATE,
    path: `${root}/#{Ferry.Environment.Slug}/appsettings.json`,
    replace: { "Kestrel:Port": "#{Port}" },
    ...overrides,
  });
  const readBack = (index: number, environment: string) => {
    const host = hosts.hosts[index];
    if (!host) throw new Error("no host");
    const path = `${root}/${environment}/appsettings.json`;
    return {
      json: JSON.parse(host.exec("cat", [path])) as Record<string, Record<string, unknown>>,
      mode: host.exec("stat", ["-c", "%a", path]).trim(),
    };
  };

  beforeAll(async () => {
    [hosts, test] = await Promise.all([startSshHosts(2), startTestServer()]);
    for (const name of ["dev", "prod"]) {
      expect((await test.call("POST", "/api/v1/environments", { name })).status).toBe(201);
    }
    const lifecycle = await test.call("POST", "/api/v1/lifecycles", {
      name: "subst",
      phases: [{ environments: ["dev"], autoDeploy: true }, { environments: ["prod"] }],
    });
    expect(lifecycle.status).toBe(201);
    for (const [index, environment] of ["dev", "prod"].entries()) {
      const host = hosts.hosts[index];
      if (!host) throw new Error("no host");
      const created = await test.call("POST", "/api/v1/targets", {
        name: `${environment}-host`,
        environments: [environment],
        roles: ["web"],
        transport: "ssh",
        ssh: { host: host.address, user: "root", privateKey: hosts.privateKey },
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      const trusted = await test.call("POST", `/api/v1/targets/${environment}-host/trust`, {
        fingerprint: host.fingerprint,
      });
      expect(trusted.status, JSON.stringify(trusted.body)).toBe(200);
    }
  }, 120_000);

  afterAll(async () => {
    await test?.close();
    await hosts?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it("writes each environment's values into a JSON file on its host, the secret readable by its owner only and in no log", async () => {
    const slug = await newProject([appsettings()]);
    const dev = await released(slug, "1.0.0");
    expect(dev.task.state, dev.log).toBe("succeeded");

    // What `ferry plan` shows for prod: where the file goes, never its content or the secret.
    const plan = await test.call("GET", `/api/v1/projects/${slug}/plan?release=1.0.0&environment=prod`);
    expect(plan.status, JSON.stringify(plan.body)).toBe(200);
    expect(JSON.stringify(plan.body)).toContain(
      `prod-host: write config/appsettings.json (#{…} substituted, Kestrel:Port replaced) to ${root}/prod/appsettings.json`,
    );
    expect(JSON.stringify(plan.body)).not.toContain(SECRET);

    const queued = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${slug}/deployments`, {
      release: "1.0.0",
      environment: "prod",
    });
    expect(queued.status, JSON.stringify(queued.body)).toBe(201);
    const prod = await finished(queued.body.taskId);
    expect(prod.task.state, prod.log).toBe("succeeded");

    // Read back from each host: the same release, each environment's own values.
    const onDev = readBack(0, "dev");
    const onProd = readBack(1, "prod");
    expect(onDev.json).toEqual({
      Logging: { Level: "Debug" },
      ConnectionStrings: { Main: `Host=db.dev;Password=${SECRET}` },
      Kestrel: { Port: 5001 },
      Release: "1.0.0",
    });
    expect(onProd.json).toEqual({
      Logging: { Level: "Warning" },
      ConnectionStrings: { Main: `Host=db.prod;Password=${SECRET}` },
      Kestrel: { Port: 8443 },
      Release: "1.0.0",
    });
    // It holds a sensitive value: only its owner may read it.
    expect(onDev.mode).toBe("600");
    expect(onProd.mode).toBe("600");

    for (const { log } of [dev, prod]) {
      expect(log).toContain("wrote config/appsettings.json to");
      expect(log).toContain("(mode 0600: it holds a sensitive value)");
      // The script printed the file: the value is masked there like everywhere in the log.
      expect(log).toContain("mode=600");
      expect(log).toContain('"Main": "Host=db.');
      expect(log).not.toContain(SECRET);
    }
    const release = await test.call("GET", `/api/v1/projects/${slug}/releases/1.0.0`);
    expect(release.status).toBe(200);
    expect(JSON.stringify(release.body)).not.toContain(SECRET);
  });

  it("keeps the template a release was made with, and writes a file without a secret readable by all", async () => {
    const slug = await newProject([appsettings({ content: '{ "Level": "#{LogLevel}", "Port": 1 }\n', replace: {} })]);
    expect((await released(slug, "1.0.0")).task.state).toBe("succeeded");
    expect(readBack(0, "dev")).toEqual({ json: { Level: "Debug", Port: 1 }, mode: "644" });

    // The template is edited afterwards: the existing release still writes what it captured.
    const process = await test.call<{ steps: { files: unknown[] }[] }>("GET", `/api/v1/projects/${slug}/process`);
    const [step] = process.body.steps;
    if (!step) throw new Error("no step");
    step.files = [appsettings({ content: '{ "Level": "#{LogLevel}", "Port": 2 }\n', replace: {} })];
    expect((await test.call("PUT", `/api/v1/projects/${slug}/process`, process.body)).status).toBe(200);
    // A new release takes the new template…
    expect((await released(slug, "1.0.1")).task.state).toBe("succeeded");
    expect(readBack(0, "dev").json).toEqual({ Level: "Debug", Port: 2 });
    // …and the release diff shows the templates, not rendered values.
    const diff = await test.call("GET", `/api/v1/projects/${slug}/release-diff?from=1.0.0&to=1.0.1`);
    expect(diff.status, JSON.stringify(diff.body)).toBe(200);
    expect(JSON.stringify(diff.body)).toContain('\\"Port\\": 2');
    expect(JSON.stringify(diff.body)).toContain("#{LogLevel}");
    // The earlier release, deployed again, still writes what it captured.
    const again = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${slug}/deployments`, {
      release: "1.0.0",
      environment: "dev",
    });
    expect(again.status, JSON.stringify(again.body)).toBe(201);
    expect((await finished(again.body.taskId)).task.state).toBe("succeeded");
    expect(readBack(0, "dev").json).toEqual({ Level: "Debug", Port: 1 });
  });

  it("substitutes into a file of the release's package on the host, and writes a captured file beside it", async () => {
    // A package with a YAML config inside, pushed to the built-in feed.
    const source = mkdtempSync(join(tmpdir(), "ferry-subst-package-"));
    try {
      mkdirSync(join(source, "config"));
      writeFileSync(
        join(source, "config", "settings.yml"),
        "# shop settings\ndb:\n  host: localhost\n  port: 5432\nlevel: '#{LogLevel}'\n",
      );
      execFileSync("tar", ["-czf", join(source, "app.tar.gz"), "-C", source, "config"]);
      const pushed = await fetch(new URL("/api/v1/packages/subst-app/versions/2.0.0", test.server.url), {
        method: "PUT",
        headers: { authorization: `Bearer ${test.apiKey}`, "content-type": "application/octet-stream" },
        body: readFileSync(join(source, "app.tar.gz")),
      });
      expect(pushed.status, await pushed.clone().text()).toBe(201);
    } finally {
      rmSync(source, { recursive: true, force: true });
    }
    const slug = await newProject([]);
    const saved = await test.call("PUT", `/api/v1/projects/${slug}/process`, {
      packages: [{ name: "subst-app" }],
      steps: [
        {
          name: "unpack",
          kind: "package",
          roles: ["web"],
          config: { package: "subst-app" },
          files: [
            { file: "config/settings.yml", package: "subst-app", replace: { "db.port": "#{Port}" } },
            {
              file: "extra.json",
              content: '{ "environment": "#{Ferry.Environment.Name}" }\n',
              path: "config/extra.json",
            },
          ],
        },
        {
          name: "show",
          kind: "script",
          roles: ["web"],
          config: {
            script: 'cat "$1/config/settings.yml" "$1/config/extra.json"; stat -c "mode=%a" "$1/config/settings.yml"',
            arguments: ["#{Ferry.Step[unpack].Output.directory}"],
          },
        },
      ],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    const { task, log } = await released(slug, "1.0.0");
    expect(task.state, log).toBe("succeeded");
    expect(log).toContain("wrote subst-app:config/settings.yml to");
    // The package's file on the host: #{…} rendered, the port replaced by key path (a number), the comment kept.
    expect(log).toContain("# shop settings");
    expect(log).toContain("  host: localhost");
    expect(log).toContain("  port: 5001");
    expect(log).toMatch(/level: '?Debug'?\n/);
    expect(log).toContain('{ "environment": "dev" }');
    expect(log).toContain("mode=644");
  });

  it("fails the step naming file, line and variable when a template names an unknown variable, writing nothing", async () => {
    const path = `${root}/unknown/appsettings.json`;
    const slug = await newProject([
      appsettings({
        path,
        content: '{\n  "Password": "#{DbPassword}",\n  "Level": "#{LogLevl}"\n}\n',
        replace: {},
      }),
    ]);
    const { task, log } = await released(slug, "1.0.0");
    expect(task.state).toBe("failed");
    expect(log).toContain("config/appsettings.json:3: variable 'LogLevl' is not defined for this deployment");
    expect(JSON.stringify(task)).toContain("config/appsettings.json:3");
    expect(log).not.toContain(SECRET);
    expect(JSON.stringify(task)).not.toContain(SECRET);
    // The script did not run, and nothing was written on the host.
    expect(log).not.toContain("mode=");
    expect(() => hosts.hosts[0]?.exec("test", ["-e", path])).toThrow();
  });
});
