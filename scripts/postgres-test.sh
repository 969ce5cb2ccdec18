#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on 127.0.0.1 for keycell's tests, so that the PostgreSQL key store
# is tested against a real server on any fresh Debian machine.
#
#   scripts/postgres-test.sh start       installs postgresql if missing, starts a cluster in a new
#                                        temp dir, prints "<dir> <url>"
#   scripts/postgres-test.sh stop DIR    stops that cluster and removes its dir
#   scripts/postgres-test.sh halt DIR    stops that cluster, keeping it (fast shutdown)
#   scripts/postgres-test.sh resume DIR  starts a halted cluster again on its port
set -euo pipefail

die() { echo "postgres-test: ERROR: $*" >&2; exit 1; }

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

# As root, the cluster runs as the postgres user (initdb refuses root).
as_owner() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  start)
    if [[ -z $(pg_bin) ]]; then
      echo "postgres-test: installing postgresql" >&2
      [[ $(id -u) == 0 ]] || die "postgresql is not installed and installing it needs root"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2 ||
        { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2; }
    fi
    bin=$(pg_bin)
    [[ -x $bin/initdb ]] || die "no initdb under /usr/lib/postgresql/*/bin"
    dir=$(mktemp -d /tmp/keycell-pg.XXXXXX)
    chmod 0755 "$dir"
    [[ $(id -u) == 0 ]] && chown postgres "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U keycell -A trust --no-sync >"$dir/initdb.log" 2>&1 ||
      die "initdb failed: $(tail -5 "$dir/initdb.log")"
    for _ in 1 2 3 4 5; do
      port=$((20000 + RANDOM % 40000))
      if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off" start >/dev/null 2>&1; then
        echo "$port" >"$dir/port"
        echo "$dir postgres://keycell@127.0.0.1:$port/postgres"
        exit 0
      fi
    done
    die "the cluster did not start: $(tail -5 "$dir/server.log" 2>/dev/null)"
    ;;
  stop)
    dir=${2:?usage: $0 stop DIR}
    [[ $dir == /tmp/keycell-pg.* ]] || die "not a cluster this script made: $dir"
    as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  halt)
    dir=${2:?usage: $0 halt DIR}
    [[ $dir == /tmp/keycell-pg.* ]] || die "not a cluster this script made: $dir"
    as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  resume)
    dir=${2:?usage: $0 resume DIR}
    [[ $dir == /tmp/keycell-pg.* ]] || die "not a cluster this script made: $dir"
    port=$(cat "$dir/port")
    as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off" start >/dev/null
    ;;
  *) echo "usage: $0 start | stop DIR | halt DIR | resume DIR" >&2; exit 2 ;;
esac
