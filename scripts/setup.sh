#!/usr/bin/env bash
# Installs what the project needs on a fresh machine of this kind (Debian, root):
# redis-server for the tests, PostgreSQL's binaries for the demo's PostgreSQL test (it
# runs initdb and postgres itself, as the postgres user the package creates; no service
# is used), Chromium for the dashboard's browser test. Idempotent:
# does nothing when they are already there.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)
# redis-cli --cluster create: the cluster tests' local clusters.
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# tests/src/postgres_server.rs: initdb, postgres, pg_isready, psql.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if [ "${API_CACHE_SKIP_BROWSER:-0}" != "1" ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  # Readable text in the dashboard test's screenshot.
  [ -d /usr/share/fonts/truetype/liberation ] || need+=(fonts-liberation)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo (Rust 1.88+) is required" >&2; exit 1; }
bash "$(dirname "$0")/toolchain.sh"
