import { join } from "node:path";
import type { FerryEnvironment } from "../config/env.js";
import { connectEmbeddedProxy, type EmbeddedProxyOptions } from "./builtin.js";
import type { Router } from "./router.js";

/** Which Router the server uses for blue/green, from its settings (FERRY_ROUTER and friends). */
export type TrafficSettings = { driver: "builtin"; proxy: EmbeddedProxyOptions } & {
  /** Publish every switch to etcd as well (FERRY_ETCD_ENDPOINT). */
  etcdEndpoint?: string | undefined;
};

/** Connects the configured Router (starting the embedded `ferry proxy` when it is the builtin one and none runs). */
export async function connectRouter(settings: TrafficSettings, log: (message: string) => void): Promise<Router> {
  return connectEmbeddedProxy(settings.proxy, log);
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
  return {
    driver: "builtin",
    proxy: { stateDir: env.FERRY_PROXY_STATE_DIR ?? join(dataDir, "proxy"), listen: env.FERRY_PROXY_LISTEN },
    etcdEndpoint: env.FERRY_ETCD_ENDPOINT,
  };
}
