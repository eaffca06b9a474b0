#!/usr/bin/env bash
# End-to-end tests of the storage lifecycle rules with real clients:
# immutable tags refused to podman and skopeo with the rule named, and
# retention (keep the newest tags) applied by the server's background
# garbage collection to images pushed with skopeo, the kept ones pulling
# completely.
#
#   tests/e2e/lifecycle.sh [WHARF_BINARY]      (default: target/debug/wharf)
#
# Prints "ok - NAME" or "FAIL - NAME: reason" per scenario, then exactly
# "lifecycle: N passed, M failed"; exits 1 if M > 0, 2 on a setup error.
# WHARF_E2E_KEEP=1 keeps the work dir.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WHARF=$(realpath "${1:-$HERE/../../target/debug/wharf}")
[[ -x $WHARF ]] || { echo "no wharf binary at $WHARF" >&2; exit 2; }
for tool in skopeo podman jq curl python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (run tests/e2e/install.sh)" >&2; exit 2; }
done

W=$(mktemp -d "${TMPDIR:-/tmp}/wharf-lifecycle-e2e.XXXXXX")
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    if [[ -n ${WHARF_E2E_KEEP:-} ]]; then echo "# work dir kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HOST=127.0.0.1:$PORT
RUN_ID=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')

# Tool configuration in the work dir only (as tests/e2e/run.sh does).
# shellcheck source=helpers/common.sh
source "$HERE/helpers/common.sh"
containers_env "$W"
cat >"$W/registries.conf" <<EOF
unqualified-search-registries = []

[[registry]]
location = "$HOST"
insecure = true
EOF
# layout_image DIR REF TEXT: a small image of its own (random bytes) in an OCI layout.
layout_image() { python3 "$HERE/helpers/oci_layout.py" image "$1" --ref "$2" --text "$3" --random-kib 64 >/dev/null; }

# Collect every second; a minute of grace so a push in progress keeps its
# blobs. Retention of tags does not wait for the grace period.
cat >"$W/wharf.toml" <<EOF
[gc]
interval_secs = 1
grace_secs = 60

[[immutable_tags]]
repos = ["release/**"]
tags = ["v*"]

[[retention]]
repos = ["ci/**"]
protect = ["latest"]
keep_newest = 2
EOF
"$WHARF" serve --listen "$HOST" --data-dir "$W/data" --config "$W/wharf.toml" >"$W/wharf.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 200); do
    curl -fsS "http://$HOST/v2/" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$W/wharf.log" >&2; echo "wharf serve exited" >&2; exit 2; }
    sleep 0.1
done
curl -fsS "http://$HOST/v2/" >/dev/null || { cat "$W/wharf.log" >&2; exit 2; }

# --- scenarios -----------------------------------------------------------
sc_immutable_podman_skopeo() {
    local repo=release/app-$RUN_ID
    layout_image "$W/one" v1 "one $RUN_ID"
    layout_image "$W/two" v1 "two $RUN_ID"
    sk copy -q --dest-tls-verify=false "oci:$W/one:v1" "docker://$HOST/$repo:v1"
    local want
    want=$(sk inspect --tls-verify=false "docker://$HOST/$repo:v1" | jq -r .Digest)
    # The same image again: fine (a retried push).
    sk copy -q --dest-tls-verify=false "oci:$W/one:v1" "docker://$HOST/$repo:v1"
    # Another image onto v1: skopeo is refused, and says why.
    if sk copy -q --dest-tls-verify=false "oci:$W/two:v1" "docker://$HOST/$repo:v1" 2>"$W/sk.err"; then
        fail "skopeo moved an immutable tag"
    fi
    grep -q "immutable" "$W/sk.err" || fail "skopeo's error does not say immutable: $(cat "$W/sk.err")"
    # podman too.
    sk copy -q "oci:$W/two:v1" "containers-storage:$HOST/$repo:v1"
    if podman push -q --tls-verify=false "$HOST/$repo:v1" 2>"$W/podman.err"; then
        fail "podman moved an immutable tag"
    fi
    grep -q "immutable_tags #1" "$W/podman.err" || fail "podman's error does not name the rule: $(cat "$W/podman.err")"
    # Not covered: another tag takes the same image.
    podman push -q --tls-verify=false "$HOST/$repo:v1" "docker://$HOST/$repo:next"
    expect_eq "$(sk inspect --tls-verify=false "docker://$HOST/$repo:v1" | jq -r .Digest)" "$want" "v1 after the refused pushes"
    podman rmi -a -f >/dev/null
}

sc_retention_skopeo() {
    local repo=ci/app-$RUN_ID i tags
    for i in 1 2 3 4; do
        layout_image "$W/b$i" b "build $i $RUN_ID"
    done
    sk copy -q --dest-tls-verify=false "oci:$W/b1:b" "docker://$HOST/$repo:latest"
    for i in 1 2 3 4; do
        sk copy -q --dest-tls-verify=false "oci:$W/b$i:b" "docker://$HOST/$repo:b$i"
    done
    # The collector runs every second: b1 and b2 go, b3, b4 and latest stay.
    for _ in $(seq 600); do
        tags=$(sk list-tags --tls-verify=false "docker://$HOST/$repo" | jq -c '.Tags | sort')
        [[ $tags == '["b3","b4","latest"]' ]] && break
        sleep 0.2
    done
    expect_eq "$tags" '["b3","b4","latest"]' "tags after retention"
    if sk inspect --tls-verify=false "docker://$HOST/$repo:b1" >/dev/null 2>&1; then
        fail "b1 is still there"
    fi
    # The kept ones pull completely, as pushed.
    for i in 3 4; do
        sk copy -q --preserve-digests --src-tls-verify=false "docker://$HOST/$repo:b$i" "oci:$W/out$i:b"
        expect_eq "$(ref_digest "$W/out$i" b)" "$(ref_digest "$W/b$i" b)" "b$i pulled"
        python3 "$HERE/helpers/oci_layout.py" verify "$W/out$i" >/dev/null || fail "b$i pulled corrupt"
    done
    grep -q "garbage collection done" "$W/wharf.log" || fail "no collection run was logged"
}

run_scenarios lifecycle "$W" immutable_podman_skopeo retention_skopeo
if ((SCENARIOS_FAILED)); then tail -n 20 "$W/wharf.log" | sed 's/^/# wharf: /' >&2; fi
echo "lifecycle: $SCENARIOS_PASSED passed, $SCENARIOS_FAILED failed"
((SCENARIOS_FAILED == 0))
