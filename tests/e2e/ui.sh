#!/usr/bin/env bash
# The web UI in a real browser: headless Chromium driven over WebDriver
# (Selenium, tests/e2e/ui_e2e.py), against a Wharf seeded by real clients:
# a multi-platform index pushed by skopeo (built here, no network), a
# signature-like referrer attached with `wharf attach`, a file package
# pushed with `wharf push`, an oras-style file artifact. Auth is on: alice
# may do anything, bob may pull team/** only.
#
#   tests/e2e/ui.sh [WHARF_BINARY]      (default: target/debug/wharf)
#
# Prints "ok - NAME" or "FAIL - NAME: reason" per scenario, then exactly
# "ui: N passed, M failed"; exits 1 if M > 0, 2 on a setup error.
# Screenshots go to the work dir's shots/; WHARF_UI_SHOTS=DIR copies them
# to DIR as well (docs/ui/ holds the current ones). WHARF_E2E_KEEP=1 keeps
# the work dir.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WHARF=$(realpath "${1:-$HERE/../../target/debug/wharf}")
[[ -x $WHARF ]] || { echo "no wharf binary at $WHARF" >&2; exit 2; }
VENV=${WHARF_E2E_VENV:-$HOME/.cache/wharf-e2e-venv}
for tool in skopeo jq curl python3 chromium chromedriver; do
    command -v "$tool" >/dev/null || { echo "missing $tool (run tests/e2e/install.sh)" >&2; exit 2; }
done
"$VENV/bin/python" -c 'import selenium' 2>/dev/null || { echo "selenium missing in $VENV (run tests/e2e/install.sh)" >&2; exit 2; }

W=$(mktemp -d "${TMPDIR:-/tmp}/wharf-ui-e2e.XXXXXX")
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    if [[ -n ${WHARF_E2E_KEEP:-} ]]; then echo "# work dir kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HOST=127.0.0.1:$PORT

# shellcheck source=helpers/common.sh
source "$HERE/helpers/common.sh"
containers_env "$W"
cat >"$W/registries.conf" <<EOF
unqualified-search-registries = []

[[registry]]
location = "$HOST"
insecure = true
EOF

# Users and policy (bcrypt hashes from `wharf passwd`).
{
    echo alice-pw | "$WHARF" passwd alice --cost 4
    echo bob-pw | "$WHARF" passwd bob --cost 4
} >"$W/htpasswd"
cat >"$W/wharf.toml" <<EOF
[auth]
htpasswd = "$W/htpasswd"

[[auth.policy]]
repos = ["**"]
pull = ["user:alice"]
push = ["user:alice"]
delete = ["user:alice"]

[[auth.policy]]
repos = ["team/**"]
pull = ["user:bob"]
EOF
"$WHARF" serve --listen "$HOST" --data-dir "$W/data" --config "$W/wharf.toml" >"$W/wharf.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 200); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$HOST/v2/") == 401 ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$W/wharf.log" >&2; echo "wharf serve exited" >&2; exit 2; }
    sleep 0.1
done

# --- seed: real clients ----------------------------------------------------
echo '{"auths": {}}' >"$W/auth.json"
sk login -u alice -p alice-pw --tls-verify=false "$HOST" >/dev/null 2>&1 ||
    { echo "skopeo login failed" >&2; exit 2; }
export DOCKER_CONFIG=$W/docker
mkdir -p "$DOCKER_CONFIG"
echo alice-pw | "$WHARF" login "$HOST" -u alice --password-stdin >/dev/null ||
    { echo "wharf login failed" >&2; exit 2; }

# A multi-platform index (linux/amd64 and linux/arm64), made here, pushed by skopeo.
python3 "$HERE/helpers/oci_layout.py" index "$W/multi" --ref v1 --archs amd64,arm64 --text "ui e2e" >/dev/null
sk copy -q --all --dest-tls-verify=false "oci:$W/multi:v1" "docker://$HOST/team/app:v1" ||
    { echo "skopeo push of the index failed" >&2; exit 2; }
sk copy -q --all --dest-tls-verify=false "oci:$W/multi:v1" "docker://$HOST/team/app:v2" >/dev/null
sk copy -q --all --dest-tls-verify=false "oci:$W/multi:v1" "docker://$HOST/team/app:old" >/dev/null
INDEX=$(sk inspect --raw --tls-verify=false "docker://$HOST/team/app:v1" | sha256sum | cut -d' ' -f1)
INDEX=sha256:$INDEX

# A signature-like referrer of the index.
echo '{"critical": {"image": {"docker-manifest-digest": "'"$INDEX"'"}}}' >"$W/sig.json"
SIG=$("$WHARF" attach -q "$HOST/team/app@$INDEX" --artifact-type application/vnd.dev.cosign.signature.v1+json \
    -a org.opencontainers.image.created=2026-01-01T00:00:00Z "$W/sig.json") ||
    { echo "wharf attach failed" >&2; exit 2; }

# A file package, pushed with `wharf push`.
mkdir -p "$W/pkg/bin" "$W/pkg/docs"
head -c 200000 /dev/urandom >"$W/pkg/bin/tool"
echo "# the tools, packaged" >"$W/pkg/docs/README.md"
(cd "$W/pkg" && "$WHARF" push -q "$HOST/team/tools:1.0" bin docs >/dev/null) ||
    { echo "wharf push failed" >&2; exit 2; }

# Something bob may not see.
python3 "$HERE/helpers/oci_layout.py" image "$W/secret" --ref s1 --text "secret" >/dev/null
sk copy -q --dest-tls-verify=false "oci:$W/secret:s1" "docker://$HOST/secret/db:s1-hidden" >/dev/null

# --- the browser -------------------------------------------------------------
mkdir -p "$W/shots" "$W/downloads"
set +e
"$VENV/bin/python" "$HERE/ui_e2e.py" --base "http://$HOST" --work "$W" \
    --index "$INDEX" --sig "$SIG" --tool "$W/pkg/bin/tool" 2>"$W/ui_e2e.err"
status=$?
set -e
if [[ $status != 0 && $status != 1 ]]; then
    tail -n 30 "$W/ui_e2e.err" >&2
    tail -n 20 "$W/wharf.log" >&2
    echo "ui: 0 passed, 1 failed"
    exit 1
fi
grep -v '^ok - \|^FAIL - ' "$W/ui_e2e.err" | tail -n 20 >&2 || true
if [[ -n ${WHARF_UI_SHOTS:-} ]]; then
    mkdir -p "$WHARF_UI_SHOTS"
    for f in "$W/shots/"*.png; do
        [[ $(basename "$f") == failed-* ]] || cp "$f" "$WHARF_UI_SHOTS/"
    done
fi
exit "$status"
