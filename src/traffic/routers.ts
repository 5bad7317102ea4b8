import { join } from "node:path";
import type { FerryEnvironment } from "../config/env.js";
import { InputError } from "../domain/errors.js";
import { connectEmbeddedProxy, type EmbeddedProxyOptions } from "./builtin.js";
import type { NginxRouterOptions } from "./nginx.js";
import type { Router } from "./router.js";

/** Which Router the server uses for blue/green, from its settings (FERRY_ROUTER and friends). */
export type TrafficSettings = (
  | { driver: "builtin"; proxy: EmbeddedProxyOptions }
  | { driver: "nginx"; nginx: NginxRouterOptions }
) & {
  /** Publish every switch to etcd as well (FERRY_ETCD_ENDPOINT). */
  etcdEndpoint?: string | undefined;
};

/**
 * Connects the configured Router: the builtin `ferry proxy` (started when none runs) or
 * nginx, wrapped by the etcd publisher when an endpoint is set. An etcd write that fails
 * after a switch does not fail the deployment (the router is the truth); it is logged,
 * and the routes are republished on the next connect.
 */
async function connectRouter(settings: TrafficSettings, log: (message: string) => void): Promise<Router> {
  let router: Router;
  if (settings.driver === "nginx") {
    const { NginxRouter } = await import("./nginx.js");
    router = new NginxRouter(settings.nginx);
  } else {
    router = await connectEmbeddedProxy(settings.proxy, log);
  }
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

/**
 * A Router connected on first use and shared afterwards; a failed connect is retried on
 * the next use rather than remembered.
 */
export function lazyRouter(settings: TrafficSettings, log: (message: string) => void) {
  let connecting: Promise<Router> | undefined;
  return {
    get(): Promise<Router> {
      connecting ??= connectRouter(settings, log).catch((error: unknown) => {
        connecting = undefined;
        throw error;
      });
      return connecting;
    },
    /** The Router when a connect already started; never connects by itself. */
    async connected(): Promise<Router | undefined> {
      return connecting?.catch(() => undefined);
    },
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

/** The server's traffic settings from FERRY_ROUTER, FERRY_PROXY_*, FERRY_NGINX_* and FERRY_ETCD_ENDPOINT. */
export function trafficSettingsFromEnvironment(env: FerryEnvironment, dataDir: string): TrafficSettings {
  if (env.FERRY_ROUTER === "nginx") {
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
      etcdEndpoint: env.FERRY_ETCD_ENDPOINT,
    };
  }
  return {
    driver: "builtin",
    proxy: { stateDir: env.FERRY_PROXY_STATE_DIR ?? join(dataDir, "proxy"), listen: env.FERRY_PROXY_LISTEN },
    etcdEndpoint: env.FERRY_ETCD_ENDPOINT,
  };
}
