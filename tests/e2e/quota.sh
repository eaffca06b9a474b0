#!/usr/bin/env bash
# End-to-end tests of quotas: start a Wharf whose quota/** namespace may
# hold 256 KiB on a free loopback port, and run the scenarios of
# quota-scenarios.sh against it (skopeo, podman and the wharf client pushing
# past the quota fail and print its message; what fits goes in).
#
#   tests/e2e/quota.sh [WHARF_BINARY]      (default target/debug/wharf)
#
# Output as run.sh: "ok/FAIL - NAME" lines, then "e2e: N passed, M failed".
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=$(realpath "${1:-${CARGO_TARGET_DIR:-$HERE/../../target}/debug/wharf}")
[[ -x $bin ]] || { echo "quota.sh: no wharf binary at $bin" >&2; exit 2; }

work=$(mktemp -d -t wharf-e2e-quota.XXXXXX)
pid=
cleanup() {
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

kib=256
cat >"$work/wharf.toml" <<TOML
[[quotas]]
repos = ["quota/**"]
max_bytes = "$kib KiB"
TOML

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve --config "$work/wharf.toml" --listen "127.0.0.1:$port" --data-dir "$work/data" \
    --log-level warn >"$work/wharf.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
    sleep 0.1
done

status=0
WHARF_E2E_QUOTA=1 WHARF_E2E_QUOTA_KIB=$kib WHARF_E2E_BIN=$bin \
    bash "$HERE/run.sh" "127.0.0.1:$port" || status=$?
if [[ $status != 0 ]]; then
    echo "--- wharf log (tail) ---" >&2
    tail -n 30 "$work/wharf.log" >&2
fi
exit "$status"
