#!/usr/bin/env bash
# End-to-end tests: drive real clients (skopeo, buildah, podman, oras-py,
# curl) against a running plain-HTTP registry.
#
#   tests/e2e/run.sh HOST:PORT          e.g. tests/e2e/run.sh 127.0.0.1:5000
#
# Prints one line per scenario, "ok - NAME" or "FAIL - NAME: reason" (the tail
# of a failing scenario's log goes to stderr, prefixed "# "), then exactly
# "e2e: N passed, M failed"; exits 1 if M > 0, 2 on a usage/setup error.
#
# Environment:
#   WHARF_E2E_VENV      venv with oras-py and docker-registry-client-async
#                       (default ~/.cache/wharf-e2e-venv;
#                       made by tests/e2e/install.sh)
#   WHARF_E2E_ONLY      space-separated scenario names to run (default: all)
#   WHARF_E2E_SKIP      space-separated scenario names to skip (printed as
#                       "skip - NAME", counted neither passed nor failed)
#   WHARF_E2E_TIMEOUT   per-scenario time limit in seconds (default 300)
#   WHARF_E2E_BIG_MB    size of the large layer in skopeo-large-layer (default 32)
#   WHARF_E2E_KEEP=1    keep the work dir (its path is printed to stderr)
#   WHARF_E2E_AUTH=1    run the scenarios of auth-scenarios.sh instead (against
#                       a registry with auth on; tests/e2e/auth.sh sets it up)
#   WHARF_E2E_QUOTA=1   run the scenarios of quota-scenarios.sh instead (against
#                       a registry with a quota; tests/e2e/quota.sh sets it up)
#
# Scenarios (sc_* below; see README.md): api-base, skopeo-oci, skopeo-v2s2,
# skopeo-large-layer, multiarch-index, buildah-podman, oras-artifact,
# oras-subject, referrers-api (reads what oras-subject pushed), blob-reuse,
# api-upload-and-tags, tags-list, drca-push-pull; and, against a second registry serving
# HTTPS with a private CA, tls-skopeo, tls-podman, tls-wharf-client.
#
# The TLS scenarios run when these are set (tests/run-all.sh does), and are
# skipped otherwise:
#   WHARF_E2E_TLS_HOST    HOST:PORT of a registry serving HTTPS
#   WHARF_E2E_TLS_CA_DIR  a directory holding only ca.crt, the CA that signed
#                         its certificate (given to clients as --cert-dir)
#   WHARF_E2E_WHARF_BIN   the wharf binary (for tls-wharf-client)
#
# Every scenario pushes content that is new in each run (random bytes), so
# the suite can be run repeatedly against the same registry. Content must
# round-trip byte for byte: manifests are compared by digest and raw bytes,
# blobs by sha256.
#
# Tool configuration lives in the temp work dir, never in /etc: vfs storage
# for buildah/podman (graphroot/runroot under the work dir), chroot isolation,
# a permissive signature policy and a registries.conf marking HOST insecure.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HELPERS=$HERE/helpers

SCENARIOS=(
    api-base
    skopeo-oci
    skopeo-v2s2
    skopeo-large-layer
    multiarch-index
    buildah-podman
    oras-artifact
    oras-subject
    referrers-api
    blob-reuse
    api-upload-and-tags
    tags-list
    drca-push-pull
    tls-skopeo
    tls-podman
    tls-wharf-client
)

MT_OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_OCI_INDEX=application/vnd.oci.image.index.v1+json
MT_DOCKER_MANIFEST=application/vnd.docker.distribution.manifest.v2+json
MT_DOCKER_LIST=application/vnd.docker.distribution.manifest.list.v2+json
ACCEPT_ALL="$MT_OCI_MANIFEST, $MT_OCI_INDEX, $MT_DOCKER_MANIFEST, $MT_DOCKER_LIST"

# ---------------------------------------------------------------------------
# Helpers (used inside scenarios; a scenario runs in its own bash process
# with errexit, so any failing command fails the scenario)
# ---------------------------------------------------------------------------

# fail MESSAGE: record why the scenario failed and stop it.
fail() {
    [[ -s $REASON_FILE ]] || printf '%s\n' "$*" >"$REASON_FILE"
    echo "FAILED: $*" >&2
    exit 1
}

# ERR trap: name the failing line of the scenario function itself (not of
# a helper it called); the driver appends the last line of the log.
on_err() {
    local rc=$1 line=$2 cmd=$3 i text
    [[ -s $REASON_FILE ]] && return
    for ((i = 1; i < ${#FUNCNAME[@]}; i++)); do
        if [[ ${FUNCNAME[i]} == sc_* ]]; then
            ((i > 1)) && line=${BASH_LINENO[i - 1]}
            break
        fi
    done
    text=$(sed -n "${line}p" "$E2E_SELF" | sed 's/^ *//; s/ *\\$//' | cut -c1-120)
    # shellcheck disable=SC2016  # the backquotes are literal
    printf 'ERR\tline %s `%s` exited %s\n' "$line" "${text:-$cmd}" "$rc" >"$REASON_FILE"
}

expect_eq() { # ACTUAL EXPECTED WHAT
    [[ $1 == "$2" ]] || fail "$3: got '$1', want '$2'"
}

sha256_of() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }

# skopeo with the suite's policy, temp dir and a time limit.
sk() {
    skopeo --policy "$E2E_WORK/policy.json" --tmpdir "$E2E_WORK/tmp" \
        --command-timeout "${E2E_CMD_TIMEOUT}s" "$@"
}

# http METHOD PATH [curl args...]: request http://HOST/PATH; sets STATUS,
# the body goes to $SD/body and the headers to $SD/headers.
http() {
    local method=$1 path=$2
    shift 2
    local url=$path
    [[ $url == http://* ]] || url="http://$HOST$path"
    local mflag=(-X "$method")
    [[ $method == HEAD ]] && mflag=(--head)
    STATUS=$(curl -sS --max-time 60 "${mflag[@]}" -H 'Expect:' -o "$SD/body" -D "$SD/headers" \
        -w '%{http_code}' "$@" "$url")
}

# hdr NAME: value of response header NAME from the last http call.
hdr() {
    { grep -i "^$1:" "$SD/headers" || true; } | tail -n1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//'
}

expect_status() { # WANT WHAT
    [[ $STATUS == "$1" ]] || fail "$2: HTTP $STATUS, want $1 (body: $(head -c 300 "$SD/body" | tr '\n' ' '))"
}

# Absolute URL for an upload Location header (may be relative).
abs_url() {
    case $1 in
        http://*|https://*) echo "$1" ;;
        /*) echo "http://$HOST$1" ;;
        *) fail "unexpected Location: $1" ;;
    esac
}

add_query() { # URL KEY=VALUE
    if [[ $1 == *\?* ]]; then echo "$1&$2"; else echo "$1?$2"; fi
}

# upload_blob REPO FILE: monolithic POST + PUT?digest=; echoes the digest.
upload_blob() {
    local repo=$1 file=$2 digest loc
    digest=$(sha256_of "$file")
    http POST "/v2/$repo/blobs/uploads/"
    expect_status 202 "POST blob upload to $repo"
    loc=$(abs_url "$(hdr Location)")
    http PUT "$(add_query "$loc" "digest=$digest")" -H 'Content-Type: application/octet-stream' \
        --data-binary @"$file"
    expect_status 201 "PUT blob $digest to $repo"
    echo "$digest"
}

# put_manifest REPO REF FILE MEDIATYPE: PUT a manifest; sets STATUS/headers.
put_manifest() {
    http PUT "/v2/$1/manifests/$2" -H "Content-Type: $4" --data-binary @"$3"
}

# layout_image DIR TAG TEXT [KIB]: hand-written OCI layout with one image.
layout_image() {
    python3 "$HELPERS/oci_layout.py" image "$1" --ref "$2" --text "$3" --random-kib "${4:-64}"
}

# blob_file LAYOUT DIGEST: path of a blob in an OCI layout.
blob_file() { echo "$1/blobs/sha256/${2#sha256:}"; }

# ref_digest LAYOUT TAG: digest that index.json names for TAG.
ref_digest() {
    jq -r --arg t "$2" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
        "$1/index.json"
}

# compare_layouts SRC OUT TAG: OUT's TAG names the same digest as SRC's, OUT
# holds every blob of SRC with identical bytes, and all OUT blobs hash right.
compare_layouts() {
    local src=$1 out=$2 tag=$3 b
    expect_eq "$(ref_digest "$out" "$tag")" "$(ref_digest "$src" "$tag")" "digest of $tag copied back out"
    python3 "$HELPERS/oci_layout.py" verify "$out" >/dev/null || fail "corrupt blob in copied-out layout"
    for b in "$src"/blobs/sha256/*; do
        cmp -s "$b" "$out/blobs/sha256/${b##*/}" || fail "blob sha256:${b##*/} differs or is missing after round trip"
    done
}

oras_py() { "$E2E_VENV/bin/python" "$HELPERS/oras_e2e.py" "$@"; }
drca_py() { NO_PROXY=${HOST%:*} no_proxy=${HOST%:*} "$E2E_VENV/bin/python" "$HELPERS/drca_e2e.py" "$@"; }

# The scenarios against an authenticating registry (WHARF_E2E_AUTH=1).
# shellcheck source=auth-scenarios.sh
source "$HERE/auth-scenarios.sh"
# The scenarios against a registry with a quota (WHARF_E2E_QUOTA=1).
# shellcheck source=quota-scenarios.sh
source "$HERE/quota-scenarios.sh"

# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------

# f. The API root, and error bodies for unknown names.
sc_api_base() {
    http GET /v2/
    expect_status 200 "GET /v2/"
    expect_eq "$(hdr Docker-Distribution-API-Version)" "registry/2.0" "Docker-Distribution-API-Version header"
    http HEAD /v2/
    expect_status 200 "HEAD /v2/"

    http GET /v2/e2e/does-not-exist/manifests/latest -H "Accept: $ACCEPT_ALL"
    expect_status 404 "GET manifest of unknown repo"
    jq -e '.errors[0].code | IN("MANIFEST_UNKNOWN", "NAME_UNKNOWN")' "$SD/body" >/dev/null ||
        fail "unknown manifest: error code not MANIFEST_UNKNOWN/NAME_UNKNOWN: $(cat "$SD/body")"

    http GET "/v2/e2e/does-not-exist/blobs/sha256:$(printf 'nothing' | sha256sum | cut -d' ' -f1)"
    expect_status 404 "GET blob of unknown repo"
    jq -e '.errors[0].code | IN("BLOB_UNKNOWN", "NAME_UNKNOWN")' "$SD/body" >/dev/null ||
        fail "unknown blob: error code not BLOB_UNKNOWN/NAME_UNKNOWN: $(cat "$SD/body")"
}

# a. skopeo with an OCI image: push, inspect, list tags, pull, retag, deep
#    repository name, delete.
sc_skopeo_oci() {
    local repo=e2e/skopeo/img deep=e2e/skopeo/a/b/c/d/e/f/g/h/i/j want cfg
    layout_image "$SD/src" v1 "skopeo e2e $RUN_ID" >/dev/null
    want=$(ref_digest "$SD/src" v1)
    cfg=$(jq -r .config.digest "$(blob_file "$SD/src" "$want")")

    sk copy --preserve-digests --dest-tls-verify=false --digestfile "$SD/pushed" \
        "oci:$SD/src:v1" "docker://$HOST/$repo:v1"
    expect_eq "$(cat "$SD/pushed")" "$want" "digest reported by skopeo copy"

    sk inspect --tls-verify=false "docker://$HOST/$repo:v1" >"$SD/inspect.json"
    expect_eq "$(jq -r .Digest "$SD/inspect.json")" "$want" "skopeo inspect digest"
    expect_eq "$(jq -r .Architecture "$SD/inspect.json")" amd64 "skopeo inspect architecture"

    sk inspect --tls-verify=false --raw "docker://$HOST/$repo:v1" >"$SD/raw.json"
    cmp -s "$SD/raw.json" "$(blob_file "$SD/src" "$want")" || fail "inspect --raw differs from the pushed manifest bytes"
    sk inspect --tls-verify=false --config --raw "docker://$HOST/$repo:v1" >"$SD/config.json"
    cmp -s "$SD/config.json" "$(blob_file "$SD/src" "$cfg")" || fail "inspect --config --raw differs from the pushed config"

    sk list-tags --tls-verify=false "docker://$HOST/$repo" >"$SD/tags.json"
    jq -e '.Tags | index("v1")' "$SD/tags.json" >/dev/null || fail "list-tags lacks v1: $(jq -c .Tags "$SD/tags.json")"

    sk copy --preserve-digests --src-tls-verify=false "docker://$HOST/$repo:v1" "oci:$SD/out:v1"
    compare_layouts "$SD/src" "$SD/out" v1
    # The pulled image unpacks to the files that went in.
    umoci unpack --image "$SD/out:v1" "$SD/bundle" >/dev/null
    expect_eq "$(cat "$SD/bundle/rootfs/hello.txt")" "skopeo e2e $RUN_ID" "hello.txt unpacked by umoci"

    # Registry to registry, same repository, second tag.
    sk copy --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
        "docker://$HOST/$repo:v1" "docker://$HOST/$repo:v2"
    expect_eq "$(sk inspect --tls-verify=false "docker://$HOST/$repo:v2" | jq -r .Digest)" "$want" "digest of tag v2"
    sk list-tags --tls-verify=false "docker://$HOST/$repo" >"$SD/tags.json"
    jq -e '.Tags | index("v1") and index("v2")' "$SD/tags.json" >/dev/null ||
        fail "list-tags lacks v1/v2: $(jq -c .Tags "$SD/tags.json")"

    # A ten-component repository name.
    sk copy --preserve-digests --dest-tls-verify=false "oci:$SD/src:v1" "docker://$HOST/$deep:v1"
    sk inspect --tls-verify=false --raw "docker://$HOST/$deep:v1" >"$SD/deep.json"
    cmp -s "$SD/deep.json" "$(blob_file "$SD/src" "$want")" || fail "deep repo: manifest bytes differ"

    # Delete (skopeo deletes the manifest by digest) in the deep repository;
    # the same manifest in $repo must survive.
    sk delete --tls-verify=false "docker://$HOST/$deep:v1"
    http GET "/v2/$deep/manifests/v1" -H "Accept: $ACCEPT_ALL"
    expect_status 404 "GET deleted tag"
    http GET "/v2/$deep/manifests/$want" -H "Accept: $ACCEPT_ALL"
    expect_status 404 "GET deleted manifest by digest"
    http GET "/v2/$repo/manifests/$want" -H "Accept: $ACCEPT_ALL"
    expect_status 200 "same manifest in another repository after the delete"
    cmp -s "$SD/body" "$(blob_file "$SD/src" "$want")" || fail "manifest bytes in $repo changed after delete elsewhere"
}

# b. Docker schema 2: skopeo converts on push; the converted manifest must
#    come back byte for byte.
sc_skopeo_v2s2() {
    local repo=e2e/skopeo/v2s2 digest b
    layout_image "$SD/src" v1 "v2s2 e2e $RUN_ID" >/dev/null
    sk copy --format v2s2 --dest-tls-verify=false --digestfile "$SD/pushed" \
        "oci:$SD/src:v1" "docker://$HOST/$repo:v1"
    digest=$(cat "$SD/pushed")

    sk inspect --tls-verify=false --raw "docker://$HOST/$repo:v1" >"$SD/raw.json"
    expect_eq "$(jq -r .mediaType "$SD/raw.json")" "$MT_DOCKER_MANIFEST" "mediaType of the pushed manifest"
    expect_eq "$(jq -r .config.mediaType "$SD/raw.json")" application/vnd.docker.container.image.v1+json "config mediaType"
    expect_eq "$(jq -r '.layers[0].mediaType' "$SD/raw.json")" application/vnd.docker.image.rootfs.diff.tar.gzip "layer mediaType"
    expect_eq "$(sha256_of "$SD/raw.json")" "$digest" "sha256 of the raw manifest"
    expect_eq "$(sk inspect --tls-verify=false "docker://$HOST/$repo:v1" | jq -r .Digest)" "$digest" "skopeo inspect digest"

    http HEAD "/v2/$repo/manifests/v1" -H "Accept: $MT_DOCKER_MANIFEST"
    expect_status 200 "HEAD manifest"
    expect_eq "$(hdr Docker-Content-Digest)" "$digest" "Docker-Content-Digest"
    expect_eq "$(hdr Content-Type)" "$MT_DOCKER_MANIFEST" "Content-Type"
    expect_eq "$(hdr Content-Length)" "$(stat -c %s "$SD/raw.json")" "Content-Length"

    # The dir: transport stores the manifest and blobs untouched.
    sk copy --src-tls-verify=false "docker://$HOST/$repo:v1" "dir:$SD/out"
    cmp -s "$SD/out/manifest.json" "$SD/raw.json" || fail "manifest copied back differs"
    for b in $(jq -r '.config.digest, .layers[].digest' "$SD/raw.json"); do
        expect_eq "$(sha256_of "$SD/out/${b#sha256:}")" "$b" "sha256 of blob copied back"
        cmp -s "$SD/out/${b#sha256:}" "$(blob_file "$SD/src" "$b")" || fail "blob $b differs from the source"
    done
}

# A layer of WHARF_E2E_BIG_MB MiB (random, so incompressible) both ways.
sc_skopeo_large_layer() {
    local repo=e2e/skopeo/large want
    layout_image "$SD/src" v1 "large e2e $RUN_ID" $((${WHARF_E2E_BIG_MB:-32} * 1024)) >/dev/null
    want=$(ref_digest "$SD/src" v1)
    sk copy --preserve-digests --dest-tls-verify=false "oci:$SD/src:v1" "docker://$HOST/$repo:v1"
    sk copy --preserve-digests --src-tls-verify=false "docker://$HOST/$repo:v1" "oci:$SD/out:v1"
    compare_layouts "$SD/src" "$SD/out" v1
    expect_eq "$(ref_digest "$SD/out" v1)" "$want" "manifest digest"
}

# d. An OCI image index with linux/amd64 and linux/arm64 images.
sc_multiarch_index() {
    local repo=e2e/multiarch/img top arch child
    python3 "$HELPERS/oci_layout.py" index "$SD/src" --ref multi --archs amd64,arm64 \
        --text "multiarch e2e $RUN_ID" --random-kib 16 >"$SD/src.json"
    top=$(jq -r .top.digest "$SD/src.json")

    sk copy --all --preserve-digests --dest-tls-verify=false --digestfile "$SD/pushed" \
        "oci:$SD/src:multi" "docker://$HOST/$repo:v1"
    expect_eq "$(cat "$SD/pushed")" "$top" "digest reported by skopeo copy --all"

    sk inspect --tls-verify=false --raw "docker://$HOST/$repo:v1" >"$SD/raw.json"
    cmp -s "$SD/raw.json" "$(blob_file "$SD/src" "$top")" || fail "inspect --raw of the tag differs from the pushed index"
    expect_eq "$(jq -r .mediaType "$SD/raw.json")" "$MT_OCI_INDEX" "mediaType of the tag"

    for arch in amd64 arm64; do
        child=$(jq -r --arg a "$arch" '.children[$a].digest' "$SD/src.json")
        sk inspect --tls-verify=false --raw "docker://$HOST/$repo@$child" >"$SD/child-$arch.json"
        cmp -s "$SD/child-$arch.json" "$(blob_file "$SD/src" "$child")" || fail "inspect --raw of the $arch child differs"
        # skopeo resolves the tag to the index, then picks the platform's image.
        sk --override-os linux --override-arch "$arch" inspect --tls-verify=false \
            "docker://$HOST/$repo:v1" >"$SD/inspect-$arch.json"
        expect_eq "$(jq -r .Architecture "$SD/inspect-$arch.json")" "$arch" "architecture skopeo picks for linux/$arch"
        expect_eq "$(jq -r '.Layers[0]' "$SD/inspect-$arch.json")" \
            "$(jq -r '.layers[0].digest' "$SD/child-$arch.json")" "layer of the linux/$arch image"
    done

    sk copy --all --preserve-digests --src-tls-verify=false "docker://$HOST/$repo:v1" "oci:$SD/out:multi"
    compare_layouts "$SD/src" "$SD/out" multi
}

# c. buildah builds FROM scratch and pushes; podman pulls, checks and pushes
#    again; buildah pulls that and checks the file. Nothing is run in a
#    container: `podman run` fails in the sandbox (see README.md), and a
#    registry test does not need it.
sc_buildah_podman() {
    local repo=e2e/buildah/scratch prepo=e2e/podman/scratch c pushed cfg mnt
    export STORAGE_DRIVER=vfs
    printf 'hello from buildah %s\n' "$RUN_ID" >"$SD/hello.txt"
    head -c 100000 /dev/urandom >"$SD/data.bin"

    c=$(buildah from scratch)
    buildah copy "$c" "$SD/hello.txt" /hello.txt >/dev/null
    buildah copy "$c" "$SD/data.bin" /data/data.bin >/dev/null
    buildah config --cmd /hello.txt --label "org.wharf.e2e=$RUN_ID" "$c"
    buildah commit --rm "$c" localhost/e2e-local/scratch:latest >/dev/null
    cfg=$(buildah inspect --type image --format '{{.FromImageID}}' localhost/e2e-local/scratch:latest)

    buildah push --tls-verify=false --digestfile "$SD/pushed" \
        localhost/e2e-local/scratch:latest "docker://$HOST/$repo:latest"
    pushed=$(cat "$SD/pushed")
    sk inspect --tls-verify=false --raw "docker://$HOST/$repo:latest" >"$SD/raw.json"
    expect_eq "$(sha256_of "$SD/raw.json")" "$pushed" "sha256 of the manifest buildah pushed"
    expect_eq "$(jq -r .config.digest "$SD/raw.json")" "sha256:$cfg" "config digest in the pushed manifest"

    # Also as Docker schema 2.
    buildah push --tls-verify=false --format v2s2 localhost/e2e-local/scratch:latest "docker://$HOST/$repo:docker"
    expect_eq "$(sk inspect --tls-verify=false --raw "docker://$HOST/$repo:docker" | jq -r .mediaType)" \
        "$MT_DOCKER_MANIFEST" "mediaType of buildah push --format v2s2"

    # Forget everything locally, pull with podman.
    buildah rmi -a -f >/dev/null
    [[ -z $(buildah images -q) ]] || fail "local images left after rmi -a"
    podman pull -q --tls-verify=false "$HOST/$repo:latest" >/dev/null
    expect_eq "$(podman image inspect --format '{{.Digest}}' "$HOST/$repo:latest")" "$pushed" "digest podman pulled"
    expect_eq "$(podman image inspect --format '{{.Id}}' "$HOST/$repo:latest")" "$cfg" "image id podman pulled"
    mnt=$(podman image mount "$HOST/$repo:latest")
    cmp -s "$mnt/hello.txt" "$SD/hello.txt" || fail "hello.txt differs in the image podman pulled"
    cmp -s "$mnt/data/data.bin" "$SD/data.bin" || fail "data.bin differs in the image podman pulled"
    podman image unmount "$HOST/$repo:latest" >/dev/null

    podman push -q --tls-verify=false --digestfile "$SD/ppushed" "$HOST/$repo:latest" "docker://$HOST/$prepo:latest"
    sk inspect --tls-verify=false --raw "docker://$HOST/$prepo:latest" >"$SD/praw.json"
    expect_eq "$(sha256_of "$SD/praw.json")" "$(cat "$SD/ppushed")" "sha256 of the manifest podman pushed"
    expect_eq "$(jq -r .config.digest "$SD/praw.json")" "sha256:$cfg" "config digest podman pushed"

    podman rmi -a -f >/dev/null
    c=$(buildah from -q --tls-verify=false "docker://$HOST/$prepo:latest")
    mnt=$(buildah mount "$c")
    cmp -s "$mnt/hello.txt" "$SD/hello.txt" || fail "hello.txt differs in the image buildah pulled"
    cmp -s "$mnt/data/data.bin" "$SD/data.bin" || fail "data.bin differs in the image buildah pulled"
    buildah umount "$c" >/dev/null
    buildah rm "$c" >/dev/null
    buildah rmi -a -f >/dev/null
}

# e. oras-py: a two-file artifact with an artifact type, pushed with chunked
#    (PATCH) uploads, pulled back.
sc_oras_artifact() {
    local repo=e2e/oras/artifact type=application/vnd.wharf.e2e.bundle.v1 digest f
    mkdir -p "$SD/in"
    printf 'readme for %s\n' "$RUN_ID" >"$SD/in/readme.txt"
    head -c 300000 /dev/urandom >"$SD/in/payload.bin"
    (cd "$SD/in" && oras_py push "$HOST" "$repo:v1" --artifact-type "$type" --chunked --chunk-size 65536 \
        readme.txt payload.bin:application/octet-stream) >"$SD/push.json"
    digest=$(jq -r .digest "$SD/push.json")
    expect_eq "$(jq -r .status "$SD/push.json")" 201 "manifest PUT status"
    expect_eq "$digest" "$(jq -r .sent_digest "$SD/push.json")" "Docker-Content-Digest of the pushed manifest"

    http GET "/v2/$repo/manifests/v1" -H "Accept: $MT_OCI_MANIFEST"
    expect_status 200 "GET artifact manifest"
    expect_eq "$(sha256_of "$SD/body")" "$digest" "sha256 of the artifact manifest"
    expect_eq "$(jq -r .artifactType "$SD/body")" "$type" "artifactType"
    expect_eq "$(jq -r '.layers | length' "$SD/body")" 2 "layer count"

    oras_py pull "$HOST" "$repo:v1" "$SD/out" >/dev/null
    oras_py pull "$HOST" "$repo@$digest" "$SD/out-by-digest" >/dev/null
    for f in readme.txt payload.bin; do
        cmp -s "$SD/in/$f" "$SD/out/$f" || fail "$f differs after oras pull"
        cmp -s "$SD/in/$f" "$SD/out-by-digest/$f" || fail "$f differs after oras pull by digest"
    done
}

# e. Artifacts whose subject is an image: an SBOM pushed with oras-py (by
#    tag, artifactType set) and a signature pushed with curl by digest, with
#    no artifactType (so its type is its config mediaType). Pulled back with
#    oras-py. Writes what referrers-api checks to $E2E_WORK/shared.
sc_oras_subject() {
    local repo=e2e/skopeo/img subj subj_size subj_mt sbom sig cfgd layer sbom_type=application/vnd.wharf.e2e.sbom.v1+json
    local sig_type=application/vnd.wharf.e2e.signature.v1+json

    # The subject: the image of skopeo-oci, pushed here if it is not there.
    http GET "/v2/$repo/manifests/v1" -H "Accept: $ACCEPT_ALL"
    if [[ $STATUS != 200 ]]; then
        layout_image "$SD/src" v1 "subject e2e $RUN_ID" >/dev/null
        sk copy --preserve-digests --dest-tls-verify=false "oci:$SD/src:v1" "docker://$HOST/$repo:v1"
        http GET "/v2/$repo/manifests/v1" -H "Accept: $ACCEPT_ALL"
        expect_status 200 "GET subject manifest"
    fi
    subj=$(sha256_of "$SD/body")
    subj_size=$(stat -c %s "$SD/body")
    subj_mt=$(hdr Content-Type | cut -d';' -f1)
    expect_eq "$subj_mt" "$(jq -r .mediaType "$SD/body")" "Content-Type of the subject manifest"

    mkdir -p "$SD/sbom"
    jq -n --arg id "$RUN_ID" '{spdxVersion: "SPDX-2.3", name: ("wharf-e2e-" + $id), packages: []}' \
        >"$SD/sbom/sbom.spdx.json"
    (cd "$SD/sbom" && oras_py push "$HOST" "$repo:sbom-e2e" --subject "$repo:v1" \
        --artifact-type "$sbom_type" --config-media-type application/vnd.oci.empty.v1+json \
        sbom.spdx.json:application/spdx+json) >"$SD/sbom.json"
    expect_eq "$(jq -r .subject "$SD/sbom.json")" "$subj" "subject digest oras-py used"
    expect_eq "$(jq -r .digest "$SD/sbom.json")" "$(jq -r .sent_digest "$SD/sbom.json")" "digest of the SBOM manifest"
    sbom=$(jq -r .digest "$SD/sbom.json")

    # Signature: config blob + one layer by curl, manifest PUT by digest.
    printf '{"e2e":"%s"}' "$RUN_ID" >"$SD/sig-config.json"
    printf 'signature of %s (%s)\n' "$subj" "$RUN_ID" >"$SD/sig.txt"
    cfgd=$(upload_blob "$repo" "$SD/sig-config.json")
    layer=$(upload_blob "$repo" "$SD/sig.txt")
    jq -cnj --arg mt "$MT_OCI_MANIFEST" --arg ct "$sig_type" --arg cd "$cfgd" --argjson cs "$(stat -c %s "$SD/sig-config.json")" \
        --arg ld "$layer" --argjson ls "$(stat -c %s "$SD/sig.txt")" \
        --arg sd "$subj" --argjson ss "$subj_size" --arg smt "$subj_mt" \
        '{schemaVersion: 2, mediaType: $mt,
          config: {mediaType: $ct, digest: $cd, size: $cs},
          layers: [{mediaType: "application/vnd.wharf.e2e.sig", digest: $ld, size: $ls,
                    annotations: {"org.opencontainers.image.title": "sig.txt"}}],
          subject: {mediaType: $smt, digest: $sd, size: $ss},
          annotations: {"org.wharf.e2e": "curl"}}' >"$SD/sig-manifest.json"
    sig=$(sha256_of "$SD/sig-manifest.json")
    put_manifest "$repo" "$sig" "$SD/sig-manifest.json" "$MT_OCI_MANIFEST"
    expect_status 201 "PUT signature manifest by digest"
    expect_eq "$(hdr Docker-Content-Digest)" "$sig" "Docker-Content-Digest of the signature"
    local sig_oci_subject
    sig_oci_subject=$(hdr OCI-Subject)

    oras_py pull "$HOST" "$repo:sbom-e2e" "$SD/out" >/dev/null
    cmp -s "$SD/sbom/sbom.spdx.json" "$SD/out/sbom.spdx.json" || fail "SBOM differs after oras pull"
    oras_py pull "$HOST" "$repo@$sig" "$SD/out-sig" >/dev/null
    cmp -s "$SD/sig.txt" "$SD/out-sig/sig.txt" || fail "signature differs after oras pull by digest"

    mkdir -p "$E2E_WORK/shared"
    {
        echo "REF_REPO=$repo"
        echo "REF_SUBJECT=$subj"
        echo "REF_SBOM=$sbom"
        echo "REF_SBOM_TYPE=$sbom_type"
        echo "REF_SBOM_OCI_SUBJECT=$(jq -r '.oci_subject // ""' "$SD/sbom.json")"
        echo "REF_SIG=$sig"
        echo "REF_SIG_TYPE=$sig_type"
        echo "REF_SIG_OCI_SUBJECT=$sig_oci_subject"
    } >"$E2E_WORK/shared/referrers.env"
}

# e. The referrers API (OCI distribution-spec 1.1) for what oras-subject
#    pushed. Debian's reference registry (distribution 2.8) lacks it.
sc_referrers_api() {
    [[ -s $E2E_WORK/shared/referrers.env ]] || fail "oras-subject did not complete; nothing to look up"
    # shellcheck disable=SC1091
    source "$E2E_WORK/shared/referrers.env"
    local url="/v2/$REF_REPO/referrers/$REF_SUBJECT"

    http GET "$url"
    expect_status 200 "GET $url"
    expect_eq "$(hdr Content-Type | cut -d';' -f1)" "$MT_OCI_INDEX" "referrers Content-Type"
    jq -e --arg mt "$MT_OCI_INDEX" '.schemaVersion == 2 and .mediaType == $mt' "$SD/body" >/dev/null ||
        fail "referrers response is not an OCI index: $(head -c 300 "$SD/body")"
    jq -e --arg d "$REF_SBOM" --arg t "$REF_SBOM_TYPE" --arg mt "$MT_OCI_MANIFEST" \
        'any(.manifests[]; .digest == $d and .artifactType == $t and .mediaType == $mt and .size > 0
             and .annotations["org.wharf.e2e"] == "oras-py")' "$SD/body" >/dev/null ||
        fail "SBOM $REF_SBOM (artifactType, mediaType, size, annotations) not in referrers: $(jq -c .manifests "$SD/body")"
    jq -e --arg d "$REF_SIG" --arg t "$REF_SIG_TYPE" \
        'any(.manifests[]; .digest == $d and .artifactType == $t)' "$SD/body" >/dev/null ||
        fail "signature $REF_SIG with artifactType from its config not in referrers: $(jq -c .manifests "$SD/body")"

    http GET "$url?artifactType=$(jq -rn --arg t "$REF_SBOM_TYPE" '$t|@uri')"
    expect_status 200 "GET referrers filtered by artifactType"
    jq -e --arg d "$REF_SBOM" --arg t "$REF_SBOM_TYPE" \
        '(.manifests | length) >= 1 and all(.manifests[]; .artifactType == $t) and any(.manifests[]; .digest == $d)' \
        "$SD/body" >/dev/null || fail "artifactType filter: $(jq -c .manifests "$SD/body")"
    [[ $(hdr OCI-Filters-Applied) == *artifactType* ]] || fail "OCI-Filters-Applied header missing on a filtered response"

    # A registry that processes `subject` says so on the manifest PUT.
    expect_eq "$REF_SBOM_OCI_SUBJECT" "$REF_SUBJECT" "OCI-Subject header on the SBOM push"
    expect_eq "$REF_SIG_OCI_SUBJECT" "$REF_SUBJECT" "OCI-Subject header on the signature push"

    http GET "/v2/$REF_REPO/referrers/sha256:$(printf 'no such subject %s' "$RUN_ID" | sha256sum | cut -d' ' -f1)"
    expect_status 200 "referrers of an unknown digest"
    jq -e '.manifests == []' "$SD/body" >/dev/null || fail "referrers of an unknown digest not empty: $(cat "$SD/body")"

    # Deleting a referrer removes it from the list.
    http DELETE "/v2/$REF_REPO/manifests/$REF_SIG"
    expect_status 202 "DELETE signature manifest"
    http GET "$url"
    expect_status 200 "GET referrers after delete"
    jq -e --arg d "$REF_SIG" 'all(.manifests[]; .digest != $d)' "$SD/body" >/dev/null ||
        fail "deleted signature still listed in referrers"
}

# f. Blob reuse: skopeo skips blobs already present, registry-to-registry
#    copies across repositories, and cross-repository mounts. (Mounting is a
#    MAY in the spec, but docker/skopeo/containerd rely on it and every
#    production registry does it, so 201 is required here.)
sc_blob_reuse() {
    local want layer
    layout_image "$SD/src" v1 "reuse e2e $RUN_ID" >/dev/null
    want=$(ref_digest "$SD/src" v1)
    layer=$(jq -r '.layers[0].digest' "$(blob_file "$SD/src" "$want")")

    # skopeo --debug logs "Skipping blob D (already present)" when its HEAD
    # finds the blob in the destination repository.
    sk --debug copy --preserve-digests --dest-tls-verify=false "oci:$SD/src:v1" "docker://$HOST/e2e/reuse/a:v1" >"$SD/copy1.log" 2>&1
    sk --debug copy --preserve-digests --dest-tls-verify=false "oci:$SD/src:v1" "docker://$HOST/e2e/reuse/a:v2" >"$SD/copy2.log" 2>&1
    ! grep -q "Skipping blob $layer" "$SD/copy1.log" || fail "first copy found the new layer already present"
    grep -q "Skipping blob $layer (already present)" "$SD/copy2.log" ||
        fail "second copy did not skip the existing layer (HEAD on the blob did not answer 200?)"
    expect_eq "$(sk inspect --tls-verify=false "docker://$HOST/e2e/reuse/a:v2" | jq -r .Digest)" "$want" "digest of a:v2"

    sk copy --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
        "docker://$HOST/e2e/reuse/a:v1" "docker://$HOST/e2e/reuse/b:v1"
    expect_eq "$(sk inspect --tls-verify=false "docker://$HOST/e2e/reuse/b:v1" | jq -r .Digest)" "$want" "digest in repo b"
    http HEAD "/v2/e2e/reuse/b/blobs/$layer"
    expect_status 200 "HEAD layer in repo b"
    expect_eq "$(hdr Docker-Content-Digest)" "$layer" "Docker-Content-Digest of the layer in repo b"
    expect_eq "$(hdr Content-Length)" "$(stat -c %s "$(blob_file "$SD/src" "$layer")")" "Content-Length of the layer"

    http POST "/v2/e2e/reuse/c/blobs/uploads/?mount=$layer&from=e2e/reuse/a"
    expect_status 201 "cross-repository mount"
    expect_eq "$(hdr Docker-Content-Digest)" "$layer" "Docker-Content-Digest of the mounted blob"
    [[ -n $(hdr Location) ]] || fail "no Location on the mount response"
    http GET "/v2/e2e/reuse/c/blobs/$layer"
    expect_status 200 "GET mounted blob"
    cmp -s "$SD/body" "$(blob_file "$SD/src" "$layer")" || fail "mounted blob differs"
}

# f. Plain API: monolithic and digest-checked uploads, manifests by digest
#    and by tag, HEAD.
sc_api_upload_and_tags() {
    local repo=e2e/api/misc cfg m loc bad t
    printf '{"e2e":"%s"}' "$RUN_ID" >"$SD/config.json"
    cfg=$(upload_blob "$repo" "$SD/config.json")
    http GET "/v2/$repo/blobs/$cfg"
    expect_status 200 "GET uploaded blob"
    cmp -s "$SD/body" "$SD/config.json" || fail "uploaded blob differs"
    http HEAD "/v2/$repo/blobs/$cfg"
    expect_status 200 "HEAD uploaded blob"
    expect_eq "$(hdr Content-Length)" "$(stat -c %s "$SD/config.json")" "Content-Length of the blob"

    # A PUT whose digest does not match the bytes must be refused.
    printf 'some bytes %s' "$RUN_ID" >"$SD/data"
    bad=sha256:$(printf 'other bytes %s' "$RUN_ID" | sha256sum | cut -d' ' -f1)
    http POST "/v2/$repo/blobs/uploads/"
    expect_status 202 "POST upload"
    loc=$(abs_url "$(hdr Location)")
    http PUT "$(add_query "$loc" "digest=$bad")" -H 'Content-Type: application/octet-stream' --data-binary @"$SD/data"
    expect_status 400 "PUT with a digest that does not match"
    jq -e '.errors[0].code == "DIGEST_INVALID"' "$SD/body" >/dev/null || fail "wrong digest: code not DIGEST_INVALID: $(cat "$SD/body")"
    http HEAD "/v2/$repo/blobs/$bad"
    expect_status 404 "HEAD of the refused digest"

    # An image manifest with no layers, by digest, then under three tags.
    jq -cnj --arg mt "$MT_OCI_MANIFEST" --arg d "$cfg" --argjson s "$(stat -c %s "$SD/config.json")" \
        '{schemaVersion: 2, mediaType: $mt, config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $d, size: $s}, layers: []}' \
        >"$SD/manifest.json"
    m=$(sha256_of "$SD/manifest.json")
    put_manifest "$repo" "sha256:$(printf x | sha256sum | cut -d' ' -f1)" "$SD/manifest.json" "$MT_OCI_MANIFEST"
    expect_status 400 "PUT manifest under a digest that does not match"
    put_manifest "$repo" "$m" "$SD/manifest.json" "$MT_OCI_MANIFEST"
    expect_status 201 "PUT manifest by digest"
    expect_eq "$(hdr Docker-Content-Digest)" "$m" "Docker-Content-Digest"
    for t in t1 t2; do
        put_manifest "$repo" "$t" "$SD/manifest.json" "$MT_OCI_MANIFEST"
        expect_status 201 "PUT manifest as $t"
    done
    http HEAD "/v2/$repo/manifests/t2" -H "Accept: $MT_OCI_MANIFEST"
    expect_status 200 "HEAD manifest by tag"
    expect_eq "$(hdr Docker-Content-Digest)" "$m" "Docker-Content-Digest on HEAD"
    expect_eq "$(hdr Content-Length)" "$(stat -c %s "$SD/manifest.json")" "Content-Length on HEAD"
    expect_eq "$(hdr Content-Type)" "$MT_OCI_MANIFEST" "Content-Type on HEAD"
    http GET "/v2/$repo/manifests/$m" -H "Accept: $MT_OCI_MANIFEST"
    expect_status 200 "GET manifest by digest"
    cmp -s "$SD/body" "$SD/manifest.json" || fail "manifest bytes differ"
}

# f. Tag listing: sorted (a MUST in distribution-spec 1.1), n and last.
sc_tags_list() {
    local repo=e2e/api/tags cfg m t
    printf '{"e2e":"tags %s"}' "$RUN_ID" >"$SD/config.json"
    cfg=$(upload_blob "$repo" "$SD/config.json")
    jq -cnj --arg mt "$MT_OCI_MANIFEST" --arg d "$cfg" --argjson s "$(stat -c %s "$SD/config.json")" \
        '{schemaVersion: 2, mediaType: $mt, config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $d, size: $s}, layers: []}' \
        >"$SD/manifest.json"
    for t in t3 t1 t2; do
        put_manifest "$repo" "$t" "$SD/manifest.json" "$MT_OCI_MANIFEST"
        expect_status 201 "PUT manifest as $t"
    done

    http GET "/v2/$repo/tags/list"
    expect_status 200 "GET tags/list"
    expect_eq "$(jq -c '[.name, .tags]' "$SD/body")" "[\"$repo\",[\"t1\",\"t2\",\"t3\"]]" "tag list"
    http GET "/v2/$repo/tags/list?n=2"
    expect_status 200 "GET tags/list?n=2"
    expect_eq "$(jq -c .tags "$SD/body")" '["t1","t2"]' "first page of tags"
    http GET "/v2/$repo/tags/list?n=2&last=t2"
    expect_status 200 "GET tags/list?n=2&last=t2"
    expect_eq "$(jq -c .tags "$SD/body")" '["t3"]' "second page of tags"
}

# g. docker-registry-client-async (PyPI), an asyncio client that sends each
#    upload request to the Location it was given and needs that to be an
#    absolute URL (it splits it on "://"): a monolithic and a two-chunk
#    blob upload and a manifest through its API, all pulled back with it
#    (helpers/drca_e2e.py); then curl reads the same manifest.
sc_drca_push_pull() {
    local repo=e2e/drca/img out m loc
    out=$(drca_py "$HOST" "$repo" v1)
    echo "$out" >"$SD/drca.json"
    m=$(jq -r .manifest "$SD/drca.json")
    [[ $m == sha256:* ]] || fail "no manifest digest from drca_e2e.py: $out"
    while read -r loc; do
        [[ $loc == "http://$HOST/v2/$repo/"* ]] || fail "Location not an absolute URL of this registry: $loc"
    done < <(jq -r '.locations[]' "$SD/drca.json")
    http GET "/v2/$repo/manifests/v1" -H "Accept: $MT_OCI_MANIFEST"
    expect_status 200 "GET the manifest drca pushed"
    expect_eq "$(sha256_of "$SD/body")" "$m" "digest of the manifest drca pushed"
    http GET "/v2/$repo/blobs/$(jq -r .layer "$SD/drca.json")"
    expect_status 200 "GET the layer drca pushed in chunks"
    expect_eq "$(sha256_of "$SD/body")" "$(jq -r .layer "$SD/drca.json")" "digest of the chunked layer"
}

# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------
# TLS scenarios: real certificate verification against a private CA (the
# TLS registry is not in registries.conf as insecure; clients get the CA
# with --cert-dir, the wharf client with --ca-cert).
# ---------------------------------------------------------------------------

tls_curl() { # PATH [curl args...]
    local path=$1
    shift
    curl -sS --max-time 60 --cacert "$TLS_CA_DIR/ca.crt" "$@" "https://$TLS_HOST$path"
}

sc_tls_skopeo() {
    local repo=e2e/tls/skopeo want
    layout_image "$SD/src" v1 "tls skopeo e2e $RUN_ID" >/dev/null
    want=$(ref_digest "$SD/src" v1)

    # Without the CA the certificate is refused: TLS is really verified.
    if sk copy "oci:$SD/src:v1" "docker://$TLS_HOST/$repo:v1" >"$SD/untrusted.log" 2>&1; then
        fail "skopeo copy succeeded without the CA"
    fi
    grep -qiE 'certificate|x509' "$SD/untrusted.log" ||
        fail "skopeo without the CA failed, but not on the certificate: $(tail -n1 "$SD/untrusted.log")"

    sk copy --preserve-digests --dest-cert-dir "$TLS_CA_DIR" --digestfile "$SD/pushed" \
        "oci:$SD/src:v1" "docker://$TLS_HOST/$repo:v1"
    expect_eq "$(cat "$SD/pushed")" "$want" "digest skopeo pushed over TLS"
    sk inspect --cert-dir "$TLS_CA_DIR" --raw "docker://$TLS_HOST/$repo:v1" >"$SD/raw.json"
    cmp -s "$SD/raw.json" "$(blob_file "$SD/src" "$want")" || fail "manifest bytes over TLS differ"
    sk list-tags --cert-dir "$TLS_CA_DIR" "docker://$TLS_HOST/$repo" | jq -e '.Tags | index("v1")' >/dev/null ||
        fail "list-tags over TLS lacks v1"
    sk copy --preserve-digests --src-cert-dir "$TLS_CA_DIR" "docker://$TLS_HOST/$repo:v1" "oci:$SD/out:v1"
    compare_layouts "$SD/src" "$SD/out" v1

    # curl with the CA: HTTP/2 by ALPN; OCI error JSON over TLS.
    expect_eq "$(tls_curl /v2/ -o /dev/null -w '%{http_code} %{http_version}')" "200 2" "curl GET /v2/ over TLS"
    tls_curl "/v2/$repo/manifests/nope" -o "$SD/err.json" -H "Accept: $ACCEPT_ALL" >/dev/null
    expect_eq "$(jq -r '.errors[0].code' "$SD/err.json")" MANIFEST_UNKNOWN "error code over TLS"
}

sc_tls_podman() {
    local repo=e2e/tls/podman c pushed mnt
    export STORAGE_DRIVER=vfs
    printf 'hello over TLS %s\n' "$RUN_ID" >"$SD/hello.txt"
    c=$(buildah from scratch)
    buildah copy "$c" "$SD/hello.txt" /hello.txt >/dev/null
    buildah commit --rm "$c" localhost/e2e-local/tls:latest >/dev/null

    if podman push -q localhost/e2e-local/tls:latest "docker://$TLS_HOST/$repo:latest" >"$SD/untrusted.log" 2>&1; then
        fail "podman push succeeded without the CA"
    fi
    podman push -q --cert-dir "$TLS_CA_DIR" --digestfile "$SD/pushed" \
        localhost/e2e-local/tls:latest "docker://$TLS_HOST/$repo:latest"
    pushed=$(cat "$SD/pushed")
    podman rmi -a -f >/dev/null
    podman pull -q --cert-dir "$TLS_CA_DIR" "$TLS_HOST/$repo:latest" >/dev/null
    expect_eq "$(podman image inspect --format '{{.Digest}}' "$TLS_HOST/$repo:latest")" "$pushed" "digest podman pulled over TLS"
    mnt=$(podman image mount "$TLS_HOST/$repo:latest")
    cmp -s "$mnt/hello.txt" "$SD/hello.txt" || fail "hello.txt differs in the image pulled over TLS"
    podman image unmount "$TLS_HOST/$repo:latest" >/dev/null
    podman rmi -a -f >/dev/null
}

sc_tls_wharf_client() {
    local ref=https://$TLS_HOST/e2e/tls/pkg:1.0 digest
    [[ -x ${WHARF_BIN:-} ]] || fail "WHARF_E2E_WHARF_BIN is not an executable: ${WHARF_BIN:-unset}"
    mkdir -p "$SD/in/dir" "$SD/xdg"
    printf 'package over TLS %s\n' "$RUN_ID" >"$SD/in/dir/a.txt"
    head -c 50000 /dev/urandom >"$SD/in/b.bin"
    export XDG_CACHE_HOME=$SD/xdg XDG_RUNTIME_DIR=$SD/xdg
    if (cd "$SD/in" && "$WHARF_BIN" push -q "$ref" dir b.bin) >"$SD/untrusted.log" 2>&1; then
        fail "wharf push succeeded without the CA"
    fi
    digest=$(cd "$SD/in" && "$WHARF_BIN" push -q --ca-cert "$TLS_CA_DIR/ca.crt" "$ref" dir b.bin)
    "$WHARF_BIN" pull -q --ca-cert "$TLS_CA_DIR/ca.crt" "$ref" -o "$SD/out" >/dev/null
    cmp -s "$SD/in/dir/a.txt" "$SD/out/dir/a.txt" || fail "a.txt differs after wharf push/pull over TLS"
    cmp -s "$SD/in/b.bin" "$SD/out/b.bin" || fail "b.bin differs after wharf push/pull over TLS"
    # Another client sees what the wharf client pushed.
    expect_eq "$(sk inspect --cert-dir "$TLS_CA_DIR" --raw "docker://$TLS_HOST/e2e/tls/pkg:1.0" | sha256sum | cut -d' ' -f1)" \
        "${digest#sha256:}" "manifest digest seen by skopeo"
}

# ---------------------------------------------------------------------------

# Run one scenario (in a fresh process, so errexit works inside it).
run_one() {
    local name=$1
    SD=$E2E_WORK/$name
    REASON_FILE=$E2E_WORK/reasons/$name
    mkdir -p "$SD"
    : >"$REASON_FILE"
    set -E
    trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR
    cd "$SD"
    "sc_${name//-/_}"
}

write_tool_config() {
    local w=$E2E_WORK
    mkdir -p "$w/tmp" "$w/storage" "$w/reasons" "$w/libpod-tmp" "$w/networks"
    cat >"$w/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$w/storage/graph"
runroot = "$w/storage/run"
EOF
    cat >"$w/registries.conf" <<EOF
unqualified-search-registries = []

[[registry]]
location = "$HOST"
insecure = true
EOF
    cat >"$w/policy.json" <<'EOF'
{"default": [{"type": "insecureAcceptAnything"}]}
EOF
    cat >"$w/containers.conf" <<EOF
[engine]
tmp_dir = "$w/libpod-tmp"
image_copy_tmp_dir = "$w/tmp"
events_logger = "none"
cgroup_manager = "cgroupfs"

[network]
network_config_dir = "$w/networks"
network_backend = "cni"
cni_plugin_dirs = ["/usr/lib/cni"]
EOF
    export CONTAINERS_STORAGE_CONF=$w/storage.conf
    export CONTAINERS_REGISTRIES_CONF=$w/registries.conf
    export CONTAINERS_CONF=$w/containers.conf
    export REGISTRY_AUTH_FILE=$w/auth.json
    export BUILDAH_ISOLATION=chroot
    export TMPDIR=$w/tmp
    echo '{}' >"$w/auth.json"
    # buildah/podman/skopeo take their signature policy from here.
    mkdir -p "$w/home/.config/containers"
    cp "$w/policy.json" "$w/home/.config/containers/policy.json"
}

cleanup() {
    local m
    [[ -n ${E2E_WORK:-} && -d $E2E_WORK ]] || return 0
    # Unmount anything left mounted under the work dir (vfs needs none, but
    # be safe), deepest first.
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v w="$E2E_WORK" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r)
    if [[ -n ${WHARF_E2E_KEEP:-} ]]; then
        echo "# work dir kept: $E2E_WORK" >&2
    else
        rm -rf "$E2E_WORK"
    fi
}

main() {
    if [[ ${1:-} == --scenario ]]; then
        HOST=$3
        run_one "$2"
        return
    fi
    if [[ $# -ne 1 || $1 != *:* ]]; then
        echo "usage: $0 HOST:PORT" >&2
        exit 2
    fi
    export HOST=$1
    export E2E_SELF=$HERE/run.sh
    export E2E_VENV=${WHARF_E2E_VENV:-$HOME/.cache/wharf-e2e-venv}
    export E2E_CMD_TIMEOUT=${WHARF_E2E_CMD_TIMEOUT:-180}
    export TLS_HOST=${WHARF_E2E_TLS_HOST:-} TLS_CA_DIR=${WHARF_E2E_TLS_CA_DIR:-}
    export WHARF_BIN=${WHARF_E2E_WHARF_BIN:-}
    export RUN_ID
    RUN_ID=$(date +%s)-$$-$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
    local timeout=${WHARF_E2E_TIMEOUT:-300}

    local tool missing=()
    for tool in skopeo buildah podman umoci jq curl python3 sha256sum timeout; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [[ -x $E2E_VENV/bin/python ]] || missing+=("oras-py venv at $E2E_VENV")
    if ((${#missing[@]})); then
        echo "run.sh: missing ${missing[*]}; run tests/e2e/install.sh" >&2
        exit 2
    fi

    export E2E_WORK
    E2E_WORK=$(mktemp -d -t wharf-e2e.XXXXXX)
    trap cleanup EXIT
    write_tool_config

    if ! curl -s -o /dev/null --max-time 5 "http://$HOST/v2/"; then
        echo "run.sh: no registry answers at http://$HOST/v2/" >&2
    fi

    local name rc passed=0 failed=0 reason
    local selected=("${SCENARIOS[@]}")
    [[ ${WHARF_E2E_AUTH:-} == 1 ]] && selected=("${AUTH_SCENARIOS[@]}")
    [[ ${WHARF_E2E_QUOTA:-} == 1 ]] && selected=("${QUOTA_SCENARIOS[@]}")
    if [[ -n ${WHARF_E2E_ONLY:-} ]]; then
        read -r -a selected <<<"$WHARF_E2E_ONLY"
    fi
    for name in "${selected[@]}"; do
        if [[ $name == *tls-* && ( -z $TLS_HOST || ! -f $TLS_CA_DIR/ca.crt ) ]]; then
            echo "skip - $name (no TLS registry: WHARF_E2E_TLS_HOST, WHARF_E2E_TLS_CA_DIR)"
            continue
        fi
        if [[ " ${WHARF_E2E_SKIP:-} " == *" $name "* ]]; then
            echo "skip - $name"
            continue
        fi
        if ! declare -F "sc_${name//-/_}" >/dev/null; then
            echo "FAIL - $name: no such scenario"
            failed=$((failed + 1))
            continue
        fi
        mkdir -p "$E2E_WORK/logs"
        rc=0
        HOME=$E2E_WORK/home timeout -k 10 "$timeout" "$HERE/run.sh" --scenario "$name" "$HOST" \
            </dev/null >"$E2E_WORK/logs/$name.log" 2>&1 || rc=$?
        if [[ $rc -eq 0 ]]; then
            echo "ok - $name"
            passed=$((passed + 1))
        else
            reason=$(head -n1 "$E2E_WORK/reasons/$name" 2>/dev/null || true)
            if [[ $reason == ERR$'\t'* ]]; then
                reason="${reason#ERR$'\t'} ($(grep -v '^[[:space:]]*$' "$E2E_WORK/logs/$name.log" | tail -n1 | cut -c1-200))"
            fi
            [[ $rc -eq 124 || $rc -eq 137 ]] && reason="timed out after ${timeout}s${reason:+ ($reason)}"
            echo "FAIL - $name: ${reason:-exit status $rc}"
            sed 's/^/#   /' "$E2E_WORK/logs/$name.log" | tail -n 20 >&2
            failed=$((failed + 1))
        fi
    done
    echo "e2e: $passed passed, $failed failed"
    [[ $failed -eq 0 ]]
}

main "$@"
