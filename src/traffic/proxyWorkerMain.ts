import { runProxyWorker } from "./proxyWorkers.js";

/** The script node:cluster runs for each worker of `ferry proxy --workers N` (ADR 0055). */
runProxyWorker();
