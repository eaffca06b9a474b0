# Scenarios against a Wharf with a quota, sourced by run.sh and run when
# WHARF_E2E_QUOTA=1 (tests/e2e/quota.sh sets it up): quota/** may hold
# WHARF_E2E_QUOTA_KIB KiB together, free/** has no limit.
#
# Environment (from quota.sh):
#   WHARF_E2E_QUOTA_KIB   the limit of quota/**, in KiB
#   WHARF_E2E_BIN         the wharf binary (client commands)
# shellcheck shell=bash

QUOTA_SCENARIOS=(
    quota-skopeo-refused
    quota-skopeo-fits
    quota-podman-refused
    quota-wharf-client
)

# expect_quota_message FILE: a client's stderr names the quota and its limit.
expect_quota_message() {
    grep -q "quota exceeded: quota/\*\* may hold ${WHARF_E2E_QUOTA_KIB} KiB" "$1" ||
        fail "the client's error does not carry the quota message: $(tail -n 3 "$1" | tr '\n' ' ')"
}

# An image larger than the quota: skopeo fails, says why, and the
# repository holds none of it.
sc_quota_skopeo_refused() {
    local repo=quota/skopeo want layer
    layout_image "$SD/src" v1 "quota e2e $RUN_ID" $((WHARF_E2E_QUOTA_KIB * 2)) >/dev/null
    want=$(ref_digest "$SD/src" v1)
    layer=$(jq -r '.layers[0].digest' "$(blob_file "$SD/src" "$want")")
    if sk copy --dest-tls-verify=false "oci:$SD/src:v1" "docker://$HOST/$repo:v1" 2>"$SD/stderr"; then
        fail "skopeo pushed an image larger than the quota"
    fi
    cat "$SD/stderr" >&2
    expect_quota_message "$SD/stderr"
    http HEAD "/v2/$repo/blobs/$layer"
    expect_status 404 "the refused layer in $repo"
    http GET "/v2/$repo/manifests/v1" -H "Accept: $ACCEPT_ALL"
    expect_status 404 "the refused image's tag"
}

# An image that fits goes in, and goes in again (content the repository
# holds costs nothing), also under a second tag.
sc_quota_skopeo_fits() {
    local repo=quota/small want
    layout_image "$SD/src" v1 "quota e2e small $RUN_ID" 4 >/dev/null
    want=$(ref_digest "$SD/src" v1)
    sk copy --preserve-digests --dest-tls-verify=false "oci:$SD/src:v1" "docker://$HOST/$repo:v1"
    sk copy --preserve-digests --dest-tls-verify=false "oci:$SD/src:v1" "docker://$HOST/$repo:v1"
    sk copy --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
        "docker://$HOST/$repo:v1" "docker://$HOST/$repo:again"
    expect_eq "$(sk inspect --tls-verify=false "docker://$HOST/$repo:again" | jq -r .Digest)" "$want" "digest of the second tag"
}

# podman pulls an image from a repository without a limit and pushes it
# into quota/**: refused, with the reason.
sc_quota_podman_refused() {
    local src=free/podman/big:v1 dst=quota/podman:v1
    layout_image "$SD/src" v1 "quota e2e podman $RUN_ID" $((WHARF_E2E_QUOTA_KIB * 2)) >/dev/null
    sk copy --dest-tls-verify=false "oci:$SD/src:v1" "docker://$HOST/$src"
    podman pull -q --tls-verify=false "$HOST/$src" >/dev/null
    if podman push --tls-verify=false "$HOST/$src" "docker://$HOST/$dst" 2>"$SD/stderr"; then
        fail "podman pushed an image larger than the quota"
    fi
    cat "$SD/stderr" >&2
    expect_quota_message "$SD/stderr"
    http GET "/v2/${dst%:*}/manifests/v1" -H "Accept: $ACCEPT_ALL"
    expect_status 404 "the refused image's tag"
}

# The wharf client pushing files past the quota fails with the message.
sc_quota_wharf_client() {
    [[ -n ${WHARF_E2E_BIN:-} ]] || fail "WHARF_E2E_BIN is not set"
    head -c $((WHARF_E2E_QUOTA_KIB * 2048)) /dev/urandom >"$SD/big.bin"
    if "$WHARF_E2E_BIN" push --insecure "$HOST/quota/files:v1" "$SD/big.bin" 2>"$SD/stderr"; then
        fail "wharf push went past the quota"
    fi
    cat "$SD/stderr" >&2
    expect_quota_message "$SD/stderr"
    head -c 1024 /dev/urandom >"$SD/small.bin"
    "$WHARF_E2E_BIN" push --insecure "$HOST/quota/files:v2" "$SD/small.bin" >/dev/null
}
