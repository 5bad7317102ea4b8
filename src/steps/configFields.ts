import { z } from "zod";
import { ENV_NAME_HINT } from "../runtimes/docker.js";

/** How long a step may run, in seconds: one second to a day, `defaultSeconds` when absent. */
export function timeoutSecondsSchema(defaultSeconds: number) {
  return z
    .number()
    .int()
    .min(1)
    .max(24 * 3600)
    .default(defaultSeconds);
}

/** Environment variables for a container: names the engine accepts, values up to 64 KiB (each a template). */
export const containerEnvSchema = z
  .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,254}$/, { message: ENV_NAME_HINT }), z.string().max(65_536))
  .default({});
