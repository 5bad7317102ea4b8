#!/usr/bin/env bash
# The one test command (README, CI): installs and starts what the tests need, installs
# the package, then runs typecheck + lint + every test. Safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Services (PostgreSQL …); the script prints FERRY_TEST_* settings on stdout.
while IFS= read -r line; do
  case "$line" in FERRY_TEST_*=*) export "${line?}" ;; esac
done < <(bash scripts/test-services.sh)

# Reinstall only when package-lock.json changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # Not `npm ci`: npm 11 leaves other platforms' optional packages (Biome, oxc binaries) out
  # of the lock file and `npm ci` then refuses it (npm/cli#4828, fixed by npm/cli#9083).
  # `npm install` installs the locked versions all the same.
  npm install --no-audit --no-fund
fi

npm run build
npm run check
