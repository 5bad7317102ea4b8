import { defineConfig } from "vitest/config";

/**
 * Files that assert zero failed requests under load, or kill servers at random moments:
 * they run one at a time, after the rest, so that no other file's work on the same cores
 * shifts their timing. Every other file waits mostly on Docker, databases and child
 * processes rather than the CPU, and runs three at a time: with two, those files took ~12
 * of the suite's 21 minutes on CI's two cores while the cores waited. (Three once surfaced
 * an agent's client abort as an uncaught error in the server; a request now always has a
 * listener for it, src/api/app.ts.)
 */
const alone = [
  "test/agentBlueGreen.e2e.test.ts",
  "test/blueGreen.crash.e2e.test.ts",
  "test/blueGreen.test.ts",
  "test/canary.test.ts",
  "test/canaryHaproxy.test.ts",
  "test/compose.e2e.test.ts",
  "test/composeRemote.e2e.test.ts",
  "test/dataPlane.e2e.test.ts",
  "test/demo.e2e.test.ts",
  "test/haproxy.test.ts",
  "test/haproxyCanary.test.ts",
  "test/haproxyRemote.e2e.test.ts",
  "test/nginx.test.ts",
  "test/proxyWorkers.test.ts",
  "test/operationsSteps.e2e.test.ts",
  "test/processBlueGreen.crash.e2e.test.ts",
  "test/processBlueGreen.test.ts",
  "test/proxy.test.ts",
  "test/proxyCanary.test.ts",
  "test/proxyMaintenance.test.ts",
  "test/remoteProcess.e2e.test.ts",
  "test/restartProcess.e2e.test.ts",
  "test/routeModes.test.ts",
  "test/ui.traffic.e2e.test.ts",
];

export default defineConfig({
  test: {
    globalSetup: ["test/helpers/globalSetup.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: {
          name: "together",
          include: ["src/**/*.test.ts", "test/**/*.test.ts"],
          exclude: alone,
          maxWorkers: 3,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: "alone",
          include: alone,
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
