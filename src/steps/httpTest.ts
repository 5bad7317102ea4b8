import { z } from "zod";
import { linearPatternProblem } from "../domain/linearPattern.js";
import { TaskFailure } from "../engine/types.js";
import { readBodyText, renderStepUrl, urlTemplateSchema } from "./http.js";
import { testPatternOffThread } from "./patternWorker.js";
import type { StepKind } from "./types.js";

/** An HTTP header name (RFC 9110 token). */
const headerNameSchema = z
  .string()
  .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$/, { message: "use a header name such as content-type or x-request-id" });

const assertionsSchema = z.strictObject({
  /** The status the response must have. */
  status: z.number().int().min(100).max(599).default(200),
  /** Texts (templates) the body must contain, each of them. */
  bodyContains: z.array(z.string().min(1).max(65_536)).max(100).default([]),
  /**
   * A regular expression the body must match somewhere, in RE2 syntax (JavaScript's,
   * without backreferences and lookaround), so it matches in time proportional to the
   * body. Not a template: a value spliced into a pattern would change its meaning.
   * Checked against at most 1 MiB of body, for at most 5 s.
   */
  bodyMatches: z
    .string()
    .min(1)
    .max(1000)
    .superRefine((pattern, context) => {
      const problem = linearPatternProblem(pattern);
      if (problem) context.addIssue({ code: "custom", message: problem });
    })
    .optional(),
  /** Response headers that must be present and contain the given text (a template), by name. */
  headers: z.record(headerNameSchema, z.string().max(8192)).default({}),
});

const httpTestConfigSchema = z.strictObject({
  method: z.enum(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]).default("GET"),
  /** Template of the URL, e.g. "http://127.0.0.1:#{Ferry.Step[web].Output.hostPort}/". */
  url: urlTemplateSchema,
  /** Request headers; each value is a template. */
  headers: z.record(headerNameSchema, z.string().max(8192)).default({}),
  /** Template of the request body. */
  body: z
    .string()
    .max(1024 * 1024)
    .optional(),
  timeoutMs: z.number().int().min(50).max(600_000).default(10_000),
  followRedirects: z.boolean().default(false),
  // prefault: an absent `assertions` is parsed as {}, so its defaults (status 200) apply.
  assertions: assertionsSchema.prefault({}),
});
type HttpTestConfig = z.infer<typeof httpTestConfigSchema>;

const MAX_BODY_BYTES = 1024 * 1024;
/** Longest bodyMatches may run; ordinary patterns take milliseconds over the largest body. */
const BODY_MATCH_TIMEOUT_MS = 5_000;
/** Characters of the body shown in the log when an assertion on it fails. */
const BODY_EXCERPT = 500;

interface AssertionResult {
  passed: boolean;
  description: string;
}

/** Sends one request and checks the response against every assertion, reporting all failures at once. */
export const httpTestStep: StepKind<HttpTestConfig> = {
  kind: "http-test",
  config: httpTestConfigSchema,

  plan(config, render) {
    const count = 1 + config.assertions.bodyContains.length + Object.keys(config.assertions.headers).length;
    return [
      {
        description: `${config.method} ${render(config.url)} and check ${count + (config.assertions.bodyMatches ? 1 : 0)} assertion(s)`,
      },
    ];
  },

  async run(context, config) {
    const { log, signal } = context;
    const { url, guard } = renderStepUrl(context, config.url, "url");
    const headers: Record<string, string> = {};
    for (const [name, template] of Object.entries(config.headers)) {
      const value = context.render(template);
      if (/[\r\n\0]/.test(value)) throw new TaskFailure(`the value of request header ${name} has a line break or NUL`);
      headers[name] = value;
    }
    const body = config.body === undefined ? undefined : context.render(config.body);
    log.info(`${config.method} ${url.href}`);
    // From the target's host: what the test checks may listen on that host's loopback.
    const outcome = await context.target.transport.request(url, {
      method: config.method,
      headers,
      ...(body !== undefined && { body }),
      timeoutMs: config.timeoutMs,
      signal,
      followRedirects: config.followRedirects,
      guard,
    });
    if (!outcome.ok) throw new TaskFailure(`${config.method} ${url.href} failed: ${outcome.problem}`);
    const { response } = outcome;
    let text: string;
    try {
      ({ text } = await readBodyText(response, MAX_BODY_BYTES));
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw new TaskFailure(
        `${config.method} ${url.href}: reading the response body failed (${error instanceof Error ? error.message : error})`,
      );
    }

    const { assertions } = config;
    const results: AssertionResult[] = [
      {
        passed: response.status === assertions.status,
        description:
          response.status === assertions.status
            ? `status is ${assertions.status}`
            : `status is ${response.status}, expected ${assertions.status}`,
      },
    ];
    for (const template of assertions.bodyContains) {
      const expected = context.render(template);
      const passed = text.includes(expected);
      results.push({
        passed,
        description: `body ${passed ? "contains" : "does not contain"} ${JSON.stringify(expected)}`,
      });
    }
    if (assertions.bodyMatches !== undefined) {
      const outcome = await testPatternOffThread(assertions.bodyMatches, text, {
        timeoutMs: BODY_MATCH_TIMEOUT_MS,
        signal,
      });
      const passed = outcome.kind === "matched";
      results.push({
        passed,
        description:
          outcome.kind === "timed-out"
            ? `body was not matched against /${assertions.bodyMatches}/ within ${BODY_MATCH_TIMEOUT_MS / 1000} s: simplify the pattern`
            : `body ${passed ? "matches" : "does not match"} /${assertions.bodyMatches}/`,
      });
    }
    for (const [name, template] of Object.entries(assertions.headers)) {
      const expected = context.render(template);
      const actual = response.headers.get(name);
      const passed = actual?.includes(expected) === true;
      results.push({
        passed,
        description:
          actual === null
            ? `header ${name} is missing, expected it to contain ${JSON.stringify(expected)}`
            : `header ${name} ${passed ? "contains" : "does not contain"} ${JSON.stringify(expected)}${
                passed ? "" : ` (it is ${JSON.stringify(actual.slice(0, 200))})`
              }`,
      });
    }

    for (const result of results)
      (result.passed ? log.info : log.error).call(log, `${result.passed ? "✔" : "✖"} ${result.description}`);
    const failed = results.filter((result) => !result.passed);
    if (failed.length > 0) {
      log.warn(`response body (first ${BODY_EXCERPT} characters): ${text.slice(0, BODY_EXCERPT)}`);
      throw new TaskFailure(
        `${failed.length} of ${results.length} assertions failed for ${config.method} ${url.href}: ${failed
          .map((result) => result.description)
          .join("; ")}`,
      );
    }
    return { outputs: { status: String(response.status) } };
  },
};
