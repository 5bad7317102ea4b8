import type { Page } from "playwright-core";
import { afterEach, expect } from "vitest";
import { callExpecting } from "./api.js";
import { accessibilityViolations, type Browser, describeViolations } from "./browser.js";
import type { TestServer } from "./server.js";

/*
 * What the dashboard's end-to-end tests (test/ui*.e2e.test.ts) each did for themselves:
 * calling the API as set-up, signing in on the page, checking a page with axe-core, and
 * failing a test whose pages logged an error.
 */

/** `test.call` that fails the test unless the answer is a success, naming the request and the answer. */
export function callOk<T = Record<string, unknown>>(
  test: TestServer,
  method: string,
  path: string,
  body?: unknown,
): Promise<T> {
  return callExpecting<T>(test, method, path, body);
}

/** Fails the test with axe-core's serious and critical findings on what `page` shows; `what` names the page. */
export async function expectPageAccessible(page: Page, what: string): Promise<void> {
  const violations = await accessibilityViolations(page);
  expect(violations, `${what}:\n${describeViolations(violations)}`).toEqual([]);
}

/** Signs in on the sign-in page of the server at `baseUrl` and waits for the dashboard. */
export async function signInOnPage(page: Page, baseUrl: string, username: string, password: string): Promise<void> {
  await page.goto(new URL("/sign-in", baseUrl).toString());
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
}

/**
 * After each test of the file: no page may have logged an error to the console or thrown.
 * The errors are taken out, so one page's error fails its own test and not every later one.
 */
export function failOnBrowserErrors(browser: () => Browser): void {
  afterEach(() => {
    expect(browser().errors.splice(0)).toEqual([]);
  });
}
