#!/usr/bin/env bash
# The README's main command: builds the demo and runs the rollout report (cache off vs
# on) on the embedded defaults (SQLite in a temporary file, in-process cache) unless REDIS_URL is
# set. Extra arguments go to the report (see `--help`), for example
# `bash scripts/report.sh --instances 3 --redis-cluster`: three demo instances on a local
# Redis Cluster the report starts itself (redis-server and redis-cli, from scripts/setup.sh),
# or `bash scripts/report.sh --database 'postgres:///postgres?host=/var/run/postgresql'`:
# the demo on PostgreSQL (a database per run, created and dropped by the report).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null 2>&1 || { echo "cargo (Rust 1.88+) is required" >&2; exit 1; }
bash scripts/toolchain.sh
cargo run --release --locked -p examples --bin report -- "$@"
