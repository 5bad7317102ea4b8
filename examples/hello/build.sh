#!/usr/bin/env bash
# Builds two versions (1.0.0, 1.0.1) of a tiny HTTP app image without any base image from
# the internet, and pushes them to the registry at ${REGISTRY:-127.0.0.1:5000}.
#
# The image is `docker import` of a root file system holding Debian's static busybox
# (package busybox-static) whose httpd serves "/" ("hello from <version>") and "/health".
set -euo pipefail
registry=${REGISTRY:-127.0.0.1:5000}
repository=${REPOSITORY:-demo/hello}
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "build.sh: $busybox is missing; apt-get install busybox-static" >&2; exit 1; }

for version in 1.0.0 1.0.1; do
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root/bin" "$root/www"
  cp "$busybox" "$root/bin/busybox"
  printf 'hello from %s\n' "$version" > "$root/www/index.html"
  printf 'ok\n' > "$root/www/health"
  start='echo "hello $APP_VERSION starting (greeting: $GREETING)"; /bin/busybox httpd -f -vv -p 8080 -h /www & trap "kill \$!; exit 0" TERM; wait'
  tar --numeric-owner --owner=0 --group=0 -C "$root" -c . |
    docker import \
      --change "ENV APP_VERSION=$version" \
      --change "CMD [\"/bin/busybox\", \"sh\", \"-c\", $(printf '%s' "$start" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')]" \
      --change "EXPOSE 8080" \
      - "$registry/$repository:$version" >/dev/null
  docker push -q "$registry/$repository:$version"
  rm -rf "$root"
  trap - EXIT
done
