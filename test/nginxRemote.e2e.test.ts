import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { expect } from "vitest";
import { writeNginxConfig } from "./helpers/nginx.js";
import { waitUntil } from "./helpers/remoteHosts.js";
import { describeRemoteRouter } from "./helpers/remoteRouterE2e.js";

/**
 * nginx as a remote host's router (issue 12 part 4, ADR 0039): Debian's nginx runs on the
 * host with a prefix, pid file and config of its own; Ferry writes its files, checks them
 * with `nginx -t`, starts and reloads that nginx only through the SSH transport (`ferry
 * nginx-router` on the host). The scenario is the one every remote router goes through
 * (helpers/remoteRouterE2e.ts); here the host "reboots" (nginx stopped) while the server is down.
 */
describeRemoteRouter({
  driver: "nginx",
  label: "nginx",
  title: "blue/green over SSH on a host whose router is its own nginx (real sshd and nginx there; under load)",
  short: "ngx",
  resourcePrefix: "ferry-nginx-remote-",
  prepare(dir) {
    const nginx = writeNginxConfig(dir);
    const masterPid = (): number | undefined => {
      try {
        const pid = Number(readFileSync(nginx.pidFile, "utf8").trim());
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("master process") ? pid : undefined;
      } catch {
        return undefined;
      }
    };
    return {
      settings: nginx,
      masterPid,
      async stop() {
        const pid = masterPid();
        if (pid === undefined) return;
        process.kill(pid, "SIGTERM");
        await waitUntil(() => masterPid() === undefined, "nginx stopped", 10_000);
      },
      checkFirst(routeHost) {
        expect(readdirSync(nginx.sitesDir)).toContain(`ferry-host-${routeHost}.conf`);
        expect(readFileSync(join(nginx.sitesDir, `ferry-host-${routeHost}.conf`), "utf8")).toContain(
          `server_name ${routeHost};`,
        );
      },
      // The host's nginx was reloaded, not restarted (the same master, checked by the scenario).
      checkSwitched(log, kind) {
        if (kind === "deployment") expect(log).toMatch(/nginx/);
      },
    };
  },
});
