#!/usr/bin/env bash
# rust-toolchain.toml pins the compiler the trybuild `.stderr` files were written with.
# Machines of this kind carry one Rust toolchain and fetch no other. Where that toolchain
# is not installed under the pinned name, name it so (a link, nothing is downloaded);
# every cargo call in the repository would otherwise try to download the pin and fail.
# Runs its own rustup/rustc calls outside the pin (RUSTUP_TOOLCHAIN).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v rustup >/dev/null 2>&1 || exit 0
pinned=$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)
[ -n "$pinned" ] || exit 0
if RUSTUP_TOOLCHAIN=stable rustup toolchain list | grep -q "^${pinned}[- ]"; then
  exit 0
fi
sysroot=$(RUSTUP_TOOLCHAIN=stable rustc --print sysroot)
host=$(RUSTUP_TOOLCHAIN=stable rustc -vV | sed -n 's/^host: //p')
have=$(RUSTUP_TOOLCHAIN=stable rustc --version | awk '{print $2}')
if [ "$have" != "$pinned" ]; then
  echo "toolchain: rust-toolchain.toml pins $pinned, this machine has $have; using $have" \
    "under the pinned name (the UI tests' .stderr files may then differ)" >&2
fi
ln -s "$sysroot" "${RUSTUP_HOME:-$HOME/.rustup}/toolchains/${pinned}-${host}"
echo "toolchain: $have linked as $pinned-$host"
