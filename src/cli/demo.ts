import { type Command, InvalidArgumentError } from "commander";
import type { FerryEnvironment } from "../config/env.js";
import { type TrafficSettings, trafficListen } from "../traffic/routers.js";
import { OperationError } from "./errors.js";
import { parsePort, stopOnSignals } from "./server.js";

type RuntimeChoice = "auto" | "docker" | "process";

function parseRuntime(value: string): RuntimeChoice {
  if (value === "auto" || value === "docker" || value === "process") return value;
  throw new InvalidArgumentError("use auto, docker or process");
}

export function addDemoCommand(program: Command, environment: () => FerryEnvironment): void {
  program
    .command("demo")
    .description(
      "run Ferry on embedded defaults (SQLite, this host as the target), deploy a demo web app dev → test → prod blue/green, then promote its next release through them under load",
    )
    .option("--port <port>", "port to listen on", parsePort, 8080)
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--data-dir <dir>", "data directory", ".ferry-demo")
    .option(
      "--runtime <runtime>",
      "what runs the app on a first run: auto (containers when the Docker engine on DOCKER_HOST, default unix:///var/run/docker.sock, answers; else processes), docker or process",
      parseRuntime,
      "auto",
    )
    .option("--stop", "stop the demo app's processes and the proxy, which outlive the demo's server, and exit")
    .action(
      async (options: { port: number; host: string; dataDir: string; runtime: RuntimeChoice; stop?: boolean }) => {
        const env = environment();
        if (options.stop) {
          await stopDemo(env, options.dataDir);
          return;
        }
        const [
          { startServer },
          demo,
          { generateApiKey },
          { insertApiKey },
          { trafficSettingsFromEnvironment },
          { dockerAnswers, pushDemoImage },
          { startDemoRegistry },
          { join },
          { allowingOrigin },
          { dockerSocketOf },
          { startDemoLoad },
        ] = await Promise.all([
          import("../server/start.js"),
          import("../server/demo.js"),
          import("../security/apiKeys.js"),
          import("../store/apiKeys.js"),
          import("../traffic/routers.js"),
          import("../server/demoImage.js"),
          import("../server/demoRegistry.js"),
          import("node:path"),
          import("../security/outboundGuard.js"),
          import("../runtimes/docker.js"),
          import("../server/demoLoad.js"),
        ]);
        // DOCKER_HOST names the engine, as for the docker CLI; checked before anything starts.
        const dockerSocket = dockerSocketOf(env.DOCKER_HOST);
        const docker = options.runtime === "process" ? false : await dockerAnswers(dockerSocket);
        if (options.runtime === "docker" && !docker) {
          throw new OperationError(
            `--runtime docker: no Docker engine answers on ${dockerSocket}${env.DOCKER_HOST ? " (DOCKER_HOST)" : ""}; start dockerd, point DOCKER_HOST at its socket (unix:///path), or use --runtime process`,
          );
        }
        // The demo's image registry, on a new port at every start (the demo's feed follows it).
        const registry = docker ? await startDemoRegistry(join(options.dataDir, "registry")) : undefined;
        const traffic = trafficSettingsFromEnvironment(env, options.dataDir);
        const server = await startServer({
          traffic,
          outbound: registry
            ? allowingOrigin(env.FERRY_OUTBOUND_ALLOW, new URL(registry.url))
            : env.FERRY_OUTBOUND_ALLOW,
          port: options.port,
          host: options.host,
          dataDir: options.dataDir,
          adminApiKey: env.FERRY_ADMIN_API_KEY,
          logLevel: env.FERRY_LOG_LEVEL === "info" ? "warn" : env.FERRY_LOG_LEVEL,
          runAs: env.FERRY_RUN_AS,
          runAsUids: env.FERRY_RUN_AS_UIDS,
          workDir: env.FERRY_WORK_DIR,
          dockerSocket,
          announce: () => {},
        });
        stopOnSignals(server);
        const write = (lines: string[]) => process.stdout.write(`${lines.join("\n")}\n`);
        const appDirectory = await demo.stageDemoApp(server.deployments, server.context);
        const seeded = await demo.seedDemo(
          server.context,
          appDirectory,
          registry ? { kind: "docker", registryUrl: registry.url } : { kind: "process" },
        );
        // What the first run chose stays: a store seeded for containers keeps deploying containers.
        const runtime = await demo.demoRuntimeOf(server.context, registry?.url);
        const front = trafficFront(traffic);
        // The sign-in first, so the dashboard can be opened to watch the deployments below live.
        const signIn = await demo.demoAdminSignIn(server.context);
        write([
          "",
          `Ferry demo: the server runs at ${server.url} (data in ${options.dataDir}${seeded ? ", demo project created" : ""}).`,
          `Dashboard:  ${server.url}/   sign in as ${signIn.username}, password ${signIn.password} (new at every start of the demo)`,
        ]);
        if (runtime === "docker" && registry) {
          // Built from this host's Node.js and pushed to the demo's registry once; a release pins it by digest.
          await pushDemoImage(dockerSocket, registry, demo.DEMO_REPOSITORY, demo.DEMO_IMAGE_TAG);
        } else if (runtime === "docker") {
          write([
            `The demo was set up with containers, but no Docker engine answers on ${dockerSocket} now: its deployments will fail.`,
          ]);
        }
        if (seeded) {
          const router = traffic.driver === "builtin" ? "ferry proxy" : traffic.driver;
          const printEnded = (deployment: { environment: string; state: string; taskId: string }) =>
            write([
              `  ${deployment.environment.padEnd(5)} ${deployment.state}${
                deployment.state === "succeeded" ? "" : ` — its log: ${server.url}/tasks/${deployment.taskId}`
              }`,
            ]);
          write([
            `Deploying release 1.0.0 of the demo app (examples/demo-app) dev → test → prod, blue/green through the ${router} router, ${
              runtime === "docker"
                ? `as containers (image ${registry?.host}/${demo.DEMO_REPOSITORY}:${demo.DEMO_IMAGE_TAG} from the demo's registry, Docker engine on ${dockerSocket})`
                : `as supervised processes${options.runtime === "auto" ? ` (no Docker engine answers on ${dockerSocket})` : ""}`
            }:`,
          ]);
          const first = await demo.deployDemoRelease(server.deployments, "the demo's first release", printEnded);
          if (first.deployments.every((deployment) => deployment.state === "succeeded")) {
            // The main job: the next release through every environment while users keep using each.
            write([
              `Release 1.1.0, promoted dev → test → prod blue/green while a load generator asks all three through the router (${DEMO_LOAD_CONNECTIONS} kept-alive connections each):`,
            ]);
            const load = startDemoLoad(
              front.probe,
              demo.DEMO_ENVIRONMENTS.map((environment) => demo.demoAppHost(environment)),
              DEMO_LOAD_CONNECTIONS,
            );
            const second = await demo
              .deployDemoRelease(server.deployments, "the demo's second release, promoted under load", printEnded)
              .catch(async (error: unknown) => {
                await load.stop();
                throw error;
              });
            const figures = await load.stop();
            const requests = figures.reduce((sum, each) => sum + each.requests, 0);
            const failed = figures.reduce((sum, each) => sum + each.failed, 0);
            const count = (value: number) => value.toLocaleString("en-US");
            write([
              `Requests while release ${second.version} was switched in: ${count(requests)}, failed ${count(failed)}${
                failed === 0 ? " (zero downtime)" : ""
              }`,
              ...figures.flatMap((each) => [
                `  ${each.host.padEnd(15)} ${count(each.requests)} requests, ${count(each.failed)} failed; answered by ${each.releases.join(" → ")}`,
                ...each.failures.map((failure) => `    ${failure}`),
              ]),
            ]);
          }
        }
        // A live colour stopped since the last run (ferry demo --stop, a reboot) is started again first.
        await server.reconciled;
        const answers = await Promise.all(
          demo.DEMO_ENVIRONMENTS.map(async (environment) => ({
            environment,
            answer: await askApp(front.probe, demo.demoAppHost(environment)),
          })),
        );
        // A fresh key per demo run, so the user can try the CLI at once; it is random, never a default.
        const key = generateApiKey();
        await insertApiKey(server.context, key, { name: "demo session", role: "admin" });
        write([
          "",
          `Dashboard:  ${server.url}/   (signed in as above: dev, test and prod of project ${demo.DEMO_PROJECT}, live)`,
          "The app, through the router:",
          ...answers.map(
            ({ environment, answer }) =>
              `  ${environment.padEnd(5)} http://${demo.demoAppHost(environment)}${front.port}/   ${answer}`,
          ),
          `  (where *.localhost does not resolve: curl -H 'Host: ${demo.demoAppHost("dev")}' ${front.probe}/)`,
          "The CLI, in another terminal:",
          `  export FERRY_URL=${server.url} FERRY_API_KEY=${key}`,
          `  bin/ferry release create --project ${demo.DEMO_PROJECT} --wait             # the next release, to dev, with zero downtime`,
          `  bin/ferry promote --project ${demo.DEMO_PROJECT} --to test --wait`,
          `  bin/ferry rollback --project ${demo.DEMO_PROJECT} --env dev --wait          # back to the retained colour`,
          "",
          "Ctrl-C stops the server; the router and the app keep serving, as they would in production.",
          "",
        ]);
      },
    );
}

/** Kept-alive connections per environment of the demo's load generator (6 in all: the host's cores go to the deployments). */
const DEMO_LOAD_CONNECTIONS = 2;

/** Where the router serves: the origin to probe from here, and the ":port" part of the app's URLs. */
function trafficFront(traffic: TrafficSettings): { probe: string; port: string } {
  const listen = trafficListen(traffic);
  const colon = listen.lastIndexOf(":");
  const host = listen.slice(0, colon).replace(/^\[|\]$/g, "");
  const port = listen.slice(colon + 1);
  const reachable = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  return {
    probe: `http://${reachable.includes(":") ? `[${reachable}]` : reachable}:${port}`,
    port: port === "80" ? "" : `:${port}`,
  };
}

/**
 * What the app answers through the router for a host: its first line, or why there is no
 * answer. Asked once: start-up reconciliation, awaited before, waits until a live colour it
 * started again passes its health check (ADR 0072).
 */
async function askApp(origin: string, host: string): Promise<string> {
  const { request } = await import("undici");
  try {
    const response = await request(`${origin}/`, { headers: { host }, headersTimeout: 5000, bodyTimeout: 5000 });
    const text = (await response.body.text()).trim().split("\n")[0] ?? "";
    if (response.statusCode === 200) return `→ ${text.slice(0, 120)}`;
    return `→ HTTP ${response.statusCode}${response.statusCode === 404 ? " (not deployed)" : ""}`;
  } catch (error) {
    return `→ no answer (${(error as Error).message})`;
  }
}

/**
 * Stops what the demo left serving: its app's processes (stopped, not removed: the next
 * `ferry demo` starts the live ones again) and the builtin proxy of its data directory.
 */
async function stopDemo(env: FerryEnvironment, dataDir: string): Promise<void> {
  const [
    { readFile },
    { join },
    { prepareWorkRoot, resolveLocalUser },
    { localProcesses },
    { DEMO_PROJECT },
    { dockerAnswers },
    { dockerSocketOf, localDocker },
  ] = await Promise.all([
    import("node:fs/promises"),
    import("node:path"),
    import("../runtimes/localUser.js"),
    import("../runtimes/process.js"),
    import("../server/demo.js"),
    import("../server/demoImage.js"),
    import("../runtimes/docker.js"),
  ]);
  // A DOCKER_HOST that is no unix socket is refused before anything is stopped.
  const dockerSocket = dockerSocketOf(env.DOCKER_HOST);
  // Where the server keeps the work root for these settings (src/server/start.ts).
  const localUser = resolveLocalUser(env.FERRY_RUN_AS, undefined, env.FERRY_RUN_AS_UIDS);
  const workRoot =
    localUser.kind === "user" || localUser.kind === "perTask"
      ? await prepareWorkRoot(dataDir, env.FERRY_WORK_DIR)
      : join(dataDir, "work");
  const processes = localProcesses(workRoot, localUser);
  const running = (await processes.listByLabel("ferry.project", DEMO_PROJECT)).filter(
    (instance) => instance.state !== "exited",
  );
  for (const instance of running) await processes.stop(instance.name);
  // Containers (a demo set up with Docker): stopped, not removed, like the processes.
  let containers = 0;
  if (await dockerAnswers(dockerSocket)) {
    const docker = localDocker(dockerSocket);
    for (const container of await docker.listByLabel("ferry.project", DEMO_PROJECT)) {
      if (container.state !== "running") continue;
      await docker.stopContainer(container.name);
      containers++;
    }
  }
  const stateDir = env.FERRY_PROXY_STATE_DIR ?? join(dataDir, "proxy");
  const proxyPid = Number((await readFile(join(stateDir, "proxy.pid"), "utf8").catch(() => "")).trim());
  let proxy = false;
  if (proxyPid > 0) {
    try {
      process.kill(proxyPid, "SIGTERM");
      proxy = true;
    } catch {
      // Not running.
    }
  }
  process.stdout.write(
    `Stopped ${running.length} process(es) and ${containers} container(s) of the demo app${proxy ? ` and the ferry proxy (pid ${proxyPid})` : ""}; the data in ${dataDir} stays (npm run demo brings them back).\n`,
  );
}
