# Shared by the end-to-end scripts that start their own servers
# (serve-from.sh, lifecycle.sh, mirror.sh): sourced, not run.

fail() { echo "FAILED: $*" >&2; exit 1; }
expect_eq() { [[ $1 == "$2" ]] || fail "$3: got '$1', want '$2'"; }
sha256_of() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
blob_file() { echo "$1/blobs/${2%%:*}/${2#*:}"; }
ref_digest() { jq -r --arg r "$2" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $r) | .digest' "$1/index.json"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# containers_env DIR: configuration for skopeo, podman and buildah in DIR
# only, never in /etc (vfs storage, a permissive signature policy, no
# network setup), exported through the environment. The caller writes
# DIR/registries.conf (or points CONTAINERS_REGISTRIES_CONF elsewhere).
containers_env() {
    local w=$1
    mkdir -p "$w/tmp" "$w/storage" "$w/libpod-tmp" "$w/networks" "$w/home/.config/containers"
    cat >"$w/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$w/storage/graph"
runroot = "$w/storage/run"
EOF
    echo '{"default": [{"type": "insecureAcceptAnything"}]}' >"$w/policy.json"
    cp "$w/policy.json" "$w/home/.config/containers/policy.json"
    cat >"$w/containers.conf" <<EOF
[engine]
tmp_dir = "$w/libpod-tmp"
image_copy_tmp_dir = "$w/tmp"
events_logger = "none"
cgroup_manager = "cgroupfs"

[network]
network_config_dir = "$w/networks"
network_backend = "cni"
EOF
    export CONTAINERS_STORAGE_CONF=$w/storage.conf CONTAINERS_REGISTRIES_CONF=$w/registries.conf
    export CONTAINERS_CONF=$w/containers.conf REGISTRY_AUTH_FILE=$w/auth.json STORAGE_DRIVER=vfs TMPDIR=$w/tmp
    echo '{}' >"$w/auth.json"
    SK_POLICY=$w/policy.json SK_TMP=$w/tmp
}

sk() { skopeo --policy "$SK_POLICY" --tmpdir "$SK_TMP" --command-timeout 120s "$@"; }

# run_scenarios PREFIX LOGDIR SCENARIO...: run each sc_SCENARIO in its own
# subshell (so errexit applies inside it) and print "ok - PREFIX-NAME" or
# "FAIL - PREFIX-NAME: reason" (the tail of its log to stderr). Sets
# SCENARIOS_PASSED and SCENARIOS_FAILED for the caller's summary line.
run_scenarios() {
    local label=$1 logs=$2 sc name
    shift 2
    SCENARIOS_PASSED=0 SCENARIOS_FAILED=0
    for sc in "$@"; do
        name=${sc//_/-}
        ("sc_$sc") >"$logs/$name.log" 2>&1 &
        if wait $!; then
            echo "ok - $label-$name"
            SCENARIOS_PASSED=$((SCENARIOS_PASSED + 1))
        else
            echo "FAIL - $label-$name: $(grep FAILED "$logs/$name.log" | tail -n 1 | sed 's/^FAILED: //')"
            tail -n 15 "$logs/$name.log" | sed 's/^/# /' >&2
            SCENARIOS_FAILED=$((SCENARIOS_FAILED + 1))
        fi
    done
}
