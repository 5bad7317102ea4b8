import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
// jose is loaded at the first sign-in, not at start: a server without OIDC never needs it
// (and readiness is measured in fractions of a second).
import type { createRemoteJWKSet, FetchImplementation, errors as JoseErrors, JWTPayload } from "jose";
import { z } from "zod";
import type { FerryEnvironment } from "../config/env.js";
import { FerryError, InputError, UnauthenticatedError } from "../domain/errors.js";
import { describeNetworkError, type GuardedRequest, guardedFetch, type OutboundPolicy } from "./outboundGuard.js";

/**
 * OpenID Connect sign-in as a relying party: authorization code with PKCE (S256), `state`
 * and `nonce`, the code exchanged at the provider's token endpoint, the ID token verified
 * with `jose` against the provider's JWKS (docs/decisions/0018-users-sessions.md, "OIDC").
 * Every call to the provider goes through the outbound guard, like feeds and webhooks.
 */

/** The callback path FERRY_OIDC_REDIRECT_URL must name (the route in src/api/oidc.ts). */
export const OIDC_CALLBACK_PATH = "/api/v1/session/oidc/callback";

export interface OidcSettings {
  /** Compared character for character with the discovery document's and the ID token's `iss`. */
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** The public URL of the callback, as registered with the provider. */
  readonly redirectUrl: string;
  /** FERRY_OIDC_CREATE_USERS=1: an unknown subject becomes a new non-admin user. */
  readonly createUsers: boolean;
}

/** The provider, not the request, failed (unreachable, a 5xx, a document that is not what OIDC says). A 502 problem. */
class IdentityProviderError extends FerryError {
  readonly code = "identity-provider-error";
}

type OidcEnvironment = Pick<
  FerryEnvironment,
  | "FERRY_OIDC_ISSUER"
  | "FERRY_OIDC_CLIENT_ID"
  | "FERRY_OIDC_CLIENT_SECRET_FILE"
  | "FERRY_OIDC_REDIRECT_URL"
  | "FERRY_OIDC_CREATE_USERS"
>;

const REQUIRED = [
  "FERRY_OIDC_ISSUER",
  "FERRY_OIDC_CLIENT_ID",
  "FERRY_OIDC_CLIENT_SECRET_FILE",
  "FERRY_OIDC_REDIRECT_URL",
] as const;

/**
 * The OIDC settings, or undefined when OIDC sign-in is off (none of the variables set).
 * Checked at start, so a mistake stops the server with the variable's name instead of
 * failing at the first sign-in. The secret file's content is never part of a message.
 */
export function oidcSettingsFromEnvironment(
  environment: OidcEnvironment,
  readSecret: (path: string) => string = (path) => readFileSync(path, "utf8"),
): OidcSettings | undefined {
  const missing = REQUIRED.filter((name) => environment[name] === undefined);
  if (missing.length === REQUIRED.length) {
    if (environment.FERRY_OIDC_CREATE_USERS === "1") {
      throw new InputError(`FERRY_OIDC_CREATE_USERS is set but OIDC sign-in is not: set ${REQUIRED.join(", ")}`);
    }
    return undefined;
  }
  if (missing.length > 0) {
    throw new InputError(
      `OIDC sign-in needs ${missing.join(", ")} as well (set all of ${REQUIRED.join(", ")}, or none)`,
    );
  }
  const issuer = environment.FERRY_OIDC_ISSUER ?? "";
  const clientId = environment.FERRY_OIDC_CLIENT_ID ?? "";
  const secretFile = environment.FERRY_OIDC_CLIENT_SECRET_FILE ?? "";
  const redirectUrl = environment.FERRY_OIDC_REDIRECT_URL ?? "";

  const issuerUrl = parseHttpUrl(issuer);
  if (issuerUrl?.search !== "" || issuerUrl.hash !== "" || issuerUrl.username !== "") {
    throw new InputError(
      "FERRY_OIDC_ISSUER must be the provider's issuer URL (https://…, no query, fragment or credentials), exactly as its discovery document names it",
    );
  }
  if (issuerUrl.protocol !== "https:" && !isLoopback(issuerUrl)) {
    throw new InputError("FERRY_OIDC_ISSUER must use https:// (http:// is accepted only for a loopback address)");
  }
  if (!/^[\x21-\x7e]{1,255}$/.test(clientId)) {
    throw new InputError("FERRY_OIDC_CLIENT_ID must be 1-255 printable characters without spaces");
  }
  let clientSecret: string;
  try {
    clientSecret = readSecret(secretFile).replace(/\r?\n$/, "");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "unreadable";
    throw new InputError(`FERRY_OIDC_CLIENT_SECRET_FILE: cannot read ${secretFile} (${code})`);
  }
  if (clientSecret === "" || /[\r\n]/.test(clientSecret)) {
    throw new InputError(
      `FERRY_OIDC_CLIENT_SECRET_FILE: ${secretFile} must hold the client secret on one line (it is empty or has several lines)`,
    );
  }
  const redirect = parseHttpUrl(redirectUrl);
  if (!redirect || redirect.pathname !== OIDC_CALLBACK_PATH || redirect.search !== "" || redirect.hash !== "") {
    throw new InputError(
      `FERRY_OIDC_REDIRECT_URL must be this server's public URL of ${OIDC_CALLBACK_PATH} (e.g. https://ferry.example.com${OIDC_CALLBACK_PATH}), registered with the provider`,
    );
  }
  return { issuer, clientId, clientSecret, redirectUrl, createUsers: environment.FERRY_OIDC_CREATE_USERS === "1" };
}

function parseHttpUrl(text: string): URL | undefined {
  try {
    const url = new URL(text);
    return url.protocol === "https:" || url.protocol === "http:" ? url : undefined;
  } catch {
    return undefined;
  }
}

function isLoopback(url: URL): boolean {
  return ["localhost", "127.0.0.1", "[::1]"].includes(url.hostname);
}

/** What a new sign-in keeps until the callback: all random, base64url. */
export interface OidcLoginSecrets {
  state: string;
  nonce: string;
  codeVerifier: string;
}

export function newLoginSecrets(): OidcLoginSecrets {
  const random = () => randomBytes(32).toString("base64url");
  return { state: random(), nonce: random(), codeVerifier: random() };
}

/** The signed-in identity: the provider's (iss, sub) and what it says about the person. */
export interface OidcIdentity {
  issuer: string;
  subject: string;
  preferredUsername?: string | undefined;
  email?: string | undefined;
  name?: string | undefined;
}

/** The parts of the discovery document Ferry uses; the rest is ignored (providers add many). */
const discoverySchema = z.object({
  issuer: z.string(),
  authorization_endpoint: z.url(),
  token_endpoint: z.url(),
  jwks_uri: z.url(),
  token_endpoint_auth_methods_supported: z.array(z.string()).optional(),
  code_challenge_methods_supported: z.array(z.string()).optional(),
});
type Discovery = z.infer<typeof discoverySchema>;

const tokenResponseSchema = z.object({ id_token: z.string().min(1).max(16_384) });

/** Asymmetric algorithms only: "none" proves nothing, and HS* would make the client secret a signing key. */
const ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];
/** Clocks of Ferry and the provider may differ this much. */
const CLOCK_TOLERANCE_SECONDS = 60;
/** An ID token issued longer ago than this is not a fresh sign-in. */
const ID_TOKEN_MAX_AGE = "10m";
const DISCOVERY_CACHE_MS = 60 * 60 * 1000;
const PROVIDER_TIMEOUT_MS = 10_000;

/**
 * The provider as Ferry talks to it. Discovery is fetched at the first sign-in (the server
 * starts while the provider is down) and kept for an hour; jose keeps the JWKS and fetches
 * it again when a token names a key it has not seen (key rotation).
 */
export class OidcClient {
  private discovered: { at: number; document: Discovery; keys: ReturnType<typeof createRemoteJWKSet> } | undefined;

  constructor(
    readonly settings: OidcSettings,
    private readonly outbound: OutboundPolicy,
  ) {}

  /** The provider's authorization URL for a new sign-in. */
  async authorizationUrl(secrets: OidcLoginSecrets): Promise<URL> {
    const { document } = await this.discover();
    const url = new URL(document.authorization_endpoint);
    url.searchParams.set("response_type", "code");
    url.searchParams.set("client_id", this.settings.clientId);
    url.searchParams.set("redirect_uri", this.settings.redirectUrl);
    url.searchParams.set("scope", "openid profile email");
    url.searchParams.set("state", secrets.state);
    url.searchParams.set("nonce", secrets.nonce);
    url.searchParams.set("code_challenge", createHash("sha256").update(secrets.codeVerifier).digest("base64url"));
    url.searchParams.set("code_challenge_method", "S256");
    return url;
  }

  /**
   * Exchanges the authorization code (with the PKCE verifier) for tokens and returns the
   * verified identity of the ID token. The access token is not used and not kept.
   */
  async signIn(code: string, codeVerifier: string, nonce: string): Promise<OidcIdentity> {
    const { document, keys } = await this.discover();
    const idToken = await this.exchangeCode(document, code, codeVerifier);
    return this.verifyIdToken(keys, idToken, nonce);
  }

  private async discover() {
    if (this.discovered && Date.now() - this.discovered.at < DISCOVERY_CACHE_MS) return this.discovered;
    const url = `${this.settings.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
    const response = await this.call(url, {
      name: "the OIDC discovery document",
      headers: { accept: "application/json" },
    });
    if (response.status !== 200) {
      await response.body?.cancel().catch(() => undefined);
      throw new IdentityProviderError(
        `the identity provider's discovery document answered HTTP ${response.status}; check FERRY_OIDC_ISSUER and the provider`,
      );
    }
    const parsed = discoverySchema.safeParse(await response.json().catch(() => undefined));
    if (!parsed.success) {
      throw new IdentityProviderError(
        "the identity provider's discovery document lacks authorization_endpoint, token_endpoint or jwks_uri; check FERRY_OIDC_ISSUER",
      );
    }
    const document = parsed.data;
    // OpenID Connect Discovery 1.0 §4.3: the document must name the issuer it was fetched for.
    if (document.issuer !== this.settings.issuer) {
      throw new IdentityProviderError(
        "the identity provider's discovery document names another issuer than FERRY_OIDC_ISSUER; set FERRY_OIDC_ISSUER to exactly the issuer the provider announces",
      );
    }
    if (document.code_challenge_methods_supported && !document.code_challenge_methods_supported.includes("S256")) {
      throw new IdentityProviderError("the identity provider does not support PKCE with S256, which Ferry requires");
    }
    const { createRemoteJWKSet, customFetch } = await import("jose");
    const fetchThroughGuard: FetchImplementation = async (url, options) =>
      (await this.call(url, {
        name: "the OIDC provider's JWKS",
        headers: Object.fromEntries(options.headers.entries()),
        signal: options.signal,
      })) as unknown as Response;
    const keys = createRemoteJWKSet(new URL(document.jwks_uri), {
      timeoutDuration: PROVIDER_TIMEOUT_MS,
      [customFetch]: fetchThroughGuard,
    });
    this.discovered = { at: Date.now(), document, keys };
    return this.discovered;
  }

  private async exchangeCode(document: Discovery, code: string, codeVerifier: string): Promise<string> {
    const form = new URLSearchParams({
      grant_type: "authorization_code",
      code,
      redirect_uri: this.settings.redirectUrl,
      code_verifier: codeVerifier,
    });
    const headers: Record<string, string> = {
      "content-type": "application/x-www-form-urlencoded",
      accept: "application/json",
    };
    // Without the list, RFC 8414 and OIDC Discovery say the default is client_secret_basic.
    const methods = document.token_endpoint_auth_methods_supported ?? ["client_secret_basic"];
    if (methods.includes("client_secret_basic")) {
      // RFC 6749 §2.3.1: each part form-encoded before the Basic encoding.
      const credentials = `${formEncode(this.settings.clientId)}:${formEncode(this.settings.clientSecret)}`;
      headers.authorization = `Basic ${Buffer.from(credentials).toString("base64")}`;
    } else if (methods.includes("client_secret_post")) {
      form.set("client_id", this.settings.clientId);
      form.set("client_secret", this.settings.clientSecret);
    } else {
      throw new IdentityProviderError(
        "the identity provider's token endpoint accepts neither client_secret_basic nor client_secret_post; Ferry needs one of them",
      );
    }
    const response = await this.call(document.token_endpoint, {
      name: "the OIDC token endpoint",
      method: "POST",
      headers,
      body: form.toString(),
    });
    if (response.status !== 200) {
      // The body may say why, but it is the provider's text: it is neither shown nor logged.
      await response.body?.cancel().catch(() => undefined);
      if (response.status >= 400 && response.status < 500) {
        throw new UnauthenticatedError(
          `the identity provider did not accept the sign-in's code (HTTP ${response.status}); start the sign-in again`,
        );
      }
      throw new IdentityProviderError(`the identity provider's token endpoint answered HTTP ${response.status}`);
    }
    const parsed = tokenResponseSchema.safeParse(await response.json().catch(() => undefined));
    if (!parsed.success) {
      throw new IdentityProviderError(
        "the identity provider's token response has no ID token (was the openid scope refused?)",
      );
    }
    return parsed.data.id_token;
  }

  private async verifyIdToken(
    keys: ReturnType<typeof createRemoteJWKSet>,
    idToken: string,
    nonce: string,
  ): Promise<OidcIdentity> {
    const { jwtVerify, errors } = await import("jose");
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(idToken, keys, {
        issuer: this.settings.issuer,
        audience: this.settings.clientId,
        algorithms: ID_TOKEN_ALGORITHMS,
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
        maxTokenAge: ID_TOKEN_MAX_AGE,
        requiredClaims: ["sub", "iat", "exp"],
      }));
    } catch (error) {
      throw idTokenRefusal(error, errors);
    }
    // OIDC Core §3.1.3.7: with several audiences, azp must name this client; when present it must anyway.
    const audiences = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
    if ((audiences.length > 1 || payload.azp !== undefined) && payload.azp !== this.settings.clientId) {
      throw refused("its azp (authorized party) is not FERRY_OIDC_CLIENT_ID");
    }
    if (payload.nonce !== nonce) throw refused("its nonce is not the one this sign-in sent");
    const subject = payload.sub;
    if (typeof subject !== "string" || subject === "" || subject.length > 255) {
      throw refused("its subject (sub) is empty or longer than 255 characters");
    }
    return {
      issuer: this.settings.issuer,
      subject,
      preferredUsername: stringClaim(payload.preferred_username),
      email: stringClaim(payload.email),
      name: stringClaim(payload.name),
    };
  }

  private async call(url: string | URL, request: GuardedRequest) {
    try {
      return await guardedFetch(
        url,
        { redirect: "manual", signal: AbortSignal.timeout(PROVIDER_TIMEOUT_MS), ...request },
        this.outbound,
      );
    } catch (error) {
      if (error instanceof FerryError) throw error; // the guard's refusal says how to allow it
      throw new IdentityProviderError(`cannot reach ${request.name}: ${describeNetworkError(error)}`);
    }
  }
}

function formEncode(value: string): string {
  return new URLSearchParams([["", value]]).toString().slice(1);
}

function stringClaim(value: unknown): string | undefined {
  return typeof value === "string" && value.length > 0 && value.length <= 320 ? value : undefined;
}

function refused(why: string): UnauthenticatedError {
  return new UnauthenticatedError(`the identity provider's ID token was refused: ${why}; start the sign-in again`);
}

/** What jose found wrong, in words that say which check failed (never the token itself). */
function idTokenRefusal(error: unknown, joseErrors: typeof JoseErrors): FerryError {
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    const claim = error.claim;
    if (claim === "iss") return refused("it was issued by another issuer than FERRY_OIDC_ISSUER");
    if (claim === "aud") return refused("it is meant for another client than FERRY_OIDC_CLIENT_ID");
    if (claim === "iat") return refused("it was issued too long ago or in the future (check the clocks)");
    return refused(`its ${claim} claim is missing or not valid`);
  }
  if (error instanceof joseErrors.JWTExpired) return refused("it has expired (check the clocks)");
  if (error instanceof joseErrors.JOSEAlgNotAllowed) {
    return refused("it is not signed with an asymmetric algorithm Ferry accepts (RS*, PS*, ES*, EdDSA)");
  }
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) {
    return refused("its signature does not verify against the provider's keys");
  }
  if (error instanceof joseErrors.JWKSNoMatchingKey)
    return refused("it is signed with a key the provider does not publish");
  if (error instanceof joseErrors.JWKSTimeout || error instanceof joseErrors.JWKSInvalid) {
    return new IdentityProviderError("the identity provider's JWKS could not be read");
  }
  if (error instanceof joseErrors.JWSInvalid || error instanceof joseErrors.JWTInvalid) {
    return refused("it is not a valid signed JWT");
  }
  if (error instanceof FerryError) return error;
  // Anything else (a JWKS answer that is not 200, a network failure) is the provider's side.
  return new IdentityProviderError(`the identity provider's JWKS could not be read: ${describeNetworkError(error)}`);
}
