#!/usr/bin/env bash
# End-to-end tests of authentication: start a Wharf with htpasswd users, the
# token service and a policy on a free loopback port, and run the scenarios
# of auth-scenarios.sh (skopeo, podman, wharf log in and push/pull through
# the token flow) against it, and against a second one with the same users
# serving HTTPS with a CA made here (the token flow over TLS).
#
#   tests/e2e/auth.sh [WHARF_BINARY]      (default target/debug/wharf)
#
# Output as run.sh: "ok/FAIL - NAME" lines, then "e2e: N passed, M failed".
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=$(realpath "${1:-${CARGO_TARGET_DIR:-$HERE/../../target}/debug/wharf}")
[[ -x $bin ]] || { echo "auth.sh: no wharf binary at $bin" >&2; exit 2; }
command -v htpasswd >/dev/null || { echo "auth.sh: htpasswd missing; run tests/e2e/install.sh" >&2; exit 2; }

work=$(mktemp -d -t wharf-e2e-auth.XXXXXX)
pid=
tls_pid=
cleanup() {
    local p
    for p in $pid $tls_pid; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

rand() { head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
user=alice pass=$(rand) denied=bob denied_pass=$(rand)
# One hash from `wharf passwd`, one from Apache's `htpasswd -B`.
printf '%s\n' "$pass" | "$bin" passwd "$user" >"$work/htpasswd"
htpasswd -nbB "$denied" "$denied_pass" | sed '/^$/d' >>"$work/htpasswd"
cat >"$work/wharf.toml" <<TOML
[auth]
htpasswd = "$work/htpasswd"
[auth.token]
enabled = true
[[auth.policy]]
repos = ["team/**"]
pull = ["user:$user"]
push = ["user:$user"]
delete = ["user:$user"]
TOML

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve --config "$work/wharf.toml" --listen "127.0.0.1:$port" --data-dir "$work/data" \
    --log-level warn >"$work/wharf.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/") == 401 ]] && break
    sleep 0.1
done

# The same users and policy served over HTTPS with a CA made here, for the
# token flow over TLS (clients get the CA with --cert-dir / --ca-cert).
bash "$HERE/helpers/make-ca.sh" "$work/tls"
tls_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve --config "$work/wharf.toml" --listen "127.0.0.1:$tls_port" --data-dir "$work/tls-data" \
    --tls-cert "$work/tls/server.crt" --tls-key "$work/tls/server.key" \
    --log-level warn >"$work/wharf-tls.log" 2>&1 &
tls_pid=$!
for _ in $(seq 100); do
    [[ $(curl -s --cacert "$work/tls/clients/ca.crt" -o /dev/null -w '%{http_code}' \
        "https://127.0.0.1:$tls_port/v2/") == 401 ]] && break
    sleep 0.1
done

status=0
WHARF_E2E_TLS_HOST=127.0.0.1:$tls_port WHARF_E2E_TLS_CA_DIR=$work/tls/clients \
WHARF_E2E_AUTH=1 WHARF_E2E_BIN=$bin \
    WHARF_E2E_AUTH_USER=$user WHARF_E2E_AUTH_PASS=$pass \
    WHARF_E2E_AUTH_DENIED=$denied WHARF_E2E_AUTH_DENIED_PASS=$denied_pass \
    WHARF_E2E_AUTH_HTPASSWD=$work/htpasswd \
    bash "$HERE/run.sh" "127.0.0.1:$port" || status=$?
if [[ $status != 0 ]]; then
    echo "--- wharf log (tail) ---" >&2
    tail -n 30 "$work/wharf.log" >&2
    echo "--- wharf (TLS) log (tail) ---" >&2
    tail -n 30 "$work/wharf-tls.log" >&2
fi
exit "$status"
