import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ServerClient } from "./agentHost.js";

/**
 * How `ferry agent` reaches an https server: through the proxy HTTPS_PROXY names (CONNECT,
 * TLS inside), trusting a private CA given with --ca-file. A real TLS server with an openssl
 * certificate and a CONNECT proxy (Node's http server: its 'connect' event), both on loopback.
 */
describe("the agent's way to an https server", () => {
  const directory = mkdtempSync(join(tmpdir(), "ferry-agent-tls-"));
  let ca = "";
  let server: Server;
  let proxy: Server;
  let serverUrl: URL;
  let proxyUrl = "";
  const connects: string[] = [];
  const authorizations: string[] = [];

  const listen = (listener: Server) =>
    new Promise<number>((resolve) => {
      listener.listen(0, "127.0.0.1", () => {
        const address = listener.address();
        resolve(typeof address === "object" && address ? address.port : 0);
      });
    });

  beforeAll(async () => {
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=ferry test",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        join(directory, "key.pem"),
        "-out",
        join(directory, "cert.pem"),
      ],
      { stdio: "ignore" },
    );
    ca = readFileSync(join(directory, "cert.pem"), "utf8");
    server = createHttpsServer(
      { key: readFileSync(join(directory, "key.pem")), cert: ca },
      (request: IncomingMessage, response) => {
        authorizations.push(request.headers.authorization ?? "");
        request.resume();
        request.on("end", () => {
          response.writeHead(200, { "content-type": "application/json" });
          response.end(JSON.stringify({ calls: [], cancel: [], timeoutMs: 45_000, holdMs: 15_000 }));
        });
      },
    );
    serverUrl = new URL(`https://127.0.0.1:${await listen(server)}`);
    proxy = createHttpServer();
    proxy.on("connect", (request: IncomingMessage, client: Socket, head: Buffer) => {
      connects.push(request.url ?? "");
      const [host, port] = (request.url ?? "").split(":");
      const upstream = connect(Number(port), host ?? "", () => {
        client.write("HTTP/1.1 200 Connection established\r\n\r\n");
        upstream.write(head);
        upstream.pipe(client);
        client.pipe(upstream);
      });
      upstream.on("error", () => client.destroy());
      client.on("error", () => upstream.destroy());
    });
    proxyUrl = `http://127.0.0.1:${await listen(proxy)}`;
  });

  afterAll(() => {
    server?.closeAllConnections();
    server?.close();
    proxy?.closeAllConnections();
    proxy?.close();
    rmSync(directory, { recursive: true, force: true });
  });

  const poll = (client: ServerClient) =>
    client.json("POST", "/api/v1/agent/poll", { running: [], interrupted: [] }, 10_000);

  it("goes through HTTPS_PROXY with CONNECT and trusts the CA it was given", async () => {
    const client = new ServerClient(serverUrl, "ferry_agent_test", { environment: { HTTPS_PROXY: proxyUrl }, ca });
    expect(await poll(client)).toEqual({ calls: [], cancel: [], timeoutMs: 45_000, holdMs: 15_000 });
    expect(connects).toEqual([`127.0.0.1:${serverUrl.port}`]);
    // The credential travelled inside the TLS tunnel: the proxy saw only where to connect.
    expect(authorizations.at(-1)).toBe("Bearer ferry_agent_test");
  });

  it("refuses a server whose certificate it has no reason to trust", async () => {
    const client = new ServerClient(serverUrl, "ferry_agent_test", { environment: { HTTPS_PROXY: proxyUrl } });
    await expect(poll(client)).rejects.toThrow(/self[- ]signed|certificate/i);
  });

  it("goes straight to a host NO_PROXY names", async () => {
    const before = connects.length;
    const client = new ServerClient(serverUrl, "ferry_agent_test", {
      environment: { HTTPS_PROXY: proxyUrl, NO_PROXY: "127.0.0.1" },
      ca,
    });
    await poll(client);
    expect(connects.length).toBe(before);
  });
});
