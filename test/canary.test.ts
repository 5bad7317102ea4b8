import { bucketCookieName } from "../src/traffic/proxy.js";
import { describeCanary } from "./helpers/canaryScenario.js";
import { startProxyProcess } from "./helpers/proxy.js";

/**
 * Canary stages through a real `ferry proxy` process (ADR 0049): the scenario of
 * helpers/canaryScenario.ts — 10 % → 50 % → 100 % under load, a 5 %-error release switched
 * back, a cancelled canary taken out. The proxy's cookie holds a bucket, not a colour.
 */
describeCanary({
  title: "canary stages through ferry proxy (real server, supervisors and proxy; under load)",
  prefix: "cny",
  cookieName: bucketCookieName,
  startRouter: startProxyProcess,
});
