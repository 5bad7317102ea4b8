#!/usr/bin/env bash
# Stage 1 of the pipeline: builds the app's image for one tag and pushes it to the registry,
# with no base image from the internet: `docker import` of a root file system holding
# Debian's static busybox (package busybox-static), whose httpd serves the app (app/).
#
#   ./build.sh 1.0.3-beta        # → ${REGISTRY:-127.0.0.1:5000}/pipeline/app:1.0.3-beta
set -euo pipefail
tag=${1:?usage: build.sh TAG (e.g. 1.0.3-beta)}
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || { echo "build.sh: '$tag' is not a Docker tag" >&2; exit 2; }
registry=${REGISTRY:-127.0.0.1:5000}
repository=${REPOSITORY:-pipeline/app}
busybox=${BUSYBOX:-/bin/busybox}
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$busybox" ] || { echo "build.sh: $busybox is missing; apt-get install busybox-static" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/www"
cp "$busybox" "$root/bin/busybox"
sed "s/@VERSION@/${tag%-beta}/" "$here/app/index.html.in" > "$root/www/index.html"
printf 'ok\n' > "$root/www/health"
# APP_GREETING comes from Ferry's variables (ferry.yml); the app prints it when it starts.
start='echo "app starting: $APP_GREETING"; /bin/busybox httpd -f -p 8080 -h /www & trap "kill \$!; exit 0" TERM; wait'
tar --numeric-owner --owner=0 --group=0 -C "$root" -c . |
  docker import \
    --change "CMD [\"/bin/busybox\", \"sh\", \"-c\", $(printf '%s' "$start" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')]" \
    --change "EXPOSE 8080" \
    - "$registry/$repository:$tag" >/dev/null
docker push -q "$registry/$repository:$tag" >/dev/null
echo "pushed $registry/$repository:$tag"
