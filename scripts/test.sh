#!/usr/bin/env bash
# The README's test command: set-up, then every test of the workspace (unit, doc,
# integration against private redis-servers the tests start themselves, trybuild UI,
# the demo end to end, the dashboard in headless Chromium), then a build of the
# benchmarks (they are run by `cargo bench`, not here).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# The build writes about 5 GB under target/; a full disk shows up as a link failure deep
# in the test run, so say up front how much room there is.
echo "disk free where target/ goes: $(df -h --output=avail . | tail -n 1 | tr -d ' ')"

# Tests start their own redis-server and clusters; a developer's REDIS_URL or
# REDIS_CLUSTER_URLS must not leak into them.
unset REDIS_URL REDIS_CLUSTER_URLS

cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast -- --test-threads="${API_CACHE_TEST_THREADS:-4}"
