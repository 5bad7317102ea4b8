#!/usr/bin/env bash
# Continuous deployment of examples/pipeline in six stages, with `ferry` commands only
# (README.md beside this file explains each):
#   1. build the image and push it as VERSION-beta
#   2. Ferry's feed trigger makes release VERSION and deploys it to dev: an isolated copy
#      with resource limits, functional tests against it
#   3. ... then re-tags the image VERSION and latest (by manifest: no pull, no upload)
#   4. promote to prod: blue/green behind the proxy
#   5. production tests before and after the switch
#   6. everything the run created for its tests is gone (the isolated group removes it)
#
#   FERRY_URL=… FERRY_API_KEY=… ./pipeline.sh 1.0.3
#
# Needs a Ferry server (FERRY_URL and FERRY_API_KEY, or `ferry login`) allowed to reach the
# registry (FERRY_OUTBOUND_ALLOW=127.0.0.1:5000), a Docker engine, and the registry at
# $REGISTRY (../hello/registry.sh starts one).
set -euo pipefail
version=${1:?usage: pipeline.sh VERSION (e.g. 1.0.3)}
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "pipeline.sh: VERSION is major.minor.patch, e.g. 1.0.3" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
ferry=${FERRY:-ferry}
project=pipeline-app

echo "== 0. the project as code, and its feed trigger"
$ferry apply -f "$here/ferry.yml"
if ! $ferry trigger show beta-pushes --project "$project" >/dev/null 2>&1; then
  # The registry's notifications need its configuration (docs/triggers.md); polling does not.
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' |
    $ferry trigger create beta-pushes --project "$project" --image web \
      --version-from-tag '^(\d+\.\d+\.\d+)-beta$' --poll-seconds "${POLL_SECONDS:-10}"
fi
# A trigger's first poll notes the tags already there (its baseline) and releases none of
# them: push only after it, or the new tag would be part of the baseline.
for _ in $(seq 1 60); do
  $ferry trigger show beta-pushes --project "$project" | grep -Eq '^last poll: +[0-9]' && break
  sleep 1
done

echo "== 1. build and push $version-beta"
"$here/build.sh" "$version-beta"

echo "== 2-3. Ferry releases $version and deploys it to dev: isolated tests, then the release tags"
$ferry release wait "$version" --project "$project" --env dev --timeout "${WAIT_SECONDS:-300}"

echo "== 4-5. promote to prod: blue/green, production tests"
$ferry promote --project "$project" --to prod --wait

echo "== 6. done: $version is live in prod; the isolated copy and its network are gone"
