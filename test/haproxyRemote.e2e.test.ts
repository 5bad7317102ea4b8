import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect } from "vitest";
import { childrenOf, isRunning } from "./helpers/haproxy.js";
import { waitUntil } from "./helpers/remoteHosts.js";
import { describeRemoteRouter } from "./helpers/remoteRouterE2e.js";

/**
 * HAProxy as a remote host's router (issue 17 part 3, ADR 0048): Ferry writes haproxy.cfg,
 * starts Debian's HAProxy and switches it through its runtime API, only through the SSH
 * transport (`ferry haproxy-router` on the host). The scenario is the one every remote
 * router goes through (helpers/remoteRouterE2e.ts); here a switch must not even reload (the
 * same worker throughout), and the host's HAProxy is killed with -9 while the server is down.
 */
describeRemoteRouter({
  driver: "haproxy",
  label: "HAProxy",
  title: "blue/green over SSH on a host whose router is a HAProxy Ferry runs there (real sshd and HAProxy; under load)",
  short: "hx",
  resourcePrefix: "fhx-remote-",
  prepare(stateDir) {
    const masterPid = (): number | undefined => {
      try {
        const pid = Number(readFileSync(join(stateDir, "haproxy.pid"), "utf8").trim());
        return isRunning(pid) && readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("haproxy") ? pid : undefined;
      } catch {
        return undefined;
      }
    };
    const workerPids = () => {
      const pid = masterPid();
      return pid === undefined ? [] : childrenOf(pid).filter(isRunning);
    };
    let workers: number[] = [];
    return {
      settings: { stateDir },
      masterPid,
      async stop(crash) {
        const pid = masterPid();
        if (pid === undefined) return;
        for (const each of [pid, ...workerPids()]) process.kill(each, crash ? "SIGKILL" : "SIGTERM");
        await waitUntil(() => masterPid() === undefined, "haproxy stopped", 10_000);
      },
      checkFirst(routeHost) {
        expect(readFileSync(join(stateDir, "haproxy.cfg"), "utf8")).toContain(
          `var(txn.ferry_host) -m str ${routeHost}`,
        );
        workers = workerPids();
      },
      // Switched through the runtime API: the same worker, no reload.
      checkSwitched() {
        expect(workerPids()).toEqual(workers);
      },
    };
  },
});
