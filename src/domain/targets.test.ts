import { describe, expect, it } from "vitest";
import { createTargetSchema, targetRouterSchema, updateTargetSchema } from "./targets.js";

const sshTarget = {
  name: "web-1",
  environments: ["prod"],
  transport: "ssh",
  ssh: { host: "10.0.0.5", user: "deploy", privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n" },
};

/** The messages of a failed parse, by field path. */
function problems(result: { success: boolean; error?: { issues: { path: PropertyKey[]; message: string }[] } }) {
  return Object.fromEntries((result.error?.issues ?? []).map((issue) => [issue.path.join("."), issue.message]));
}

describe("a target's router", () => {
  it("defaults everything but the driver", () => {
    expect(targetRouterSchema.parse({ driver: "builtin" })).toEqual({
      driver: "builtin",
      listen: "0.0.0.0:80",
      adminPort: 7999,
      command: "ferry",
    });
    expect(
      targetRouterSchema.parse({
        driver: "builtin",
        listen: "[::]:8080",
        adminPort: 9000,
        stateDir: "/var/lib/ferry/proxy",
        command: "/usr/local/bin/ferry",
      }),
    ).toMatchObject({ listen: "[::]:8080", stateDir: "/var/lib/ferry/proxy" });
  });

  it("refuses what it cannot run or would read otherwise, naming the field and what to write", () => {
    const refused = problems(
      targetRouterSchema.safeParse({
        driver: "builtin",
        listen: "example.com:80",
        adminPort: 70000,
        stateDir: "relative/dir",
        command: "--help",
      }),
    );
    expect(refused.listen).toMatch(/ADDRESS:PORT: 0\.0\.0\.0:80/);
    expect(refused.adminPort).toMatch(/1 to 65535/);
    expect(refused.stateDir).toMatch(/absolute path/);
    expect(refused.command).toMatch(/not starting with '-'/);
    for (const workers of [0, 65, 1.5]) {
      expect(problems(targetRouterSchema.safeParse({ driver: "builtin", workers })).workers, String(workers)).toMatch(
        /processes serve traffic: a whole number from 1 to 64/,
      );
    }
    expect(targetRouterSchema.parse({ driver: "builtin", workers: 4 })).toMatchObject({ workers: 4 });
    expect(problems(targetRouterSchema.safeParse({ driver: "builtin", stateDir: "/var/../etc" })).stateDir).toMatch(
      /without \. or \.\. segments/,
    );
    expect(problems(targetRouterSchema.safeParse({ driver: "builtin", listen: "0.0.0.0:0" })).listen).toBeDefined();
    expect(problems(targetRouterSchema.safeParse({ driver: "builtin", extra: 1 }))).not.toEqual({});
    expect(problems(targetRouterSchema.safeParse({ driver: "traefik" })).driver).toMatch(
      /choose driver "builtin" \(ferry proxy.*"nginx".*or "haproxy"/,
    );
  });

  it("haproxy on the host: its state dir is required, a short path HAProxy's config can hold", () => {
    expect(problems(targetRouterSchema.safeParse({ driver: "haproxy" })).stateDir).toBeDefined();
    expect(
      problems(targetRouterSchema.safeParse({ driver: "haproxy", stateDir: "/var/lib/ferry/ha proxy" })).stateDir,
    ).toMatch(/only \(it goes into HAProxy's config\)/);
    expect(
      problems(targetRouterSchema.safeParse({ driver: "haproxy", stateDir: `/var/${"x".repeat(100)}` })).stateDir,
    ).toMatch(/runtime API socket/);
    expect(targetRouterSchema.parse({ driver: "haproxy", stateDir: "/var/lib/ferry/haproxy" })).toEqual({
      driver: "haproxy",
      stateDir: "/var/lib/ferry/haproxy",
      listen: "0.0.0.0:80",
      binary: "haproxy",
      command: "ferry",
    });
  });

  it("nginx on the host: its config, sites dir and pid file are required, each a path nginx's config can hold", () => {
    const missing = problems(targetRouterSchema.safeParse({ driver: "nginx" }));
    expect(Object.keys(missing).sort()).toEqual(["config", "pidFile", "sitesDir"]);
    expect(
      targetRouterSchema.parse({
        driver: "nginx",
        config: "/etc/nginx/nginx.conf",
        sitesDir: "/etc/nginx/ferry",
        pidFile: "/run/nginx.pid",
      }),
    ).toEqual({
      driver: "nginx",
      listen: "0.0.0.0:80",
      config: "/etc/nginx/nginx.conf",
      sitesDir: "/etc/nginx/ferry",
      pidFile: "/run/nginx.pid",
      binary: "nginx",
      clientKeepalive: false,
      command: "ferry",
    });
    const refused = problems(
      targetRouterSchema.safeParse({
        driver: "nginx",
        config: "etc/nginx.conf",
        sitesDir: "/etc/nginx/ferry sites;",
        pidFile: "/run/../nginx.pid",
        binary: "-c",
        adminPort: 7999,
      }),
    );
    expect(refused.config).toMatch(/absolute path/);
    expect(refused.sitesDir).toMatch(/goes into nginx's config/);
    expect(refused.pidFile).toMatch(/without \. or \.\. segments/);
    expect(refused.binary).toMatch(/the nginx program on the host.*not starting with '-'/);
    // A builtin-only field is refused, not dropped.
    expect(refused[""] ?? refused.adminPort).toBeDefined();
  });

  it("belongs to a remote target: a local one uses the server's router", () => {
    expect(createTargetSchema.safeParse({ ...sshTarget, router: { driver: "builtin" } }).success).toBe(true);
    const local = createTargetSchema.safeParse({ name: "here", environments: ["prod"], router: { driver: "builtin" } });
    expect(problems(local).router).toMatch(/a local target uses the server's own router \(FERRY_ROUTER/);
  });

  it("is replaced or removed (null) by an update", () => {
    expect(updateTargetSchema.parse({ router: null })).toEqual({ router: null });
    expect(updateTargetSchema.parse({ router: { driver: "builtin", listen: "127.0.0.1:8000" } })).toMatchObject({
      router: { driver: "builtin", listen: "127.0.0.1:8000", adminPort: 7999 },
    });
  });
});
