import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, generateKeyPair } from "jose";
import Provider from "oidc-provider";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateApiKey } from "../src/security/apiKeys.js";
import { parseOutboundAllow } from "../src/security/outboundGuard.js";
import { type RunningServer, startServer } from "../src/server/start.js";
import { type Browser, ensureWebBuilt, launchBrowser } from "./helpers/browser.js";

/*
 * Signing in to the dashboard with OIDC, in Debian's Chromium: a real `ferry server` with
 * FERRY_OIDC_* settings and a real OpenID Provider (`oidc-provider` with its development
 * login and consent pages, which take any login name as the subject) on loopback ports.
 */

const CLIENT_SECRET = "ferry-ui-test-client-secret-long-enough";

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("web dashboard: OIDC sign-in", () => {
  let providerServer: Server;
  let issuer = "";
  let ferry: RunningServer;
  let dataDir = "";
  let browser: Browser;

  beforeAll(async () => {
    await ensureWebBuilt();
    providerServer = createServer();
    await new Promise<void>((resolve) => providerServer.listen(0, "127.0.0.1", resolve));
    issuer = `http://127.0.0.1:${(providerServer.address() as AddressInfo).port}`;
    const ferryPort = await freePort();
    const ferryUrl = `http://127.0.0.1:${ferryPort}`;
    const { privateKey } = await generateKeyPair("RS256", { extractable: true });
    const provider = new Provider(issuer, {
      clients: [
        {
          client_id: "ferry",
          client_secret: CLIENT_SECRET,
          redirect_uris: [`${ferryUrl}/api/v1/session/oidc/callback`],
          token_endpoint_auth_method: "client_secret_basic",
        },
      ],
      jwks: { keys: [{ ...(await exportJWK(privateKey)), alg: "RS256", use: "sig", kid: "ui-test" }] },
      cookies: { keys: ["oidc-ui-test-cookie-key"] },
      pkce: { required: () => true },
      features: { devInteractions: { enabled: true } },
      claims: { openid: ["sub"], profile: ["name", "preferred_username"] },
      conformIdTokenClaims: false,
      findAccount: (_context, id) => ({
        accountId: id,
        claims: () => ({ sub: id, preferred_username: id, name: `Person ${id}` }),
      }),
    });
    providerServer.on("request", provider.callback());

    dataDir = mkdtempSync(join(tmpdir(), "ferry-ui-oidc-"));
    ferry = await startServer({
      port: ferryPort,
      host: "127.0.0.1",
      dataDir,
      adminApiKey: generateApiKey(),
      logLevel: "silent",
      traffic: { driver: "builtin", proxy: { stateDir: join(dataDir, "proxy"), listen: "127.0.0.1:0" } },
      announce: () => {},
      outbound: parseOutboundAllow("127.0.0.1"),
      oidc: {
        issuer,
        clientId: "ferry",
        clientSecret: CLIENT_SECRET,
        redirectUrl: `${ferryUrl}/api/v1/session/oidc/callback`,
        createUsers: true,
      },
    });
    browser = await launchBrowser();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await ferry?.close();
    await new Promise((resolve) => providerServer?.close(resolve));
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("signs in through the provider and comes back to the page asked for", async () => {
    const page = await browser.newPage();
    await page.goto(new URL("/targets", ferry.url).toString());
    await page.waitForURL(/\/sign-in\?returnTo=%2Ftargets/);
    const sso = page.getByRole("link", { name: "Sign in with single sign-on (OIDC)" });
    await sso.click();
    // The provider's own pages: log in as "grace", then consent.
    await page.waitForURL((address) => address.toString().startsWith(issuer));
    await page.locator('input[name="login"]').fill("grace");
    await page.locator('input[name="password"]').fill("any");
    await page.locator('button[type="submit"]').click();
    await page.locator('button[type="submit"]', { hasText: /continue/i }).click();

    await page.waitForURL(new URL("/targets", ferry.url).toString());
    await page.getByRole("heading", { name: "Targets" }).waitFor();
    expect(await page.locator(".who").innerText()).toBe("Person grace");
    // The session is the cookie, as with a password; nothing in storage.
    expect(await page.evaluate("localStorage.length + sessionStorage.length")).toBe(0);
    // The provider's pages are not Ferry's: only Ferry's must be free of console errors.
    expect(browser.errors.filter((error) => !error.startsWith(issuer))).toEqual([]);
  });
});
