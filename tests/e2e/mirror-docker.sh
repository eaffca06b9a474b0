#!/usr/bin/env bash
# End-to-end test of the Docker daemon pulling through Wharf as its
# `registry-mirrors` (docs/mirror.md). The daemon sends a mirror bare
# Docker Hub names (/v2/library/alpine/manifests/TAG): no ?ns=, no path in
# the mirror URL. Wharf serves an upstream at the root on an address of
# its own (`listen` in its [[upstreams]] entry). Started here, on loopback:
#   - UP:    Debian's docker-registry (Distribution), playing Docker Hub,
#            holding library/alpine:TAG pushed with skopeo from an OCI
#            layout made by helpers/oci_layout.py (no network);
#   - CACHE: a wharf with one upstream "hub" (url UP, prefix "hub",
#            docker_hub_library on) served at the root on ROOT;
#   - a second, private dockerd (own data root, exec root, socket, its own
#            managed containerd; no bridge, no iptables; vfs storage) whose
#            daemon.json has "registry-mirrors": ["http://ROOT"].
# The machine's Docker daemon is not touched. The private daemon still
# resolves Docker Hub names as docker.io: when the mirror fails it falls
# back to registry-1.docker.io, which does not answer here, so a pull that
# succeeds came through Wharf (and Wharf's log and store show it).
#
#   tests/e2e/mirror-docker.sh [WHARF_BINARY]   (default: target/debug/wharf)
#
# Prints "ok - NAME" or "FAIL - NAME: reason" per scenario, then exactly
# "mirror-docker: N passed, M failed"; exits 1 if M > 0, 2 on a setup
# error. Needs root (dockerd). WHARF_E2E_KEEP=1 keeps the work dir.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WHARF=$(realpath "${1:-${CARGO_TARGET_DIR:-$HERE/../../target}/debug/wharf}")
[[ -x $WHARF ]] || { echo "no wharf binary at $WHARF" >&2; exit 2; }
for tool in dockerd docker ip skopeo jq curl python3 sha256sum; do
    command -v "$tool" >/dev/null || { echo "missing $tool (run tests/e2e/install.sh)" >&2; exit 2; }
done
REGISTRY_BIN=${DOCKER_REGISTRY_BIN:-/usr/bin/docker-registry}
[[ -x $REGISTRY_BIN ]] || { echo "no docker-registry at $REGISTRY_BIN (run tests/e2e/install.sh)" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "mirror-docker: a private dockerd needs root" >&2; exit 2; }

# Short: the daemon's containerd socket lives below it (108 bytes at most).
W=$(mktemp -d /tmp/wmd.XXXXXX)
PIDS=()
DOCKERD_PID=
BRIDGE=
cleanup() {
    local p
    if [[ -n $DOCKERD_PID ]]; then
        kill "$DOCKERD_PID" 2>/dev/null || true
        # The daemon stops its containerd before it exits.
        for _ in $(seq 300); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$DOCKERD_PID" 2>/dev/null || true
    fi
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    [[ -z $BRIDGE ]] || ip link del "$BRIDGE" 2>/dev/null || true
    if [[ -n ${WHARF_E2E_KEEP:-} ]]; then echo "# work dir kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

# shellcheck source=helpers/common.sh
source "$HERE/helpers/common.sh"
UP=127.0.0.1:$(free_port)
CACHE=127.0.0.1:$(free_port)
ROOT=127.0.0.1:$(free_port)
RUN_ID=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
TAG=e2e-$RUN_ID
containers_env "$W"
export DOCKER_CONFIG=$W/docker-config
mkdir -p "$DOCKER_CONFIG"

# --- the upstream: Distribution as Docker Hub --------------------------------
cat >"$W/registry.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $W/registry-data
  delete:
    enabled: true
http:
  addr: $UP
EOF
start_upstream() {
    # containers_env's REGISTRY_AUTH_FILE would be read as its auth config.
    env -u REGISTRY_AUTH_FILE "$REGISTRY_BIN" serve "$W/registry.yml" >>"$W/registry.log" 2>&1 &
    UP_PID=$!
    PIDS+=("$UP_PID")
    for _ in $(seq 300); do
        curl -fsS "http://$UP/v2/" >/dev/null 2>&1 && return 0
        kill -0 "$UP_PID" 2>/dev/null || { cat "$W/registry.log" >&2; echo "docker-registry exited" >&2; exit 2; }
        sleep 0.1
    done
    echo "docker-registry did not start" >&2
    exit 2
}
start_upstream

# --- the cache ---------------------------------------------------------------
# A tag is trusted for 1 s only, so the pull with the upstream stopped has
# to revalidate it and is served stale.
cat >"$W/cache.toml" <<EOF
[[upstreams]]
name = "hub"
url = "http://$UP"
prefix = "hub"
docker_hub_library = true
tag_ttl_secs = 1
listen = "$ROOT"
EOF
"$WHARF" serve --listen "$CACHE" --data-dir "$W/cache-data" --config "$W/cache.toml" >"$W/cache.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 300); do
    curl -fsS "http://$ROOT/v2/" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://$ROOT/v2/" >/dev/null || { cat "$W/cache.log" >&2; echo "wharf did not start on $ROOT" >&2; exit 2; }

# --- the private Docker daemon ----------------------------------------------
cat >"$W/daemon.json" <<EOF
{
  "registry-mirrors": ["http://$ROOT"]
}
EOF
DS=unix://$W/docker.sock
# A bridge of its own: with --bridge=none a daemon deletes the interface
# docker0, which the system's daemon needs for every `docker run`. This
# one has an address from TEST-NET-1 and is deleted at the end.
BRIDGE=wharf-md$(printf '%05d' $(($$ % 100000)))
ip link add "$BRIDGE" type bridge
ip addr add 192.0.2.1/24 dev "$BRIDGE"
ip link set "$BRIDGE" up
dockerd --config-file "$W/daemon.json" --data-root "$W/docker" --exec-root "$W/exec" \
    --pidfile "$W/docker.pid" -H "$DS" --bridge="$BRIDGE" --iptables=false --ip6tables=false \
    --ip-forward=false --ip-masq=false --storage-driver vfs >"$W/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 600); do
    docker -H "$DS" info >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.1
done
if ! docker -H "$DS" info >/dev/null 2>&1; then
    tail -n 30 "$W/dockerd.log" | sed 's/^/# dockerd: /' >&2
    echo "mirror-docker: the private dockerd did not start (log above)" >&2
    exit 2
fi
dk() { docker -H "$DS" "$@"; }
[[ $(dk info --format '{{json .RegistryConfig.Mirrors}}') == *"http://$ROOT/"* ]] ||
    { echo "the private dockerd does not list the mirror: $(dk info --format '{{json .RegistryConfig.Mirrors}}')" >&2; exit 2; }

# --- the image upstream ------------------------------------------------------
S=$W/src
python3 "$HERE/helpers/oci_layout.py" image "$S" --ref v1 --text "mirror-docker $RUN_ID" --random-kib 256 >/dev/null
sk copy -q --preserve-digests --dest-tls-verify=false "oci:$S:v1" "docker://$UP/library/alpine:$TAG"
WANT=$(ref_digest "$S" v1)
CONFIG=$(jq -r .config.digest "$(blob_file "$S" "$WANT")")
LAYER=$(jq -r '.layers[0].digest' "$(blob_file "$S" "$WANT")")
[[ $(sk inspect --tls-verify=false --raw "docker://$UP/library/alpine:$TAG" | sha256sum | cut -d' ' -f1) == "${WANT#sha256:}" ]] ||
    { echo "the upstream does not hold the image as pushed" >&2; exit 2; }

# Does the cache's store hold manifest $2 in repository $1 / blob $1?
has_manifest() { compgen -G "$W/cache-data/repositories/$1/_manifests/sha256/${2#sha256:}*" >/dev/null; }
in_store() { local h=${1#sha256:}; compgen -G "$W/cache-data/blobs/sha256/${h:0:2}/$h*" >/dev/null; }
# Access-log lines of the cache for $1 $2 answered $3.
cache_saw() { grep -c "method=$1 path=$2 status=$3" "$W/cache.log" || true; }

# --- scenarios ---------------------------------------------------------------
# `docker pull alpine:TAG` through the mirror: the upstream's manifest
# digest and config (the image ID), and the cache holds the image under
# hub/library/alpine.
sc_pull_through_the_mirror() {
    dk pull "alpine:$TAG" >"$W/pull1.out" 2>&1 || fail "docker pull: $(tail -n 3 "$W/pull1.out")"
    expect_eq "$(dk image inspect --format '{{.Id}}' "alpine:$TAG")" "$CONFIG" "image ID (config digest)"
    expect_eq "$(dk image inspect --format '{{index .RepoDigests 0}}' "alpine:$TAG")" "alpine@$WANT" "repo digest"
    # The daemon resolves the tag with a HEAD, then GETs the manifest by digest.
    (($(cache_saw HEAD "/v2/library/alpine/manifests/$TAG" 200) + $(cache_saw GET "/v2/library/alpine/manifests/$TAG" 200) >= 1)) ||
        fail "the daemon's tag request did not reach wharf"
    (($(cache_saw GET "/v2/library/alpine/manifests/$WANT" 200) >= 1)) || fail "the daemon's manifest request did not reach wharf"
    (($(cache_saw GET "/v2/library/alpine/blobs/$LAYER" 200) == 1)) || fail "the daemon's layer request did not reach wharf"
    grep -q "fetching a blob from the upstream.*" "$W/cache.log" || fail "wharf fetched nothing from the upstream"
    has_manifest hub/library/alpine "$WANT" || fail "the cache's store has no manifest $WANT"
    in_store "$LAYER" || fail "the layer is not in the cache's store"
    expect_eq "$(curl -fsS "http://$CACHE/v2/hub/library/alpine/tags/list" | jq -c .tags)" "[\"$TAG\"]" "tags the cache holds"
    grep -q "\"GET /v2/library/alpine/blobs/$LAYER HTTP" "$W/registry.log" || fail "the upstream served no layer"
    dk rmi -f "$CONFIG" >/dev/null
}

# The upstream stopped: the daemon pulls the same image from the cache
# (the tag is due for revalidation, the upstream is unreachable: served
# stale), by tag and by digest, and gets the same image.
sc_pull_from_the_cache_with_the_upstream_stopped() {
    kill "$UP_PID"
    wait "$UP_PID" 2>/dev/null || true
    curl -fsS "http://$UP/v2/" >/dev/null 2>&1 && fail "the upstream still answers"
    sleep 2 # past the tag's 1 s TTL: the pull must ask the upstream first
    dk pull "alpine:$TAG" >"$W/pull2.out" 2>&1 || fail "docker pull with the upstream stopped: $(tail -n 3 "$W/pull2.out")"
    expect_eq "$(dk image inspect --format '{{.Id}}' "alpine:$TAG")" "$CONFIG" "image ID from the cache"
    expect_eq "$(dk image inspect --format '{{index .RepoDigests 0}}' "alpine:$TAG")" "alpine@$WANT" "repo digest from the cache"
    grep -q "serving the cached tag stale" "$W/cache.log" || fail "wharf did not say it served the tag stale"
    dk rmi -f "$CONFIG" >/dev/null
    dk pull "alpine@$WANT" >"$W/pull3.out" 2>&1 || fail "docker pull by digest: $(tail -n 3 "$W/pull3.out")"
    expect_eq "$(dk image inspect --format '{{.Id}}' "alpine@$WANT")" "$CONFIG" "image ID by digest"
    dk rmi -f "$CONFIG" >/dev/null
    # One layer GET reached wharf per pull; one reached the upstream in all.
    (($(cache_saw GET "/v2/library/alpine/blobs/$LAYER" 200) == 3)) || fail "wharf served the layer $(cache_saw GET "/v2/library/alpine/blobs/$LAYER" 200) times, not 3"
    expect_eq "$(grep -c "\"GET /v2/library/alpine/blobs/$LAYER HTTP" "$W/registry.log")" 1 "layer GETs upstream"
}

# A push to the mirror's address follows the upstream's push setting
# (off): the daemon is refused (its blobs are there already, so the
# manifest is what it sends), and nothing reaches the store. The upstream
# is still stopped: the pull before is served stale again.
sc_push_to_the_mirror_is_refused() {
    dk pull "alpine:$TAG" >/dev/null 2>&1 || fail "docker pull"
    dk tag "alpine:$TAG" "$ROOT/library/alpine:pushed-$RUN_ID"
    if dk push "$ROOT/library/alpine:pushed-$RUN_ID" >"$W/push.out" 2>&1; then
        fail "the push was accepted"
    fi
    grep -q "denied: .*pushes into hub/ are refused" "$W/push.out" || fail "the push was not denied as wharf says: $(tail -n 2 "$W/push.out")"
    (($(cache_saw PUT "/v2/library/alpine/manifests/pushed-$RUN_ID" 403) >= 1)) || fail "wharf did not refuse the manifest with 403"
    expect_eq "$(curl -fsS "http://$CACHE/v2/hub/library/alpine/tags/list" | jq -c .tags)" "[\"$TAG\"]" "tags after the refused push"
    dk rmi -f "$CONFIG" >/dev/null
}

run_scenarios mirror-docker "$W" pull_through_the_mirror pull_from_the_cache_with_the_upstream_stopped push_to_the_mirror_is_refused
if ((SCENARIOS_FAILED)); then
    tail -n 20 "$W/cache.log" | sed "s/^/# cache: /" >&2
    tail -n 10 "$W/dockerd.log" | sed "s/^/# dockerd: /" >&2
fi
echo "mirror-docker: $SCENARIOS_PASSED passed, $SCENARIOS_FAILED failed"
((SCENARIOS_FAILED == 0))
