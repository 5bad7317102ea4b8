import type { Command } from "commander";
import type { FerryEnvironment } from "../config/env.js";
import { parsePort, stopOnSignals } from "./server.js";

export function addDemoCommand(program: Command, environment: () => FerryEnvironment): void {
  program
    .command("demo")
    .description("run Ferry on embedded defaults (SQLite, local target) with a demo project")
    .option("--port <port>", "port to listen on", parsePort, 8080)
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--data-dir <dir>", "data directory", ".ferry-demo")
    .action(async (options: { port: number; host: string; dataDir: string }) => {
      const env = environment();
      const [{ startServer }, { seedDemo }, { generateApiKey }, { insertApiKey }] = await Promise.all([
        import("../server/start.js"),
        import("../server/demo.js"),
        import("../security/apiKeys.js"),
        import("../store/apiKeys.js"),
      ]);
      const { trafficSettingsFromEnvironment } = await import("../traffic/routers.js");
      const server = await startServer({
        traffic: trafficSettingsFromEnvironment(env, options.dataDir),
        outbound: env.FERRY_OUTBOUND_ALLOW,
        port: options.port,
        host: options.host,
        dataDir: options.dataDir,
        adminApiKey: env.FERRY_ADMIN_API_KEY,
        logLevel: env.FERRY_LOG_LEVEL === "info" ? "warn" : env.FERRY_LOG_LEVEL,
        announce: () => {},
      });
      stopOnSignals(server);
      const seeded = await seedDemo(server.context);
      if (seeded) {
        // A first release, which the lifecycle deploys to dev on its own: the demo shows a deployment at once.
        const { createRelease } = await import("../store/releases.js");
        const { autoDeployNewRelease } = await import("../engine/deploymentRequests.js");
        const release = await createRelease(
          server.context,
          "hello",
          { notes: "the demo's first release", images: {} },
          "demo",
        );
        await autoDeployNewRelease(server.deployments, "hello", release.version, "demo");
      }
      // A fresh key per demo run, so the user can try the CLI at once; it is random, never a default.
      const key = generateApiKey();
      await insertApiKey(server.context, key, { name: "demo session", role: "admin" });
      process.stdout.write(
        [
          "",
          `Ferry demo is running at ${server.url} (data in ${options.dataDir}${seeded ? ", demo project created" : ""}).`,
          "In another terminal:",
          "",
          `  export FERRY_URL=${server.url} FERRY_API_KEY=${key}`,
          "  bin/ferry project list",
          "  bin/ferry lifecycle show default",
          "  bin/ferry var list --project hello",
          "  bin/ferry task list                                   # release 0.0.0 was deployed to dev",
          "  bin/ferry release create --project hello --wait       # the next release, deployed to dev",
          "  bin/ferry promote --project hello --to test --wait",
          "",
          "Stop it with Ctrl-C.",
          "",
        ].join("\n"),
      );
    });
}
