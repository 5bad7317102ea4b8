import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { FerryEnvironment } from "../config/env.js";
import { InputError } from "../domain/errors.js";
import type { TargetRouter } from "../domain/targets.js";
import { TaskFailure } from "../engine/types.js";
import type { Transport } from "../transports/types.js";
import type { EmbeddedProxyOptions } from "./builtin.js";
import type { HaproxyRouterOptions } from "./haproxy.js";
import { builtinRouterOnHost, type HostRouter } from "./hostRouter.js";
import type { NginxRouterOptions } from "./nginx.js";
import { remoteRouterOnHost } from "./remoteRouter.js";
import type { Router } from "./router.js";

/** Which Router a host uses for blue/green, from its settings (FERRY_ROUTER and friends). */
export type TrafficSettings = (
  | { driver: "builtin"; proxy: EmbeddedProxyOptions }
  | { driver: "nginx"; nginx: NginxRouterOptions }
  | { driver: "haproxy"; haproxy: HaproxyRouterOptions }
) & {
  /** Publish every switch to etcd as well (FERRY_ETCD_ENDPOINT). */
  etcdEndpoint?: string | undefined;
};

type DriverName = TrafficSettings["driver"];
type SettingsOf<D extends DriverName> = Extract<TrafficSettings, { driver: D }>;

/**
 * One traffic switch Ferry can drive: how its settings are read, how it connects, and
 * whether an earlier run left routes (so the server brings them back at start). A new
 * driver is one file implementing Router plus one entry here.
 */
interface RouterDriver<D extends DriverName> {
  fromEnvironment(env: FerryEnvironment, dataDir: string): Omit<SettingsOf<D>, "etcdEndpoint">;
  connect(settings: SettingsOf<D>, log: (message: string) => void): Promise<Router>;
  hasRoutes(settings: SettingsOf<D>): boolean;
  /** Where the router takes traffic ("127.0.0.1:8000"). */
  listen(settings: SettingsOf<D>): string;
  /**
   * The driver on a remote target's host, driven only through the host's Transport (a
   * process, HTTP from the host), so any transport gets it. Absent: the driver runs only on
   * the server's own host.
   */
  onHost?(
    transport: Transport,
    settings: Extract<TargetRouter, { driver: D }>,
    targetName: string,
    log: (message: string) => void,
  ): HostRouter;
}

const drivers: { [D in DriverName]: RouterDriver<D> } = {
  builtin: {
    fromEnvironment: (env, dataDir) => ({
      driver: "builtin",
      proxy: {
        stateDir: env.FERRY_PROXY_STATE_DIR ?? join(dataDir, "proxy"),
        listen: env.FERRY_PROXY_LISTEN,
        ...(env.FERRY_PROXY_WORKERS > 1 && { workers: env.FERRY_PROXY_WORKERS }),
      },
    }),
    connect: async (settings, log) => (await import("./builtin.js")).connectEmbeddedProxy(settings.proxy, log),
    hasRoutes: (settings) => existsSync(join(settings.proxy.stateDir, "routes.json")),
    listen: (settings) => settings.proxy.listen,
    onHost: builtinRouterOnHost,
  },
  nginx: {
    fromEnvironment: (env) => {
      const missing = (
        ["FERRY_NGINX_CONFIG", "FERRY_NGINX_SITES_DIR", "FERRY_NGINX_PID_FILE", "FERRY_NGINX_LISTEN"] as const
      ).filter((name) => env[name] === undefined);
      if (missing.length > 0) {
        throw new InputError(
          `FERRY_ROUTER=nginx needs ${missing.join(", ")}: the main nginx.conf, the directory it includes inside http {}, its pid file and the address the routes listen on`,
        );
      }
      return {
        driver: "nginx",
        nginx: {
          nginx: env.FERRY_NGINX_BINARY,
          config: env.FERRY_NGINX_CONFIG as string,
          sitesDir: env.FERRY_NGINX_SITES_DIR as string,
          pidFile: env.FERRY_NGINX_PID_FILE as string,
          listen: env.FERRY_NGINX_LISTEN as string,
        },
      };
    },
    connect: async (settings) => new (await import("./nginx.js")).NginxRouter(settings.nginx),
    onHost: (transport, { binary, config, sitesDir, pidFile, listen, clientKeepalive, command }, targetName) =>
      remoteRouterOnHost(
        transport,
        { driver: "nginx", settings: { binary, config, sitesDir, pidFile, listen, clientKeepalive }, command },
        targetName,
      ),
    listen: (settings) => settings.nginx.listen,
    hasRoutes: (settings) => {
      try {
        return readdirSync(settings.nginx.sitesDir).some((name) => name.startsWith("ferry-host-"));
      } catch {
        return false;
      }
    },
  },
  // Ferry's own HAProxy, driven through its runtime API (ADR 0048); on a remote host through
  // `ferry haproxy-router` run there.
  haproxy: {
    fromEnvironment: (env, dataDir) => ({
      driver: "haproxy",
      haproxy: {
        haproxy: env.FERRY_HAPROXY_BINARY,
        stateDir: env.FERRY_HAPROXY_STATE_DIR ?? join(dataDir, "haproxy"),
        listen: env.FERRY_HAPROXY_LISTEN,
      },
    }),
    connect: async (settings, log) => (await import("./haproxy.js")).connectHaproxyRouter(settings.haproxy, log),
    hasRoutes: (settings) => haproxyHasRoutes(settings.haproxy.stateDir),
    onHost: (transport, { binary, stateDir, listen, command }, targetName) =>
      remoteRouterOnHost(transport, { driver: "haproxy", settings: { binary, stateDir, listen }, command }, targetName),
    listen: (settings) => settings.haproxy.listen,
  },
};

/** Whether Ferry's haproxy.cfg records routes (read here so the driver's module loads only on use). */
function haproxyHasRoutes(stateDir: string): boolean {
  try {
    return readFileSync(join(stateDir, "haproxy.cfg"), "utf8").includes("\n# ferry-route ");
  } catch {
    return false;
  }
}

function driverOf<D extends DriverName>(settings: SettingsOf<D>): RouterDriver<D> {
  return drivers[settings.driver as D] as RouterDriver<D>;
}

/** Whether the router has routes from an earlier run (so it must be brought back at start). */
export function hasRoutes(settings: TrafficSettings): boolean {
  return driverOf(settings).hasRoutes(settings);
}

/** Where the configured router takes traffic, as its settings name it ("127.0.0.1:8000"). */
export function trafficListen(settings: TrafficSettings): string {
  return driverOf(settings).listen(settings);
}

/**
 * Connects the configured Router, wrapped by the etcd publisher when an endpoint is set.
 * An etcd write that fails after a switch does not fail the deployment (the router is the
 * truth); it is logged, and the routes are republished on the next connect.
 */
async function connectRouter(settings: TrafficSettings, log: (message: string) => void): Promise<Router> {
  const router = await driverOf(settings).connect(settings, log);
  if (settings.etcdEndpoint === undefined) return router;
  const { EtcdClient, withEtcdPublisher } = await import("./etcd.js");
  const etcd = new EtcdClient(settings.etcdEndpoint);
  const publishing = withEtcdPublisher(router, etcd, {
    onPublished: (publication) =>
      log(`etcd: route ${publication.route} → ${publication.upstream} at revision ${publication.revision}`),
    onError: (error) => log(`etcd: ${error.message}`),
  });
  await publishing
    .republish()
    .catch((error: unknown) => log(`etcd: could not republish the routes: ${(error as Error).message}`));
  const close = publishing.close.bind(publishing);
  return Object.assign(publishing, {
    close: async () => {
      await close();
      await etcd.close();
    },
  });
}

/** A host's Router, connected on first use; see lazyRouter. */
export interface LazyRouter {
  get(): Promise<Router>;
  /** The Router when a connect already started; never connects by itself. */
  connected(): Promise<Router | undefined>;
  /** The Router when it is in use: connected, or with routes from an earlier run (then it connects). */
  inUse(): Promise<Router | undefined>;
  close(): Promise<void>;
}

/**
 * A Router connected on first use and shared afterwards; a failed connect is retried on
 * the next use rather than remembered.
 */
export function lazyRouter(settings: TrafficSettings, log: (message: string) => void): LazyRouter {
  let connecting: Promise<Router> | undefined;
  const get = (): Promise<Router> => {
    connecting ??= connectRouter(settings, log).catch((error: unknown) => {
      connecting = undefined;
      throw error;
    });
    return connecting;
  };
  const connected = async () => connecting?.catch(() => undefined);
  return {
    get,
    connected,
    inUse: async () => (await connected()) ?? (hasRoutes(settings) ? get() : undefined),
    async close(): Promise<void> {
      const router = await connecting?.catch(() => undefined);
      await router?.close();
    },
  };
}

/** The builtin proxy, its state in <data-dir>/proxy, serving on 127.0.0.1:8000. */
export function defaultTrafficSettings(dataDir: string): TrafficSettings {
  return { driver: "builtin", proxy: { stateDir: join(dataDir, "proxy"), listen: "127.0.0.1:8000" } };
}

/** The server's traffic settings from FERRY_ROUTER, its driver's FERRY_* variables and FERRY_ETCD_ENDPOINT. */
export function trafficSettingsFromEnvironment(env: FerryEnvironment, dataDir: string): TrafficSettings {
  const name = env.FERRY_ROUTER;
  if (!Object.hasOwn(drivers, name)) {
    throw new InputError(`FERRY_ROUTER=${name}: choose one of ${Object.keys(drivers).join(", ")}`);
  }
  const driver = drivers[name as DriverName] as RouterDriver<DriverName>;
  return { ...driver.fromEnvironment(env, dataDir), etcdEndpoint: env.FERRY_ETCD_ENDPOINT } as TrafficSettings;
}

/**
 * The router a remote target's settings choose, on that host, from the same registry of
 * drivers as the server's own: one connection per host, made on first use.
 */
export function hostRouter(
  transport: Transport,
  settings: TargetRouter,
  targetName: string,
  log: (message: string) => void,
): HostRouter {
  // Each driver's onHost takes its own variant of the settings, which the driver name picks.
  const driver = drivers[settings.driver] as RouterDriver<typeof settings.driver>;
  if (!driver.onHost) {
    throw new TaskFailure(
      `the ${settings.driver} router cannot run on a remote host (target '${targetName}'); use the builtin one there`,
    );
  }
  return driver.onHost(transport, settings, targetName, log);
}
