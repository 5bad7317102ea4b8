#!/usr/bin/env bash
# Starts Debian's docker-registry on 127.0.0.1:${PORT:-5000} (no auth, storage in a temp
# directory) in the background, for the walkthrough. Prints its PID.
set -euo pipefail
port=${PORT:-5000}
storage=$(mktemp -d)
config=$storage/config.yml
cat > "$config" <<YAML
version: 0.1
storage: { filesystem: { rootdirectory: $storage/data }, delete: { enabled: true } }
http: { addr: 127.0.0.1:$port }
YAML
nohup docker-registry serve "$config" > "$storage/registry.log" 2>&1 &
echo $!
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && exit 0; sleep 0.1; done
echo "registry.sh: the registry did not start; see $storage/registry.log" >&2
exit 1
