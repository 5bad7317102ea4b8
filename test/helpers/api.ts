import { expect } from "vitest";
import type { TestServer } from "./server.js";

/**
 * `test.call` that fails the test unless the answer has `status` or, with none given, is a
 * success; the failure shows the answer (and, for a success expected, the request). Returns
 * the answer's body.
 */
export async function callExpecting<T = Record<string, unknown>>(
  test: TestServer,
  method: string,
  path: string,
  body?: unknown,
  status?: number,
): Promise<T> {
  const response = await test.call<T>(method, path, body);
  if (status !== undefined) expect(response.status, JSON.stringify(response.body)).toBe(status);
  else expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
  return response.body;
}
