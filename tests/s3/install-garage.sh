#!/usr/bin/env bash
# Build Garage (the S3 store the S3 tests run against) into
# $HOME/.cache/wharf-garage/<version>/bin/garage unless it is there already.
# A fresh build takes 15-45 minutes on two cores, so CI keeps the cache.
#
#   bash tests/s3/install-garage.sh     # prints the binary's path
set -euo pipefail
version=2.5.0
root=$HOME/.cache/wharf-garage/$version
bin=$root/bin/garage
if [[ ! -x $bin ]] || ! "$bin" --version >/dev/null 2>&1; then
    echo "building garage $version into $root (once; 15-45 minutes on two cores)" >&2
    # Its own temporary target directory, not the project's (CARGO_TARGET_DIR).
    env -u CARGO_TARGET_DIR cargo install --locked "garage@$version" --root "$root" >&2
fi
echo "$bin"
