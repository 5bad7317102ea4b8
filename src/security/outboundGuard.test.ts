import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  allowingOrigin,
  checkOutboundUrl,
  defaultOutboundPolicy,
  guardedFetch,
  type OutboundPolicy,
  OutboundRefusedError,
  parseOutboundAllow,
} from "./outboundGuard.js";

const HINT = "allow it with FERRY_OUTBOUND_ALLOW if you mean it";

async function refusal(promise: Promise<unknown>): Promise<OutboundRefusedError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(OutboundRefusedError);
  return error as OutboundRefusedError;
}

const check = (url: string, policy: OutboundPolicy = defaultOutboundPolicy) =>
  checkOutboundUrl(url, policy, { what: "feed URL" });

describe("checkOutboundUrl (the default policy)", () => {
  it("refuses the metadata address with a message that says what to do", async () => {
    const error = await refusal(
      checkOutboundUrl("http://169.254.169.254/", defaultOutboundPolicy, { what: "feed URL", pointer: "/url" }),
    );
    expect(error.message).toBe(
      `feed URL http://169.254.169.254/ points at a link-local/metadata address (169.254.169.254); ${HINT}`,
    );
    expect(error.issues).toEqual([{ pointer: "/url", detail: error.message }]);
  });

  it("refuses loopback, link-local, unspecified, multicast and metadata destinations in every spelling", async () => {
    const refused: [string, RegExp][] = [
      ["http://127.0.0.1:5000/", /a loopback address \(127\.0\.0\.1\)/],
      ["http://127.1.2.3/", /a loopback address/],
      ["http://2130706433/", /a loopback address \(127\.0\.0\.1\)/], // the URL parser reads it as 127.0.0.1
      ["http://0x7f.1/", /a loopback address/],
      ["http://[::1]:5000/", /a loopback address \(::1\)/],
      ["http://[::ffff:127.0.0.1]/", /a loopback address \(::ffff:7f00:1\)/],
      ["http://[::ffff:169.254.169.254]/", /a link-local\/metadata address/],
      ["http://[0:0:0:0:0:ffff:7f00:1]/", /a loopback address/],
      ["http://[::127.0.0.1]/", /an IPv4-compatible IPv6 address/],
      ["http://0.0.0.0:8080/", /an unspecified address \(0\.0\.0\.0\)/],
      ["http://0/", /an unspecified address/],
      ["http://[::]/", /an unspecified address \(::\)/],
      ["http://[fe80::1]/", /a link-local address/],
      ["http://224.0.0.1/", /a multicast address/],
      ["http://[ff02::1]/", /a multicast address/],
      ["http://255.255.255.255/", /a reserved address/],
      ["http://100.100.100.200/", /a cloud metadata address/],
      ["http://[fd00:ec2::254]/", /a cloud metadata address/],
      ["http://metadata.google.internal/computeMetadata/v1/", /a cloud metadata name \(metadata\.google\.internal\)/],
      ["http://METADATA.Google.Internal./", /a cloud metadata name/],
    ];
    for (const [url, message] of refused) {
      const error = await refusal(check(url));
      expect(error.message, url).toMatch(message);
      expect(error.message, url).toContain(HINT);
    }
  });

  it("refuses IPv6 addresses that carry a refused IPv4 address: NAT64, 6to4, SIIT, Teredo", async () => {
    const refused: [string, string][] = [
      ["http://[64:ff9b::127.0.0.1]:5000/", "a loopback address (64:ff9b::7f00:1, NAT64 for 127.0.0.1)"],
      ["http://[64:ff9b::a9fe:a9fe]/", "a link-local/metadata address (64:ff9b::a9fe:a9fe, NAT64 for 169.254.169.254)"],
      // Local-use NAT64 (RFC 8215) with a /96, /64, /56 and /48 prefix: the IPv4 bits sit elsewhere in each.
      ["http://[64:ff9b:1::127.0.0.1]/", "a loopback address (64:ff9b:1::7f00:1, local-use NAT64 for 127.0.0.1)"],
      [
        "http://[64:ff9b:1:0:7f:0:100:0]/",
        "a loopback address (64:ff9b:1:0:7f:0:100:0, local-use NAT64 for 127.0.0.1)",
      ],
      ["http://[64:ff9b:1:7f:0:1::]/", "a loopback address (64:ff9b:1:7f:0:1::, local-use NAT64 for 127.0.0.1)"],
      [
        "http://[64:ff9b:1:7f00:0:100::]/",
        "a loopback address (64:ff9b:1:7f00:0:100::, local-use NAT64 for 127.0.0.1)",
      ],
      ["http://[::ffff:0:127.0.0.1]/", "a loopback address (::ffff:0:7f00:1, SIIT-translated form of 127.0.0.1)"],
      ["http://[2002:7f00:1::1]/", "a loopback address (2002:7f00:1::1, 6to4 for 127.0.0.1)"],
      ["http://[2002:a9fe:a9fe::]/", "a link-local/metadata address (2002:a9fe:a9fe::, 6to4 for 169.254.169.254)"],
      // Teredo: the client's address is stored inverted (~127.0.0.1 = 80ff:fffe).
      [
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
        "a loopback address (2001:0:4136:e378:8000:63bf:80ff:fffe, Teredo for 127.0.0.1)",
      ],
      ["http://[2001:0:7f00:1::1]/", "a loopback address (2001:0:7f00:1::1, Teredo through server 127.0.0.1)"],
    ];
    for (const [url, reason] of refused) {
      const error = await refusal(check(url));
      expect(error.message, url).toContain(`points at ${reason}; ${HINT}`);
    }
    // What they carry that is not refused stays allowed, as it would be in IPv4.
    for (const url of [
      "http://[64:ff9b::8.8.8.8]/",
      "http://[64:ff9b::10.0.0.1]/",
      "http://[64:ff9b:1:abcd::8.8.8.8]/", // a /96 local prefix: no other reading has its zero bits
      "http://[2002:808:808::1]/",
      "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", // RFC 4380's example client, 192.0.2.45
    ]) {
      await expect(check(url), url).resolves.toBeUndefined();
    }
  });

  it("resolves a name and refuses it when an address it resolves to is refused", async () => {
    const error = await refusal(check("http://localhost:5000/v2/"));
    expect(error.message).toMatch(
      /^feed URL http:\/\/localhost:5000\/v2\/ points at a loopback address \(localhost resolves to (127\.0\.0\.1|::1)\)/,
    );
  });

  it("accepts private networks, public addresses and names that do not resolve yet", async () => {
    for (const url of [
      "http://10.1.2.3:5000/",
      "https://172.16.0.1/",
      "http://192.168.1.10/",
      "http://100.64.0.1/",
      "http://[fd12:3456::1]/",
      "https://8.8.8.8/",
      "https://[2001:db8::1]/",
      "https://registry.invalid/",
    ]) {
      await expect(check(url), url).resolves.toBeUndefined();
    }
  });

  it("shows the origin only when asked (a webhook's path may be a credential)", async () => {
    const error = await refusal(
      checkOutboundUrl("http://169.254.169.254/hooks/T0KEN-in-path?key=secret", defaultOutboundPolicy, {
        what: "webhook URL",
        originOnly: true,
      }),
    );
    expect(error.message).toContain("webhook URL http://169.254.169.254 points at");
    expect(error.message).not.toMatch(/T0KEN|secret/);
  });

  it("refuses what is not http(s)", async () => {
    expect((await refusal(check("ftp://registry.example.com/"))).message).toMatch(/must start with http/);
    expect((await refusal(check("not a url"))).message).toMatch(/is not a URL/);
  });
});

describe("checkOutboundUrl with FERRY_OUTBOUND_ALLOW", () => {
  it("allows an address on the port it names, and only there", async () => {
    const policy = parseOutboundAllow("127.0.0.1:5000");
    await expect(check("http://127.0.0.1:5000/", policy)).resolves.toBeUndefined();
    await expect(check("http://[::ffff:127.0.0.1]:5000/", policy)).resolves.toBeUndefined();
    await expect(check("http://localhost:5000/", policy)).resolves.toBeUndefined();
    const error = await refusal(check("http://127.0.0.1:5001/", policy));
    expect(error.message).toContain("a loopback address (127.0.0.1 port 5001)");
    await refusal(check("http://[::1]:5000/", policy));
  });

  it("lets an allowed IPv4 address through the IPv6 forms that carry it, and an allowed IPv6 range carry anything", async () => {
    await expect(
      check("http://[64:ff9b::127.0.0.1]:5000/", parseOutboundAllow("127.0.0.1:5000")),
    ).resolves.toBeUndefined();
    await refusal(check("http://[64:ff9b::127.0.0.1]:5001/", parseOutboundAllow("127.0.0.1:5000")));
    await expect(check("http://[2002:7f00:1::1]/", parseOutboundAllow("2002::/16"))).resolves.toBeUndefined();
  });

  it("allows a blue/green colour's own address and port, and nothing else, with allowingOrigin", async () => {
    const colour = allowingOrigin(parseOutboundAllow("10.0.0.0/8"), new URL("http://127.0.0.1:32768"));
    await expect(check("http://127.0.0.1:32768/health", colour)).resolves.toBeUndefined();
    expect((await refusal(check("http://127.0.0.1:5000/v2/_catalog", colour))).message).toContain(
      "a loopback address (127.0.0.1 port 5000)",
    );
    await refusal(check("http://[::1]:32768/", colour));
    await refusal(check("http://127.0.0.1:32768/", defaultOutboundPolicy));
  });

  it("allows ranges, IPv6 addresses and names on any port unless a port is given", async () => {
    const policy = parseOutboundAllow("169.254.0.0/16, [::1], fe80::/10, metadata.google.internal:80, localhost:5000");
    await expect(check("http://169.254.169.254/", policy)).resolves.toBeUndefined();
    await expect(check("http://[::1]:1234/", policy)).resolves.toBeUndefined();
    await expect(check("http://[fe80::1]/", policy)).resolves.toBeUndefined();
    await expect(check("http://metadata.google.internal/", policy)).resolves.toBeUndefined();
    await refusal(check("https://metadata.google.internal/", policy));
    // An allowed name is trusted with whatever it resolves to, on its port.
    await expect(check("http://localhost:5000/", policy)).resolves.toBeUndefined();
    await refusal(check("http://localhost:5001/", policy));
    await refusal(check("http://127.0.0.1/", policy));
  });
});

describe("guardedFetch (real HTTP servers on 127.0.0.1)", () => {
  interface Received {
    path: string;
    headers: IncomingHttpHeaders;
  }
  let origin: Server;
  let elsewhere: Server;
  let originPort = 0;
  let elsewherePort = 0;
  const atOrigin: Received[] = [];
  const atElsewhere: Received[] = [];
  const canary = "ELSEWHERE-BODY-CANARY";

  const listen = async (server: Server) => {
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return (server.address() as AddressInfo).port;
  };

  beforeAll(async () => {
    elsewhere = createServer((request, response) => {
      atElsewhere.push({ path: request.url ?? "", headers: request.headers });
      response.writeHead(200, { "content-type": "text/plain" }).end(canary);
    });
    elsewherePort = await listen(elsewhere);
    origin = createServer((request, response) => {
      const path = request.url ?? "";
      atOrigin.push({ path, headers: request.headers });
      const redirects: Record<string, string> = {
        "/to-elsewhere": `http://127.0.0.1:${elsewherePort}/landed?sig=presigned-secret`,
        "/to-elsewhere-by-name": `http://localhost:${elsewherePort}/landed`,
        "/to-same-origin": "/landed",
        "/to-file": "file:///etc/passwd",
      };
      const location = redirects[path] ?? (path.startsWith("/loop") ? `/loop${path.length}` : undefined);
      if (location) response.writeHead(302, { location }).end("moved");
      else response.writeHead(200).end(`origin ${path}`);
    });
    originPort = await listen(origin);
  });
  afterAll(async () => {
    for (const server of [origin, elsewhere]) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  const get = (path: string, policy: OutboundPolicy, headers: Record<string, string> = {}) =>
    guardedFetch(`http://127.0.0.1:${originPort}${path}`, { name: "feed URL test", headers }, policy);

  it("refuses a redirect to a loopback port the allow list does not name, without calling it", async () => {
    const policy = parseOutboundAllow(`127.0.0.1:${originPort}`);
    const before = atElsewhere.length;
    const error = await refusal(get("/to-elsewhere", policy));
    expect(error.message).toBe(
      `feed URL test redirected to http://127.0.0.1:${elsewherePort}/landed, which points at a loopback address (127.0.0.1 port ${elsewherePort}); ${HINT}`,
    );
    expect(error.message).not.toContain("presigned-secret");
    expect(error.message).not.toContain(canary);
    expect(atElsewhere.length).toBe(before);
  });

  it("checks the addresses a redirect's name resolves to on the connection itself", async () => {
    const policy = parseOutboundAllow(`127.0.0.1:${originPort}`);
    const before = atElsewhere.length;
    const error = await refusal(get("/to-elsewhere-by-name", policy));
    expect(error.message).toMatch(
      new RegExp(
        `redirected to http://localhost:${elsewherePort}/landed, which points at a loopback address \\(localhost resolves to 127\\.0\\.0\\.1 port ${elsewherePort}\\)`,
      ),
    );
    expect(atElsewhere.length).toBe(before);
  });

  it("refuses a name that resolves to loopback before connecting", async () => {
    const before = atOrigin.length;
    const error = await refusal(
      guardedFetch(`http://localhost:${originPort}/`, { name: "feed URL local" }, defaultOutboundPolicy),
    );
    expect(error.message).toMatch(
      /^feed URL local points at a loopback address \(localhost resolves to 127\.0\.0\.1\)/,
    );
    expect(atOrigin.length).toBe(before);
  });

  it("refuses an address literal before connecting", async () => {
    const before = atOrigin.length;
    await refusal(get("/", defaultOutboundPolicy));
    await refusal(guardedFetch(`http://[::ffff:127.0.0.1]:${originPort}/`, { name: "x" }, defaultOutboundPolicy));
    expect(atOrigin.length).toBe(before);
  });

  it("follows allowed redirects, dropping credentials when the origin changes", async () => {
    const policy = parseOutboundAllow("127.0.0.1");
    const authorization = { authorization: "Bearer secret-token" };
    const same = await get("/to-same-origin", policy, authorization);
    expect(await same.text()).toBe("origin /landed");
    expect(atOrigin.at(-1)?.headers.authorization).toBe("Bearer secret-token");

    const other = await get("/to-elsewhere", policy, authorization);
    expect(await other.text()).toBe(canary);
    expect(atElsewhere.at(-1)?.headers.authorization).toBeUndefined();

    // An allowed address reached through a name that resolves to it.
    const byName = await get("/to-elsewhere-by-name", policy);
    expect(byName.status).toBe(200);
    await byName.body?.cancel();
  });

  it("stops after 5 redirects, follows only http(s), and returns redirects as they are when asked", async () => {
    const policy = parseOutboundAllow("127.0.0.1");
    expect((await refusal(get("/loop", policy))).message).toMatch(/redirected more than 5 times/);
    expect((await refusal(get("/to-file", policy))).message).toMatch(/redirected to a file: URL/);
    const manual = await guardedFetch(
      `http://127.0.0.1:${originPort}/to-elsewhere`,
      { name: "x", redirect: "manual" },
      policy,
    );
    expect(manual.status).toBe(302);
    await manual.body?.cancel();
  });

  it("lets other network failures through as fetch's own errors", async () => {
    const closed = createServer();
    const port = await listen(closed);
    await new Promise((resolve) => closed.close(resolve));
    const error = await guardedFetch(`http://127.0.0.1:${port}/`, { name: "x" }, parseOutboundAllow("127.0.0.1")).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(TypeError);
    expect(error).not.toBeInstanceOf(OutboundRefusedError);
  });
});
