import { describeCanary } from "./helpers/canaryScenario.js";
import { haproxyStateDir } from "./helpers/haproxy.js";

/**
 * Canary stages through Ferry's HAProxy (ADR 0053): the scenario of helpers/canaryScenario.ts
 * — 10 % → 50 % → 100 % under load with the share within ±3 points, cookie holders never going
 * back, a 5 %-error release switched back with 0 failed requests for stable visitors and the
 * figures (from HAProxy's access log and `show stat`) in the task log, a cancelled canary
 * taken out — on a server with FERRY_ROUTER=haproxy. Weights by `set weight`, stickiness by
 * the cookie HAProxy sets itself.
 */
describeCanary({
  title: "canary stages through HAProxy (real server, supervisors and HAProxy; under load)",
  prefix: "cnh",
  cookieName: (route) => `ferry-canary-${route}`,
  startRouter: async () => {
    const haproxy = await haproxyStateDir();
    return {
      port: haproxy.port,
      traffic: { driver: "haproxy", haproxy: haproxy.options },
      stop: () => haproxy.stop(),
    };
  },
});
