#!/usr/bin/env bash
# Build Wharf's container image (dist/Dockerfile) with the local Docker
# engine: compile a static wharf (glibc, +crt-static) on this machine, put
# it with the Dockerfile in a small build context, docker build.
#
#   bash dist/build-image.sh [TAG]     default TAG: wharf:<crate version>
#
# WHARF_IMAGE_PROFILE selects the cargo profile (default dist: full LTO,
# the smallest binary; release builds faster, for tests).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
tag=${1:-wharf:$version}
profile=${WHARF_IMAGE_PROFILE:-dist}
target=$(rustc -vV | sed -n 's/^host: //p')
command -v docker >/dev/null || { echo "build-image.sh: docker is missing" >&2; exit 2; }

echo "building a static wharf ($target, profile $profile)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build -q --profile "$profile" --target "$target" -p wharf --bin wharf
bin=${CARGO_TARGET_DIR:-$root/target}/$target/$profile/wharf

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/data" "$ctx/tmp"
cp "$bin" "$ctx/wharf"
strip "$ctx/wharf" 2>/dev/null || true
# A static binary needs no loader; refuse to ship one that does.
if readelf -l "$ctx/wharf" 2>/dev/null | grep -q 'Requesting program interpreter'; then
    echo "build-image.sh: $bin is not static" >&2
    exit 1
fi
# The CA certificates of this machine (Debian's ca-certificates), for a
# pull-through cache of a registry on HTTPS: the client trusts the system's
# roots, and scratch has none.
ca=${WHARF_IMAGE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[[ -s $ca ]] || { echo "build-image.sh: no CA bundle at $ca (install ca-certificates or set WHARF_IMAGE_CA_BUNDLE)" >&2; exit 1; }
mkdir -p "$ctx/etc/ssl/certs"
cp "$ca" "$ctx/etc/ssl/certs/ca-certificates.crt"
cp dist/Dockerfile "$ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null
echo "$tag"
