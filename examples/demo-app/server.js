// The demo's web app (npm run demo): a tiny HTTP server that says which release of it runs
// in which environment. Ferry's process runtime starts it with PORT set to a free port of
// its own; RELEASE, ENVIRONMENT and GREETING come from the deployment's variables.
"use strict";
const http = require("node:http");

const release = process.env.RELEASE || "unknown";
const environment = process.env.ENVIRONMENT || "unknown";
const greeting = process.env.GREETING || "Hello";
const port = Number(process.env.PORT || 3000);

const server = http.createServer((request, response) => {
  if (request.url === "/health") {
    response.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
    response.end("ok\n");
    return;
  }
  if (request.url !== "/" && request.url !== "/index.html") {
    response.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
    response.end("not found\n");
    return;
  }
  response.writeHead(200, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
  response.end(`${greeting}: demo app release ${release} in ${environment} (pid ${process.pid})\n`);
});

// In a container it listens on every address (HOST=0.0.0.0): the engine publishes the port.
const host = process.env.HOST || "127.0.0.1";
server.listen(port, host, () => {
  console.log(`demo app release ${release} in ${environment} listening on ${host}:${port}`);
});

// A graceful stop: nothing new is accepted, requests in flight finish, then the process exits.
process.on("SIGTERM", () => {
  console.log("SIGTERM: finishing requests in flight");
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
