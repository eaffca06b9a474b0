#!/usr/bin/env bash
# End-to-end tests of the pull-through cache ([[upstreams]], docs/mirror.md)
# with real clients. Started here, on loopback:
#   - UP:    a plain wharf, the upstream, holding images pushed with skopeo
#            from OCI layouts made by helpers/oci_layout.py (one image per
#            client, and a linux/amd64 + linux/arm64 index);
#   - CACHE: a wharf caching UP under the prefix "up" (its registry host,
#            for containerd's ?ns=, is UP's host:port);
#   - CHAIN: a wharf caching CACHE under the prefix "chain";
#   - a private containerd (own root, state and socket in the work dir)
#            for `ctr`.
# Scenarios: podman with a registries.conf mirror, ctr with a hosts.toml
# mirror (the ?ns= path), skopeo copy and `wharf cp` through the cache, one
# platform of an index then `--all`, and the chained cache. Digests are
# compared with the upstream's (or a direct pull's).
#
#   tests/e2e/mirror.sh [WHARF_BINARY]      (default: target/debug/wharf)
#
# Prints "ok - NAME" or "FAIL - NAME: reason" per scenario, then exactly
# "mirror: N passed, M failed"; exits 1 if M > 0, 2 on a setup error.
# WHARF_E2E_KEEP=1 keeps the work dir.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WHARF=$(realpath "${1:-$HERE/../../target/debug/wharf}")
[[ -x $WHARF ]] || { echo "no wharf binary at $WHARF" >&2; exit 2; }
for tool in skopeo podman ctr containerd jq curl python3 sha256sum; do
    command -v "$tool" >/dev/null || { echo "missing $tool (run tests/e2e/install.sh)" >&2; exit 2; }
done

W=$(mktemp -d "${TMPDIR:-/tmp}/wharf-mirror-e2e.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ -n ${WHARF_E2E_KEEP:-} ]]; then echo "# work dir kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

# shellcheck source=helpers/common.sh
source "$HERE/helpers/common.sh"
UP=127.0.0.1:$(free_port)
CACHE=127.0.0.1:$(free_port)
CHAIN=127.0.0.1:$(free_port)
# Nothing listens here: a pull that succeeds with it as the registry came
# through the mirror.
DEAD=127.0.0.1:$(free_port)
RUN_ID=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')

# Tool configuration in the work dir only (as tests/e2e/run.sh does).
containers_env "$W"
export CONTAINERS_REGISTRIES_CONF=$W/registries-direct.conf
# Direct pulls: every registry here, insecure.
cat >"$W/registries-direct.conf" <<EOF
unqualified-search-registries = []

[[registry]]
location = "$UP"
insecure = true
EOF
# Through the cache: UP's images come from CACHE's prefix "up" (podman
# sends the name under the mirror location's path: up/e2e/...).
cat >"$W/registries-mirror.conf" <<EOF
unqualified-search-registries = []

[[registry]]
prefix = "$UP"
location = "$UP"
insecure = true

[[registry.mirror]]
location = "$CACHE/up"
insecure = true
EOF
# Is blob DIGEST's content in the store under data dir $1?
in_store() {
    local hex=${2#sha256:}
    compgen -G "$1/blobs/sha256/${hex:0:2}/$hex*" >/dev/null
}
# Does repository $2 of the store under $1 hold manifest $3?
has_manifest() {
    local hex=${3#sha256:}
    compgen -G "$1/repositories/$2/_manifests/sha256/$hex*" >/dev/null
}

start_wharf() { # NAME HOST DATA [ARGS...]
    local name=$1 host=$2 data=$3
    shift 3
    "$WHARF" serve --listen "$host" --data-dir "$data" "$@" >"$W/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 300); do
        curl -fsS "http://$host/v2/" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$W/$name.log" >&2; echo "$name exited" >&2; exit 2; }
        sleep 0.1
    done
    cat "$W/$name.log" >&2
    echo "$name did not start" >&2
    exit 2
}

# --- servers ---------------------------------------------------------------
start_wharf upstream "$UP" "$W/up-data"
cat >"$W/cache.toml" <<EOF
[[upstreams]]
name = "up"
url = "http://$UP"
prefix = "up"
EOF
start_wharf cache "$CACHE" "$W/cache-data" --config "$W/cache.toml"
cat >"$W/chain.toml" <<EOF
[[upstreams]]
name = "cache"
url = "http://$CACHE"
prefix = "chain"
EOF
start_wharf chain "$CHAIN" "$W/chain-data" --config "$W/chain.toml"

# A private containerd: nothing of the machine's (no CRI, native snapshots).
C=$W/containerd
mkdir -p "$C"
cat >"$C/config.toml" <<EOF
version = 2
root = "$C/root"
state = "$C/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.overlayfs"]
[grpc]
  address = "$C/sock"
[ttrpc]
  address = "$C/sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
EOF
containerd --config "$C/config.toml" >"$W/containerd.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do
    ctr -a "$C/sock" version >/dev/null 2>&1 && break
    sleep 0.1
done
ctr -a "$C/sock" version >/dev/null || { cat "$W/containerd.log" >&2; echo "containerd did not start" >&2; exit 2; }
ctrc() { ctr -a "$C/sock" -n e2e "$@"; }

# --- images upstream -------------------------------------------------------
S=$W/src
mkdir -p "$S"
for name in podman ctr skopeo; do
    python3 "$HERE/helpers/oci_layout.py" image "$S/$name" --ref v1 --text "$name $RUN_ID" --random-kib 64 >/dev/null
    sk copy -q --preserve-digests --dest-tls-verify=false "oci:$S/$name:v1" "docker://$UP/e2e/$name:v1"
done
python3 "$HERE/helpers/oci_layout.py" index "$S/multi" --ref v1 --archs amd64,arm64 --text "multi $RUN_ID" >"$S/multi.json"
sk copy -q --all --preserve-digests --dest-tls-verify=false "oci:$S/multi:v1" "docker://$UP/e2e/multi:v1"
# The upstream's digests: what every pull through a cache must give.
up_digest() { sk inspect --tls-verify=false --raw "docker://$UP/$1" | sha256sum | sed 's/^/sha256:/; s/ .*//'; }

# --- scenarios -------------------------------------------------------------
# podman with a [[registry.mirror]] on CACHE: the image pulled by UP's name
# comes from the cache (which then has it) and its ID is a direct pull's.
sc_podman_registries_conf() {
    podman pull -q "$UP/e2e/podman:v1" >/dev/null
    local direct_id direct_layers
    direct_id=$(podman image inspect --format '{{.Id}}' "$UP/e2e/podman:v1")
    direct_layers=$(podman image inspect --format '{{json .RootFS.Layers}}' "$UP/e2e/podman:v1" | jq -c .)
    podman rmi -a -f >/dev/null
    curl -fsS "http://$CACHE/v2/up/e2e/podman/tags/list" >/dev/null 2>&1 && fail "cached before the mirrored pull"
    CONTAINERS_REGISTRIES_CONF=$W/registries-mirror.conf podman pull -q "$UP/e2e/podman:v1" >/dev/null
    expect_eq "$(podman image inspect --format '{{.Id}}' "$UP/e2e/podman:v1")" "$direct_id" "image ID through the mirror"
    expect_eq "$(podman image inspect --format '{{json .RootFS.Layers}}' "$UP/e2e/podman:v1" | jq -c .)" "$direct_layers" "layers through the mirror"
    expect_eq "$(curl -fsS "http://$CACHE/v2/up/e2e/podman/tags/list" | jq -c .tags)" '["v1"]' "tags the cache holds"
    local m cfg
    m=$(ref_digest "$S/podman" v1)
    cfg=$(jq -r .config.digest "$(blob_file "$S/podman" "$m")")
    expect_eq "sha256:$direct_id" "$cfg" "image ID is the config digest"
    has_manifest "$W/cache-data" up/e2e/podman "$m" || fail "the cache's store has no manifest $m"
    in_store "$W/cache-data" "$(jq -r '.layers[0].digest' "$(blob_file "$S/podman" "$m")")" || fail "the layer is not in the cache's store"
    podman rmi -a -f >/dev/null
}

# ctr (containerd 1.6) with a hosts.toml whose server is dead and whose
# mirror is CACHE: containerd asks CACHE for /v2/e2e/ctr/...?ns=$UP, which
# is served from (and cached under) up/e2e/ctr.
sc_ctr_hosts_toml() {
    local hosts=$W/certs.d
    mkdir -p "$hosts/$UP"
    cat >"$hosts/$UP/hosts.toml" <<EOF
server = "http://$DEAD"

[host."http://$CACHE"]
  capabilities = ["pull", "resolve"]
EOF
    ctrc images pull --snapshotter native --platform linux/amd64 --hosts-dir "$hosts" "$UP/e2e/ctr:v1" >"$W/ctr-pull.out" 2>&1 ||
        fail "ctr pull: $(tail -n 3 "$W/ctr-pull.out")"
    local want
    want=$(ref_digest "$S/ctr" v1)
    expect_eq "$(ctrc images ls -q | grep -c "e2e/ctr:v1")" 1 "images ctr has"
    expect_eq "$(ctrc images ls | awk -v r="$UP/e2e/ctr:v1" '$1 == r {print $3}')" "$want" "digest ctr pulled"
    expect_eq "$(up_digest e2e/ctr:v1)" "$want" "the upstream's digest"
    grep -q "path=/v2/e2e/ctr/manifests/v1 status=200" "$W/cache.log" || fail "the cache saw no ?ns= manifest request"
    expect_eq "$(curl -fsS "http://$CACHE/v2/up/e2e/ctr/tags/list" | jq -c .tags)" '["v1"]' "tags cached under the prefix"
    has_manifest "$W/cache-data" up/e2e/ctr "$want" || fail "not cached under up/e2e/ctr"
    # A prefix-routed pull of the same image is a hit on that cache.
    local how
    how=$(curl -sS -o /dev/null -D - -H "Accept: application/vnd.oci.image.manifest.v1+json" \
        "http://$CACHE/v2/up/e2e/ctr/manifests/$want" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-wharf-cache" {print $2}')
    expect_eq "$how" hit "how the prefix-routed pull was served"
    # A registry the cache does not mirror: 404 NAME_UNKNOWN.
    expect_eq "$(curl -sS "http://$CACHE/v2/e2e/ctr/manifests/v1?ns=quay.io" | jq -r '.errors[0].code')" NAME_UNKNOWN "code for an unmirrored ns"
    ctrc images rm "$UP/e2e/ctr:v1" >/dev/null
}

# skopeo copy and wharf cp through the cache: the upstream's digests.
sc_skopeo_and_wharf_cp() {
    local want
    want=$(ref_digest "$S/skopeo" v1)
    expect_eq "$(up_digest e2e/skopeo:v1)" "$want" "the upstream's digest"
    sk copy -q --preserve-digests --src-tls-verify=false "docker://$CACHE/up/e2e/skopeo:v1" "oci:$W/sk-out:v1"
    expect_eq "$(ref_digest "$W/sk-out" v1)" "$want" "digest skopeo copied through the cache"
    "$WHARF" cp -q "$CACHE/up/e2e/skopeo:v1" "oci:$W/wharf-out:v1"
    expect_eq "$(ref_digest "$W/wharf-out" v1)" "$want" "digest wharf cp copied through the cache"
    local b
    for b in $(jq -r '.config.digest, .layers[].digest' "$(blob_file "$S/skopeo" "$want")"); do
        cmp -s "$(blob_file "$W/wharf-out" "$b")" "$(blob_file "$S/skopeo" "$b")" || fail "blob $b differs"
    done
}

# One platform of an index through the cache: the index, that platform's
# manifest, config and layer are cached, the other platform's are not;
# `skopeo copy --all` then caches everything.
sc_multi_platform() {
    local index amd arm amd_layer arm_layer amd_cfg arm_cfg
    index=$(jq -r .top.digest "$S/multi.json")
    amd=$(jq -r .children.amd64.digest "$S/multi.json")
    arm=$(jq -r .children.arm64.digest "$S/multi.json")
    amd_layer=$(jq -r '.layers[0].digest' "$(blob_file "$S/multi" "$amd")")
    arm_layer=$(jq -r '.layers[0].digest' "$(blob_file "$S/multi" "$arm")")
    amd_cfg=$(jq -r '.config.digest' "$(blob_file "$S/multi" "$amd")")
    arm_cfg=$(jq -r '.config.digest' "$(blob_file "$S/multi" "$arm")")
    expect_eq "$(up_digest e2e/multi:v1)" "$index" "the upstream's index digest"
    sk copy -q --preserve-digests --override-os linux --override-arch amd64 --src-tls-verify=false \
        "docker://$CACHE/up/e2e/multi:v1" "oci:$W/one:v1"
    expect_eq "$(ref_digest "$W/one" v1)" "$amd" "the amd64 manifest skopeo copied"
    local D=$W/cache-data R=up/e2e/multi
    has_manifest "$D" $R "$index" || fail "the index is not cached"
    has_manifest "$D" $R "$amd" || fail "the amd64 manifest is not cached"
    in_store "$D" "$amd_layer" || fail "the amd64 layer is not cached"
    in_store "$D" "$amd_cfg" || fail "the amd64 config is not cached"
    has_manifest "$D" $R "$arm" && fail "the arm64 manifest was cached by a one-platform pull"
    in_store "$D" "$arm_layer" && fail "the arm64 layer was cached by a one-platform pull"
    in_store "$D" "$arm_cfg" && fail "the arm64 config was cached by a one-platform pull"
    sk copy -q --all --preserve-digests --src-tls-verify=false "docker://$CACHE/up/e2e/multi:v1" "oci:$W/all:v1"
    expect_eq "$(ref_digest "$W/all" v1)" "$index" "the index skopeo --all copied"
    has_manifest "$D" $R "$arm" || fail "--all: the arm64 manifest is not cached"
    in_store "$D" "$arm_layer" || fail "--all: the arm64 layer is not cached"
    in_store "$D" "$arm_cfg" || fail "--all: the arm64 config is not cached"
    cmp -s "$(blob_file "$W/all" "$arm_layer")" "$(blob_file "$S/multi" "$arm_layer")" || fail "the arm64 layer differs"
}

# CHAIN caches CACHE, which caches UP: identical digests, two hops.
sc_chained_cache() {
    local index want
    index=$(jq -r .top.digest "$S/multi.json")
    want=$(ref_digest "$S/skopeo" v1)
    sk copy -q --all --preserve-digests --src-tls-verify=false "docker://$CHAIN/chain/up/e2e/multi:v1" "oci:$W/chain-all:v1"
    expect_eq "$(ref_digest "$W/chain-all" v1)" "$index" "the index through two caches"
    python3 "$HERE/helpers/oci_layout.py" verify "$W/chain-all" >/dev/null || fail "a blob through two caches does not match its digest"
    "$WHARF" cp -q "$CHAIN/chain/up/e2e/skopeo:v1" "oci:$W/chain-cp:v1"
    expect_eq "$(ref_digest "$W/chain-cp" v1)" "$want" "digest wharf cp copied through two caches"
    # Range and HEAD of a blob pass through both.
    local layer
    layer=$(jq -r '.layers[0].digest' "$(blob_file "$S/skopeo" "$want")")
    expect_eq "$(curl -fsS -r 0-9 "http://$CHAIN/v2/chain/up/e2e/skopeo/blobs/$layer" | od -An -tx1 | tr -d ' \n')" \
        "$(head -c 10 "$(blob_file "$S/skopeo" "$layer")" | od -An -tx1 | tr -d ' \n')" "the first 10 bytes, by Range"
    has_manifest "$W/chain-data" chain/up/e2e/skopeo "$want" || fail "not cached by the outer cache"
    CONTAINERS_REGISTRIES_CONF=$W/registries-chain.conf podman pull -q "$CHAIN/chain/up/e2e/podman:v1" >/dev/null
    expect_eq "sha256:$(podman image inspect --format '{{.Id}}' "$CHAIN/chain/up/e2e/podman:v1")" \
        "$(jq -r .config.digest "$(blob_file "$S/podman" "$(ref_digest "$S/podman" v1)")")" "image ID podman pulled through two caches"
    podman rmi -a -f >/dev/null
}
cat >"$W/registries-chain.conf" <<EOF
unqualified-search-registries = []

[[registry]]
location = "$CHAIN"
insecure = true
EOF

run_scenarios mirror "$W" podman_registries_conf ctr_hosts_toml skopeo_and_wharf_cp multi_platform chained_cache
if ((SCENARIOS_FAILED)); then
    for s in cache chain; do tail -n 20 "$W/$s.log" | sed "s/^/# $s: /" >&2; done
fi
echo "mirror: $SCENARIOS_PASSED passed, $SCENARIOS_FAILED failed"
((SCENARIOS_FAILED == 0))
