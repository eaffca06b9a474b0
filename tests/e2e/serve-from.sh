#!/usr/bin/env bash
# End-to-end tests of `wharf serve --from` with real clients: sources made by
# skopeo (docker-archive, oci-archive, OCI layout) and umoci (OCI layout),
# served read-only in place
# by a wharf started here, pulled with podman, skopeo and `wharf cp`, and
# compared with what `podman load` makes of the same tarball.
#
#   tests/e2e/serve-from.sh [WHARF_BINARY]      (default: target/debug/wharf)
#
# Prints "ok - NAME" or "FAIL - NAME: reason" per scenario, then exactly
# "serve-from: N passed, M failed"; exits 1 if M > 0, 2 on a setup error.
# WHARF_E2E_KEEP=1 keeps the work dir.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WHARF=$(realpath "${1:-$HERE/../../target/debug/wharf}")
[[ -x $WHARF ]] || { echo "no wharf binary at $WHARF" >&2; exit 2; }
for tool in skopeo podman umoci jq curl python3 sha256sum; do
    command -v "$tool" >/dev/null || { echo "missing $tool (run tests/e2e/install.sh)" >&2; exit 2; }
done

W=$(mktemp -d "${TMPDIR:-/tmp}/wharf-from-e2e.XXXXXX")
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

# --- sources -------------------------------------------------------------
S=$W/src
mkdir -p "$S"
python3 "$HERE/helpers/oci_layout.py" image "$S/orig" --ref v1 --text "serve-from $RUN_ID" --random-kib 256 >/dev/null
# A docker-save tarball (skopeo writes what `docker save` does), an
# oci-archive, and an OCI layout written by skopeo (ref.name "v2": a bare tag).
sk copy -q "oci:$S/orig:v1" "docker-archive:$S/image.tar:e2e/dock:1.0"
sk copy -q "oci:$S/orig:v1" "oci-archive:$S/image.oci.tar:e2e/ociarchive:3"
sk copy -q --preserve-digests "oci:$S/orig:v1" "oci:$S/layout:v2"
# An OCI layout written by umoci (ref.name "t", and unreferenced blobs left
# over from its edits).
umoci init --layout "$S/umoci"
umoci new --image "$S/umoci:t"
echo "umoci $RUN_ID" >"$S/u.txt"
umoci insert --image "$S/umoci:t" "$S/u.txt" /u.txt

"$WHARF" serve --listen "$HOST" --data-dir "$W/data" \
    --from "$S/image.tar" --from "$S/image.oci.tar" --from "$S/layout" --as e2e/layout \
    --from "$S/umoci" --as e2e/umoci \
    >"$W/wharf.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 200); do
    curl -fsS "http://$HOST/v2/" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$W/wharf.log" >&2; echo "wharf serve --from exited" >&2; exit 2; }
    sleep 0.1
done
curl -fsS "http://$HOST/v2/" >/dev/null || { cat "$W/wharf.log" >&2; exit 2; }

# The image `podman load` makes of the tarball: its ID (config digest) and
# layers (diff IDs) are what every pull from wharf must give.
WANT_CFG=sha256:$(tar -xOf "$S/image.tar" manifest.json | jq -r '.[0].Config' | sed 's/\.json$//')
WANT_DIFFS=$(jq -c .rootfs.diff_ids "$(blob_file "$S/orig" "$(jq -r .config.digest "$(blob_file "$S/orig" "$(ref_digest "$S/orig" v1)")")")")

# --- scenarios -----------------------------------------------------------
sc_docker_archive_podman() {
    podman load -q -i "$S/image.tar" >/dev/null
    local loaded_id loaded_layers
    loaded_id=$(podman image inspect --format '{{.Id}}' e2e/dock:1.0)
    loaded_layers=$(podman image inspect --format '{{json .RootFS.Layers}}' e2e/dock:1.0 | jq -c .)
    expect_eq "sha256:$loaded_id" "$WANT_CFG" "image ID podman load gives"
    podman rmi -a -f >/dev/null
    podman pull -q --tls-verify=false "$HOST/e2e/dock:1.0" >/dev/null
    expect_eq "sha256:$(podman image inspect --format '{{.Id}}' "$HOST/e2e/dock:1.0")" "$WANT_CFG" "image ID podman pulled"
    expect_eq "$(podman image inspect --format '{{json .RootFS.Layers}}' "$HOST/e2e/dock:1.0" | jq -c .)" "$loaded_layers" "layers podman pulled"
    expect_eq "$loaded_layers" "$WANT_DIFFS" "diff IDs"
    local mnt
    mnt=$(podman image mount "$HOST/e2e/dock:1.0")
    expect_eq "$(cat "$mnt/hello.txt")" "serve-from $RUN_ID" "hello.txt in the pulled image"
    podman image unmount "$HOST/e2e/dock:1.0" >/dev/null
    podman rmi -a -f >/dev/null
}

sc_docker_archive_skopeo() {
    local d=$W/sk-dock
    sk inspect --tls-verify=false --raw "docker://$HOST/e2e/dock:1.0" >"$d.raw"
    expect_eq "$(jq -r .mediaType "$d.raw")" application/vnd.docker.distribution.manifest.v2+json "media type"
    expect_eq "$(jq -r .config.digest "$d.raw")" "$WANT_CFG" "config digest"
    sk copy -q --src-tls-verify=false "docker://$HOST/e2e/dock:1.0" "oci:$d:x"
    local cfg
    cfg=$(jq -r .config.digest "$(blob_file "$d" "$(ref_digest "$d" x)")")
    expect_eq "$(jq -c .rootfs.diff_ids "$(blob_file "$d" "$cfg")")" "$WANT_DIFFS" "diff IDs skopeo pulled"
    # And back into a docker-archive: the same image.
    sk copy -q --src-tls-verify=false "docker://$HOST/e2e/dock:1.0" "docker-archive:$d.tar:e2e/dock:1.0"
    expect_eq "sha256:$(tar -xOf "$d.tar" manifest.json | jq -r '.[0].Config' | sed 's/\.json$//')" "$WANT_CFG" "config of the copied tarball"
}

# The wharf client: `wharf cp` (the command that copies whole images;
# `wharf pull` only unpacks file packages) into a layout and a tarball.
sc_wharf_cp() {
    local d=$W/wharf-out
    "$WHARF" cp -q "$HOST/e2e/dock:1.0" "oci:$d:x"
    local cfg
    cfg=$(jq -r .config.digest "$(blob_file "$d" "$(ref_digest "$d" x)")")
    expect_eq "$cfg" "$WANT_CFG" "config digest wharf cp copied"
    expect_eq "$(jq -c .rootfs.diff_ids "$(blob_file "$d" "$cfg")")" "$WANT_DIFFS" "diff IDs wharf cp copied"
    "$WHARF" cp -q "$HOST/e2e/dock:1.0" "docker-archive:$d.tar:e2e/again:1"
    podman load -q -i "$d.tar" >/dev/null
    expect_eq "sha256:$(podman image inspect --format '{{.Id}}' e2e/again:1)" "$WANT_CFG" "image ID after wharf cp + podman load"
    expect_eq "$(podman image inspect --format '{{json .RootFS.Layers}}' e2e/again:1 | jq -c .)" "$WANT_DIFFS" "layers after wharf cp + podman load"
    podman rmi -a -f >/dev/null
}

sc_oci_layout_and_archive() {
    local want
    want=$(ref_digest "$S/layout" v2)
    sk inspect --tls-verify=false --raw "docker://$HOST/e2e/layout:v2" >"$W/lay.raw"
    cmp -s "$W/lay.raw" "$(blob_file "$S/layout" "$want")" || fail "layout manifest not served byte for byte"
    sk copy -q --preserve-digests --src-tls-verify=false "docker://$HOST/e2e/layout:v2" "oci:$W/lay-out:v2"
    expect_eq "$(ref_digest "$W/lay-out" v2)" "$want" "manifest digest skopeo pulled"
    expect_eq "$(sk inspect --tls-verify=false "docker://$HOST/e2e/ociarchive:3" | jq -r .Digest)" "$want" "oci-archive manifest digest"
    podman pull -q --tls-verify=false "$HOST/e2e/ociarchive:3" >/dev/null
    expect_eq "$(podman image inspect --format '{{json .RootFS.Layers}}' "$HOST/e2e/ociarchive:3" | jq -c .)" "$WANT_DIFFS" "diff IDs podman pulled (oci-archive)"
    podman rmi -a -f >/dev/null
    expect_eq "$(sk list-tags --tls-verify=false "docker://$HOST/e2e/layout" | jq -c .Tags)" '["v2"]' "tags"
    curl -fsS "http://$HOST/v2/_catalog" | jq -e '.repositories == ["e2e/dock","e2e/layout","e2e/ociarchive","e2e/umoci"]' >/dev/null ||
        fail "catalog: $(curl -sS "http://$HOST/v2/_catalog")"
}

sc_umoci_layout() {
    local want
    want=$(ref_digest "$S/umoci" t)
    sk copy -q --preserve-digests --src-tls-verify=false "docker://$HOST/e2e/umoci:t" "oci:$W/umoci-out:t"
    expect_eq "$(ref_digest "$W/umoci-out" t)" "$want" "manifest digest of the umoci image"
    umoci unpack --image "$W/umoci-out:t" "$W/umoci-bundle" >/dev/null
    expect_eq "$(cat "$W/umoci-bundle/rootfs/u.txt")" "umoci $RUN_ID" "u.txt unpacked from the pulled image"
    podman pull -q --tls-verify=false "$HOST/e2e/umoci:t" >/dev/null
    mnt=$(podman image mount "$HOST/e2e/umoci:t")
    expect_eq "$(cat "$mnt/u.txt")" "umoci $RUN_ID" "u.txt in the image podman pulled"
    podman image unmount "$HOST/e2e/umoci:t" >/dev/null
    podman rmi -a -f >/dev/null
}

sc_read_only_beside_writable() {
    if sk copy -q --dest-tls-verify=false "oci:$S/orig:v1" "docker://$HOST/e2e/dock:pushed" 2>"$W/denied.err"; then
        fail "a push into a served tarball's repository succeeded"
    fi
    grep -qi "denied" "$W/denied.err" || fail "push refusal does not say denied: $(cat "$W/denied.err")"
    grep -q "read-only" "$W/denied.err" || fail "push refusal does not say read-only: $(cat "$W/denied.err")"
    sk copy -q --dest-tls-verify=false "oci:$S/orig:v1" "docker://$HOST/e2e/writable:1"
    expect_eq "$(sk inspect --tls-verify=false "docker://$HOST/e2e/writable:1" | jq -r .Digest)" "$(ref_digest "$S/orig" v1)" "pushed beside the sources"
}

run_scenarios from "$W" docker_archive_podman docker_archive_skopeo wharf_cp oci_layout_and_archive umoci_layout read_only_beside_writable
if ((SCENARIOS_FAILED)); then tail -n 20 "$W/wharf.log" | sed 's/^/# wharf: /' >&2; fi
echo "serve-from: $SCENARIOS_PASSED passed, $SCENARIOS_FAILED failed"
((SCENARIOS_FAILED == 0))
