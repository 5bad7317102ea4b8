#!/usr/bin/env bash
# Installs and starts every service the test suite needs, on a Debian machine where we
# are root. Idempotent: anything already installed or running is left as it is.
# Prints the environment the tests read (FERRY_TEST_*) on its last lines.
set -euo pipefail

log() { printf '[test-services] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
ensure_packages() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- PostgreSQL --------------------------------------------------------------------
# The store tests run every case on PostgreSQL too. They connect as a test-only role
# over loopback; each test file creates (and drops) its own database.
ensure_packages postgresql postgresql-client
pg_version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$pg_version main$"; then
  log "creating PostgreSQL $pg_version cluster"
  as_root pg_createcluster "$pg_version" main >/dev/null
fi
if ! pg_lsclusters -h | awk -v v="$pg_version" '$1==v && $2=="main" {print $4}' | grep -q online; then
  log "starting PostgreSQL $pg_version"
  as_root pg_ctlcluster "$pg_version" main start
fi
pg_port=$(pg_lsclusters -h | awk -v v="$pg_version" '$1==v && $2=="main" {print $3}')
for _ in $(seq 1 50); do
  as_root su postgres -c "psql -p $pg_port -Atqc 'select 1'" >/dev/null 2>&1 && break
  sleep 0.2
done
as_root su postgres -c "psql -p $pg_port -v ON_ERROR_STOP=1 -Atq" <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ferry_test') THEN
    CREATE ROLE ferry_test LOGIN CREATEDB PASSWORD 'ferry_test';
  END IF;
END $$;
-- DROP DATABASE ... WITH (FORCE) at the end of a test file must also end an autovacuum
-- worker that happens to be in the fresh database; such a worker has no role, so only
-- pg_signal_backend lets a non-superuser end it.
GRANT pg_signal_backend TO ferry_test;
-- The backup tests sign in as a role of their own with a password of their own (to show it
-- appears in no log and no command line), which ferry_test creates and drops.
ALTER ROLE ferry_test CREATEROLE;
SQL

# --- MariaDB ---------------------------------------------------------------------------
# The mysql-backup and restore-verify steps are tested against Debian's real MariaDB
# (issue 14): a test-only user over loopback TCP; each test creates (and drops) its own
# databases. No systemd here: the init script starts mariadbd in the background.
ensure_packages mariadb-server mariadb-client
if ! as_root mariadb-admin --protocol=socket ping >/dev/null 2>&1; then
  log "starting MariaDB"
  as_root service mariadb start >/dev/null
fi
for _ in $(seq 1 100); do
  as_root mariadb-admin --protocol=socket ping >/dev/null 2>&1 && break
  sleep 0.2
done
as_root mariadb-admin --protocol=socket ping >/dev/null 2>&1 || { log "MariaDB did not start"; exit 1; }
# root signs in over the unix socket (unix_socket authentication, Debian's default).
as_root mariadb --protocol=socket <<'SQL'
CREATE USER IF NOT EXISTS 'ferry_test'@'127.0.0.1' IDENTIFIED BY 'ferry_test';
CREATE USER IF NOT EXISTS 'ferry_test'@'localhost' IDENTIFIED BY 'ferry_test';
-- WITH GRANT OPTION: the backup tests create a user of their own with a password of their own.
GRANT ALL PRIVILEGES ON *.* TO 'ferry_test'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'ferry_test'@'localhost' WITH GRANT OPTION;
SQL
mysql_port=$(as_root mariadb --protocol=socket -N -B -e 'SELECT @@port')

# --- S3-compatible object store -------------------------------------------------------
# A backup's copy to a bucket is tested against Ceph's RADOS Gateway, a real S3-compatible
# server: each test file starts a one-node Ceph cluster of its own (one monitor, one
# in-memory OSD) and a gateway on loopback ports (test/helpers/objectStore.ts), so nothing
# is started here.
ensure_packages ceph-mon ceph-osd radosgw ceph-common

# --- Docker registry -------------------------------------------------------------
# Feed tests start their own registries (test/helpers/registry.ts: one docker-registry
# process per test file, on a free port, with a temporary storage directory), so nothing
# is started here. apache2-utils brings htpasswd for the bcrypt lines of htpasswd auth;
# openssl makes the token-auth test's signing certificate.
ensure_packages docker-registry apache2-utils openssl
# busybox-static: container-step tests build their app images from its static /bin/busybox
# (test/helpers/images.ts: `docker import` of a rootfs serving files with `busybox httpd`).
ensure_packages busybox-static

# docker-compose (Debian's 1.29): the compose step's tests bring the same Compose file up
# with it as the reference (test/compose.e2e.test.ts); Ferry itself never runs it.
ensure_packages docker-compose

# Namespace hosts with engines of their own (test/helpers/sshHosts.ts) enter a namespace
# with nsenter (util-linux) and make a proxy's state directory immutable with chattr
# (e2fsprogs) to make its router fail on purpose (test/dataPlane.e2e.test.ts).
ensure_packages util-linux e2fsprogs

# --- Docker engine -------------------------------------------------------------------
# Container steps run against a real engine. Debian's docker.io; dockerd is started in the
# background when its socket does not answer (no systemd here), logging to /tmp.
ensure_packages docker.io
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  as_root sh -c 'nohup dockerd >/tmp/ferry-dockerd.log 2>&1 &'
  for _ in $(seq 1 100); do
    docker info >/dev/null 2>&1 && break
    sleep 0.2
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; see /tmp/ferry-dockerd.log"; exit 1; }
fi

# --- Traffic: nginx, etcd, load generator ----------------------------------------------
# The nginx Router driver and the etcd publisher are tested against the real programs;
# each test starts its own nginx (`nginx -c <its conf>`) and etcd (own data dir and
# ports), so nothing is started here. wrk and bc serve the zero-downtime benchmark and
# ../shared/bench/seed-bluegreen.sh; HAProxy is the proxy benchmark's second reference
# (each run starts its own `haproxy -db -f <its cfg>`).
ensure_packages nginx etcd-server etcd-client wrk bc curl haproxy
# Debian starts nginx on :80 when it is installed (no systemd here it may or may not);
# Ferry's tests never need that instance.

# --- SSH hosts -------------------------------------------------------------------------
# SSH targets are tested against real hosts: network namespaces joined by veth pairs
# (iproute2), each with its own sshd from openssh-server, started by the test that needs
# them (test/helpers/sshHosts.ts), so nothing is started here. Debian starts an sshd on :22
# when the package is installed (no systemd here it may or may not); the tests never use it.
ensure_packages openssh-server openssh-client iproute2
# This machine's /root/.bashrc runs `pyenv init` in every SSH session; a session killed during
# its rehash leaves pyenv's lock, and later root SSH sessions wait on it. pyenv holds it for
# milliseconds: one older than a minute is stale (test/helpers/sshHosts.ts does the same).
find /root/.pyenv/shims -maxdepth 1 -name .pyenv-shim -mmin +1 -delete 2>/dev/null || true

# --- Metrics ---------------------------------------------------------------------------
# test/metrics.test.ts checks GET /metrics with the real `promtool check metrics`, which
# Debian ships in the prometheus package. The tests need only that binary, never the
# Prometheus server the package may start.
ensure_packages prometheus

# --- Web UI ----------------------------------------------------------------------------
# The dashboard's end-to-end tests (test/ui*.test.ts) drive Debian's Chromium headless with
# playwright-core (executablePath /usr/bin/chromium); a browser is never downloaded.
ensure_packages chromium

echo "FERRY_TEST_POSTGRES_URL=postgres://ferry_test:ferry_test@127.0.0.1:$pg_port/postgres"
echo "FERRY_TEST_MYSQL_HOST=127.0.0.1"
echo "FERRY_TEST_MYSQL_PORT=$mysql_port"
echo "FERRY_TEST_MYSQL_USER=ferry_test"
echo "FERRY_TEST_MYSQL_PASSWORD=ferry_test"
