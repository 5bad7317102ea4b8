import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerRuntime } from "../src/runtimes/docker.js";
import { isolatedEnv, runFerry } from "./helpers/cli.js";
import { buildDemoImage, type DemoImage, removeImages } from "./helpers/images.js";
import { pushTestImage, startRegistry, type TestRegistry } from "./helpers/registry.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/**
 * Issue 5: shell metacharacters and `--` prefixes in every user-supplied field that reaches
 * a process (script variables and arguments, container image/tag/name/env/volumes/networks,
 * a feed's username and password, release versions, ferry.yml through `ferry apply`) never
 * run anything. Each payload tries to `touch` a file in a marker directory of its own; the
 * deployment may fail (validation: 400; at run time: a failed task naming the field), but
 * the marker directory must stay empty.
 *
 * Containers get the marker directory bind-mounted at the same path, so a payload that ran
 * *inside* a container (an injected entrypoint, a shell evaluating an env value) would leave
 * its marker there too.
 *
 * Compose steps do not exist yet (src/steps/registry.ts lists the step kinds): when they
 * come, the compose project name and file fields belong here.
 */

/** Every way a value could break out of a shell line or be read as an option. */
function payloads(markerDir: string): string[] {
  const marker = (name: string) => join(markerDir, name);
  return [
    `$(touch ${marker("dollar")})`,
    `\`touch ${marker("backtick")}\``,
    `; touch ${marker("semicolon")}`,
    `x | touch ${marker("pipe")}`,
    `x && touch ${marker("and")}`,
    `x || touch ${marker("or")}`,
    `x\ntouch ${marker("newline")}\n`,
    `x\rtouch ${marker("cr")}`,
    `' ; touch ${marker("quote")} ; '`,
    `" ; touch ${marker("dquote")} ; "`,
    `x > ${marker("redirect")}`,
    `\${IFS}touch\${IFS}${marker("ifs")}`,
    "--help",
    `--entrypoint=/bin/sh -c 'touch ${marker("entrypoint")}'`,
    "-v=/:/host",
    "--privileged",
  ];
}

/** One line a shell would still run, for fields that refuse newlines (an htpasswd password). */
const oneLine = (markerDir: string) =>
  `p$(touch ${markerDir}/p1)\`touch ${markerDir}/p2\`;touch ${markerDir}/p3|touch ${markerDir}/p4&&touch ${markerDir}/p5`;

const markerDirs: string[] = [];
function newMarkerDir(): string {
  const directory = mkdtempSync(join(tmpdir(), "ferry-marker-"));
  chmodSync(directory, 0o777);
  markerDirs.push(directory);
  return directory;
}
const expectNoMarker = (directory: string) => expect(readdirSync(directory), `markers in ${directory}`).toEqual([]);

interface LogLine {
  text: string;
}

describe("injection: shell metacharacters and leading dashes in user-supplied fields", { timeout: 120_000 }, () => {
  const docker = new DockerRuntime();
  let test: TestServer;
  let registry: TestRegistry;
  let authRegistry: TestRegistry;
  let image: DemoImage;
  const authImageTag = `auth-${randomBytes(3).toString("hex")}`;
  let authImageDigest = "";
  const projects: string[] = [];

  const logText = async (taskId: string) =>
    (await test.call<{ lines: LogLine[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
      .map((line) => line.text)
      .join("\n");

  /** A new project (auto-deploys to dev) with these variables. */
  const newProject = async (variables: Record<string, string> = {}, sensitive = false) => {
    const created = await test.call<{ slug: string }>("POST", "/api/v1/projects", {
      name: `inj-${randomBytes(4).toString("hex")}`,
      lifecycle: "auto",
    });
    expect(created.status).toBe(201);
    const slug = created.body.slug;
    projects.push(slug);
    for (const [name, value] of Object.entries(variables)) {
      const variable = await test.call("POST", `/api/v1/projects/${slug}/variables`, { name, value, sensitive });
      expect(variable.status, JSON.stringify(variable.body)).toBe(201);
    }
    return slug;
  };
  const setProcess = (slug: string, body: Record<string, unknown>) =>
    test.call<{ errors?: { pointer: string }[] }>("PUT", `/api/v1/projects/${slug}/process`, body);
  let releaseCount = 0;
  const releaseAndWait = async (slug: string, extra: Record<string, unknown> = {}) => {
    const created = await test.call<{ deployments: { taskId: string }[] }>(
      "POST",
      `/api/v1/projects/${slug}/releases`,
      { version: `1.0.${++releaseCount}`, ...extra },
    );
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const taskId = created.body.deployments[0]?.taskId ?? "";
    const task = await test.waitForTask(taskId, 60_000);
    return { task, log: await logText(taskId) };
  };

  beforeAll(async () => {
    registry = await startRegistry();
    image = await buildDemoImage({ registryUrl: registry.url, repository: "inj/app", version: "1.0.0" });
    test = await startTestServer();
    expect((await test.call("POST", "/api/v1/environments", { name: "dev" })).status).toBe(201);
    expect(
      (
        await test.call("POST", "/api/v1/lifecycles", {
          name: "auto",
          phases: [{ environments: ["dev"], autoDeploy: true }],
        })
      ).status,
    ).toBe(201);
  }, 120_000);

  afterAll(async () => {
    for (const slug of projects) await docker.removeByLabel("ferry.project", slug).catch(() => {});
    await test?.close();
    await registry?.stop();
    await authRegistry?.stop();
    const authImage = authRegistry && `${new URL(authRegistry.url).host}/inj/pulled@${authImageDigest}`;
    await removeImages([image?.reference, authImage].filter((reference): reference is string => !!reference));
    for (const directory of markerDirs) rmSync(directory, { recursive: true, force: true });
  });

  it("script steps: variables, env and arguments reach bash and node as data", async () => {
    const markerDir = newMarkerDir();
    const values = payloads(markerDir);
    const variables = Object.fromEntries(values.map((value, index) => [`P${index}`, value]));
    const slug = await newProject(variables);
    const env = Object.fromEntries(values.map((_, index) => [`P${index}`, `#{P${index}}`]));
    const args = [...values.map((_, index) => `#{P${index}}`), ...values];
    const response = await setProcess(slug, {
      steps: [
        {
          name: "bash",
          kind: "script",
          config: {
            // Quoted and unquoted expansions: neither evaluates $(…) or `…` inside a value.
            script: `for a in "$@"; do printf 'arg[%s]\\n' "$a"; done\nfor n in ${Object.keys(env).join(" ")}; do printf 'env[%s]\\n' "\${!n}"; echo unquoted \${!n}; done`,
            env,
            arguments: args,
          },
        },
        {
          name: "node",
          kind: "script",
          config: {
            interpreter: "node",
            script:
              'for (const a of process.argv.slice(1)) console.log("arg[" + a + "]"); console.log("env[" + process.env.P0 + "]")',
            env,
            arguments: args,
          },
        },
      ],
    });
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    const { task, log } = await releaseAndWait(slug);
    expect(task.state, log).toBe("succeeded");
    // The values arrived intact (as data), including the ones that look like options.
    expect(log).toContain(`arg[$(touch ${markerDir}/dollar)]`);
    expect(log).toContain("arg[--help]");
    expect(log).toContain(`env[; touch ${markerDir}/semicolon]`);
    expect(log).toContain(`arg[--entrypoint=/bin/sh -c 'touch ${markerDir}/entrypoint']`);
    expectNoMarker(markerDir);
  });

  it("release versions and notes: refused or stored, never run", async () => {
    const markerDir = newMarkerDir();
    const slug = await newProject();
    expect(
      (
        await setProcess(slug, {
          steps: [
            {
              name: "show",
              kind: "script",
              config: { script: 'echo "$V"', env: { V: "#{Ferry.Release.Number}" } },
            },
          ],
        })
      ).status,
    ).toBe(200);
    for (const version of [...payloads(markerDir), `1.0.0;touch ${markerDir}/v`, "-1.0.0", "1.0.0\n"]) {
      const refused = await test.call<{ errors: { pointer: string }[] }>("POST", `/api/v1/projects/${slug}/releases`, {
        version,
      });
      expect(refused.status, version).toBe(400);
      expect(refused.body.errors.map((issue) => issue.pointer)).toContain("/version");
    }
    const { task } = await releaseAndWait(slug, { notes: payloads(markerDir).join("\n") });
    expect(task.state).toBe("succeeded");
    expectNoMarker(markerDir);
  });

  describe("container steps (real Docker engine)", () => {
    /** A container step that would pass with the real image; `extra` puts the payload in. */
    const step = (markerDir: string, extra: Record<string, unknown>) => ({
      name: "web",
      kind: "container",
      config: {
        image: image.reference,
        settleSeconds: 1,
        stopTimeoutSeconds: 1,
        restartPolicy: "no",
        volumes: [{ source: markerDir, target: markerDir }],
        ...extra,
      },
    });

    /** Deploys one step with the payload; returns how it ended (400 at PUT, or the task). */
    const attempt = async (
      markerDir: string,
      extra: Record<string, unknown>,
      variables: Record<string, string> = {},
    ) => {
      const slug = await newProject(variables);
      const put = await setProcess(slug, { steps: [step(markerDir, extra)] });
      if (put.status === 400) return { slug, refused: true as const, pointers: put.body.errors ?? [] };
      expect(put.status, JSON.stringify(put.body)).toBe(200);
      const { task, log } = await releaseAndWait(slug);
      return { slug, refused: false as const, task, log };
    };

    /** No container of this project runs with an entrypoint or command other than the image's. */
    const expectImageEntrypoint = async (slug: string) => {
      for (const container of await docker.listByLabel("ferry.project", slug)) {
        const [inspected] = JSON.parse(
          execFileSync("docker", ["container", "inspect", container.id], { encoding: "utf8" }),
        );
        const [original] = JSON.parse(
          execFileSync("docker", ["image", "inspect", image.reference], { encoding: "utf8" }),
        );
        expect(inspected.Config.Entrypoint).toEqual(original.Config.Entrypoint);
        expect(inspected.Config.Cmd).toEqual(original.Config.Cmd);
        expect(inspected.HostConfig.Privileged).toBe(false);
      }
    };

    it("image references and tags: refused as not an image reference, nothing created", async () => {
      const markerDir = newMarkerDir();
      const host = new URL(registry.url).host;
      const candidates = [
        ...payloads(markerDir),
        ...payloads(markerDir).map((payload) => `${host}/inj/app:${payload}`),
        `${host}/inj/app:--help`,
        `${host}/inj/app@sha256:$(touch ${markerDir}/digest)`,
        `${host}/--entrypoint=/bin/sh:1.0`,
      ];
      for (const candidate of candidates) {
        // Through a variable (as #{Ferry.Image[…]} or a project variable would bring it) …
        const result = await attempt(markerDir, { image: "#{Image}" }, { Image: candidate });
        expect(result.refused).toBe(false);
        if (!result.refused) {
          expect(result.task.state, `${candidate}\n${result.log}`).toBe("failed");
          expect(String(result.task.error), candidate).toContain("is not an image reference");
        }
        expect(await docker.listByLabel("ferry.project", result.slug)).toEqual([]);
      }
      expectNoMarker(markerDir);
    });

    it("container names: refused as not a container name, nothing created", async () => {
      const markerDir = newMarkerDir();
      for (const name of payloads(markerDir)) {
        const result = await attempt(markerDir, { name: "#{Name}" }, { Name: name });
        expect(result.refused).toBe(false);
        if (!result.refused) {
          expect(result.task.state, result.log).toBe("failed");
          expect(String(result.task.error)).toContain("is not a container name");
        }
        expect(await docker.listByLabel("ferry.project", result.slug)).toEqual([]);
      }
      expectNoMarker(markerDir);
    });

    it("env values: reach the container verbatim and are not evaluated by its shell", async () => {
      const markerDir = newMarkerDir();
      const values = payloads(markerDir);
      const env = Object.fromEntries(values.map((_, index) => [`P${index}`, `#{P${index}}`]));
      // The demo app's shell (PID 1) echoes $GREETING at start: a real shell inside the container.
      const result = await attempt(
        markerDir,
        { env: { ...env, GREETING: "#{P0}" } },
        Object.fromEntries(values.map((value, index) => [`P${index}`, value])),
      );
      expect(result.refused).toBe(false);
      if (result.refused) return;
      expect(result.task.state, result.log).toBe("succeeded");
      const [container] = await docker.listByLabel("ferry.project", result.slug);
      const [inspected] = JSON.parse(
        execFileSync("docker", ["container", "inspect", container?.id ?? "none"], { encoding: "utf8" }),
      );
      for (const [index, value] of values.entries()) expect(inspected.Config.Env).toContain(`P${index}=${value}`);
      await expectImageEntrypoint(result.slug);
      const logs = execFileSync("docker", ["logs", container?.id ?? "none"], { encoding: "utf8" });
      expect(logs).toContain(`greeting: $(touch ${markerDir}/dollar)`);
      await docker.removeByLabel("ferry.project", result.slug);
      expectNoMarker(markerDir);
    });

    it("volume sources and targets: refused, nothing created", async () => {
      const markerDir = newMarkerDir();
      const volumeName = `inj-${randomBytes(4).toString("hex")}`;
      // The payloads that could break out of a line or read as an option (the others add nothing new here).
      for (const payload of payloads(markerDir).filter((_, index) => [0, 1, 2, 6, 12, 13, 14].includes(index))) {
        for (const volume of [
          { source: "#{V}", target: "/data" },
          { source: volumeName, target: "#{V}" },
          { source: `${markerDir}/#{V}`, target: "/data" },
          { source: volumeName, target: "/data/#{V}" },
        ]) {
          const result = await attempt(markerDir, { volumes: [volume] }, { V: payload });
          const what = `${JSON.stringify(volume)} ${payload}`;
          if (!result.refused && result.task.state !== "succeeded") {
            // Refused by the runtime's checks, or (an absolute source that is a valid path) by the engine: no such path.
            expect(result.task.state, `${what}\n${result.log}`).toBe("failed");
            expect(String(result.task.error), what).toMatch(/volume|mount|path|no such file|bind source/i);
          } else if (!result.refused) {
            // A valid absolute target that merely contains the characters: mounted at exactly that literal path.
            const [container] = await docker.listByLabel("ferry.project", result.slug);
            const [inspected] = JSON.parse(
              execFileSync("docker", ["container", "inspect", container?.id ?? "none"], { encoding: "utf8" }),
            );
            expect(
              inspected.Mounts.map((mount: { Destination: string }) => mount.Destination),
              what,
            ).toContain(`/data/${payload}`);
          }
          await expectImageEntrypoint(result.slug);
          await docker.removeByLabel("ferry.project", result.slug);
        }
      }
      execFileSync("docker", ["volume", "rm", "--force", volumeName]);
      expectNoMarker(markerDir);
    });

    it("networks: refused when the process is saved", async () => {
      const markerDir = newMarkerDir();
      for (const network of payloads(markerDir)) {
        const result = await attempt(markerDir, { networks: [network] });
        expect(result.refused, network).toBe(true);
        if (result.refused)
          expect(result.pointers.map((issue) => issue.pointer)).toContain("/steps/0/config/networks/0");
      }
      expectNoMarker(markerDir);
    });

    it("a feed's username and password reach Docker's pull as data", async () => {
      const markerDir = newMarkerDir();
      const auth = { username: "ci", password: oneLine(markerDir) };
      authRegistry = await startRegistry({ auth });
      authImageDigest = await pushTestImage(authRegistry.url, "inj/pulled", authImageTag, {
        content: `injection ${authImageTag}`,
        auth,
      });
      const feedName = `auth-${randomBytes(3).toString("hex")}`;
      const feed = await test.call<{ slug: string }>("POST", "/api/v1/feeds", {
        name: feedName,
        url: authRegistry.url,
        ...auth,
      });
      expect(feed.status, JSON.stringify(feed.body)).toBe(201);
      const slug = await newProject();
      const put = await setProcess(slug, {
        images: [{ name: "web", feed: feed.body.slug, repository: "inj/pulled" }],
        steps: [
          {
            name: "web",
            kind: "container",
            config: { image: "#{Ferry.Image[web]}", settleSeconds: 0, restartPolicy: "no" },
          },
        ],
      });
      expect(put.status, JSON.stringify(put.body)).toBe(200);
      const { task, log } = await releaseAndWait(slug);
      // The registry accepted the password as is (Docker pulled with it); the image has nothing
      // runnable, so the container cannot start: a failed task, nothing executed.
      expect(log).toContain(" as ci");
      expect(log).toContain("Downloaded newer image");
      expect(log).not.toMatch(/unauthori[sz]ed/i);
      expect(task.state).toBe("failed");
      expect(String(task.error)).toContain("/content.txt"); // the image's own command, not an injected one
      expect(log).not.toContain(auth.password);
      await docker.removeByLabel("ferry.project", slug);

      // Usernames with metacharacters (but no ':', which Basic authentication forbids): refused by the registry, cleanly.
      for (const username of payloads(markerDir)
        .filter((payload) => !payload.includes(":") && !/[\r\n]/.test(payload))
        .slice(0, 6)) {
        const patched = await test.call("PATCH", `/api/v1/feeds/${feed.body.slug}`, { username });
        expect(patched.status, JSON.stringify(patched.body)).toBe(200);
        const release = await test.call("POST", `/api/v1/projects/${slug}/releases`, {
          version: `9.0.${++releaseCount}`,
        });
        // The registry refuses the unknown user: a feed error (502), nothing run.
        expect(release.status, JSON.stringify(release.body)).toBe(502);
      }
      expectNoMarker(markerDir);
    });
  });

  it("ferry.yml fields through `ferry apply` (the real CLI)", async () => {
    const markerDir = newMarkerDir();
    const home = mkdtempSync(join(tmpdir(), "ferry-inj-home-"));
    markerDirs.push(home);
    const values = payloads(markerDir);
    const projectName = `apply-${randomBytes(3).toString("hex")}`;
    const yaml = JSON.stringify({
      // A CR is refused in descriptions since issue 11 (it rewrites a terminal line): every other payload goes in.
      project: { name: projectName, description: values.filter((value) => !value.includes("\r")).join(" ") },
      environments: ["dev"],
      lifecycle: { name: `lc-${projectName}`, phases: [{ environments: ["dev"], autoDeploy: true }] },
      feeds: [
        {
          name: `feed-${projectName}`,
          url: registry.url,
          username: values[0],
          passwordFrom: { env: "INJ_FEED_PASSWORD" },
        },
      ],
      variables: [
        ...values.map((value, index) => ({ name: `P${index}`, value })),
        { name: "Secret", sensitive: true, valueFrom: { env: "INJ_SECRET" } },
      ],
      steps: [
        {
          name: "show",
          kind: "script",
          config: {
            script: 'printf "%s\\n" "$@" "$SECRET"',
            env: { SECRET: "#{Secret}" },
            arguments: values.map((_, index) => `#{P${index}}`),
          },
        },
      ],
    }); // JSON is YAML
    const file = join(home, "ferry.yml");
    writeFileSync(file, yaml);
    const result = await runFerry(
      ["apply", "-f", file],
      isolatedEnv(home, {
        FERRY_URL: test.server.url,
        FERRY_API_KEY: test.apiKey,
        INJ_FEED_PASSWORD: oneLine(markerDir),
        INJ_SECRET: oneLine(markerDir),
      }),
    );
    expect(result.code, `${result.stdout}\n${result.stderr}`).toBe(0);
    const project = await test.call<{ slug: string }>("GET", `/api/v1/projects/${projectName}`);
    expect(project.status).toBe(200);
    projects.push(project.body.slug);
    const { task, log } = await releaseAndWait(project.body.slug);
    expect(task.state, log).toBe("succeeded");
    expect(log).toContain(`$(touch ${markerDir}/dollar)`);
    expectNoMarker(markerDir);
  });
});
