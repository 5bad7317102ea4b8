#!/usr/bin/env bash
# Runs Ferry on its embedded defaults (SQLite in .ferry-demo/, this host as the target) and
# deploys the demo app (examples/demo-app) dev → test → prod blue/green through ferry proxy,
# then promotes its release 1.1.0 through the three while a load generator counts failed
# requests (0): as containers when the Docker engine on DOCKER_HOST (unix:// only; default
# /var/run/docker.sock) answers (their image built here, from this host's Node.js), else as
# supervised processes; nothing but Node.js is needed. Installs and builds
# first when needed. Extra arguments go to `ferry demo` (`--runtime process|docker` chooses,
# `--stop` stops the app and the proxy it left running).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # Not `npm ci`: npm 11 leaves other platforms' optional packages (Biome, oxc binaries) out
  # of the lock file and `npm ci` then refuses it (npm/cli#4828, fixed by npm/cli#9083).
  # `npm install` installs the locked versions all the same.
  npm install --no-audit --no-fund
fi
npm run build --silent
# The README's walkthrough feeds from a registry on this host (examples/hello/registry.sh):
# the outbound guard refuses loopback unless allowed (docs/security.md).
export FERRY_OUTBOUND_ALLOW=${FERRY_OUTBOUND_ALLOW:-127.0.0.1:5000}
exec node bin/ferry demo "$@"
