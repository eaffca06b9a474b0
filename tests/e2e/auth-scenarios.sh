# Scenarios against a Wharf with authentication on (the token flow), sourced
# by run.sh and run when WHARF_E2E_AUTH=1 (tests/e2e/auth.sh sets it up).
#
# Environment (from auth.sh):
#   WHARF_E2E_AUTH_USER / _PASS        may pull and push team/**
#   WHARF_E2E_AUTH_DENIED / _DENIED_PASS   a valid user with no permission
#   WHARF_E2E_AUTH_HTPASSWD            the server's htpasswd file
#   WHARF_E2E_BIN                      the wharf binary (client commands)
# shellcheck shell=bash

AUTH_SCENARIOS=(
    auth-challenge
    auth-skopeo
    auth-podman
    auth-denied
    auth-wharf-client
    auth-tls-skopeo
    auth-tls-podman
    auth-tls-wharf-client
)

# The 401 challenge, /token, and both kinds of hashes.
sc_auth_challenge() {
    local u=$WHARF_E2E_AUTH_USER p=$WHARF_E2E_AUTH_PASS tok
    http GET /v2/
    expect_status 401 "anonymous GET /v2/"
    [[ $(hdr WWW-Authenticate) == "Bearer realm=\"http://$HOST/token\",service=\"wharf\"" ]] ||
        fail "challenge: $(hdr WWW-Authenticate)"
    http GET /v2/team/e2e/tags/list
    expect_status 401 "anonymous tags list"
    [[ $(hdr WWW-Authenticate) == *'scope="repository:team/e2e:pull"'* ]] || fail "no scope in $(hdr WWW-Authenticate)"
    jq -e '.errors[0].code == "UNAUTHORIZED"' "$SD/body" >/dev/null || fail "401 body: $(cat "$SD/body")"

    http GET "/token?service=wharf&scope=repository:team/e2e:pull" -u "$u:wrong"
    expect_status 401 "token with a wrong password"
    http GET "/token?service=wharf&scope=repository:team/e2e:pull,push" -u "$u:$p"
    expect_status 200 "token for $u"
    tok=$(jq -r .token "$SD/body")
    http GET /v2/ -H "Authorization: Bearer $tok"
    expect_status 200 "GET /v2/ with a token"

    # wharf passwd writes what Apache's htpasswd verifies, and htpasswd -B
    # hashes (the denied user's) verify in Wharf.
    htpasswd -vb "$WHARF_E2E_AUTH_HTPASSWD" "$u" "$p" >/dev/null 2>&1 || fail "htpasswd -v rejects wharf passwd's hash"
    http GET /v2/ -u "$WHARF_E2E_AUTH_DENIED:$WHARF_E2E_AUTH_DENIED_PASS"
    expect_status 200 "Basic login with an htpasswd -B hash"
}

# skopeo login, then push and pull through the token flow.
sc_auth_skopeo() {
    local repo=team/e2e/skopeo want
    layout_image "$SD/src" v1 "auth skopeo $RUN_ID" >/dev/null
    want=$(ref_digest "$SD/src" v1)
    sk login --tls-verify=false -u "$WHARF_E2E_AUTH_USER" -p "$WHARF_E2E_AUTH_PASS" "$HOST"
    sk copy --preserve-digests --dest-tls-verify=false "oci:$SD/src:v1" "docker://$HOST/$repo:v1"
    expect_eq "$(sk inspect --tls-verify=false "docker://$HOST/$repo:v1" | jq -r .Digest)" "$want" "digest after push"
    sk copy --preserve-digests --src-tls-verify=false "docker://$HOST/$repo:v1" "oci:$SD/out:v1"
    compare_layouts "$SD/src" "$SD/out" v1
    sk logout "$HOST"
    if sk inspect --tls-verify=false "docker://$HOST/$repo:v1" >/dev/null 2>"$SD/anon.err"; then
        fail "inspect without a login succeeded"
    fi
    grep -qiE 'unauthorized|authentication required' "$SD/anon.err" || fail "anonymous error: $(cat "$SD/anon.err")"
}

# podman login, push, forget, pull.
sc_auth_podman() {
    local repo=team/e2e/podman id pushed
    export STORAGE_DRIVER=vfs
    layout_image "$SD/src" v1 "auth podman $RUN_ID" >/dev/null
    id=localhost/e2e-auth/podman:v1
    sk copy "oci:$SD/src:v1" "containers-storage:$id"
    podman login --tls-verify=false -u "$WHARF_E2E_AUTH_USER" -p "$WHARF_E2E_AUTH_PASS" "$HOST" >/dev/null
    podman push -q --tls-verify=false --digestfile "$SD/pushed" "$id" "docker://$HOST/$repo:v1"
    pushed=$(cat "$SD/pushed")
    podman rmi -a -f >/dev/null
    podman pull -q --tls-verify=false "$HOST/$repo:v1" >/dev/null
    expect_eq "$(podman image inspect --format '{{.Digest}}' "$HOST/$repo:v1")" "$pushed" "digest podman pulled"
    podman logout "$HOST" >/dev/null
    podman rmi -a -f >/dev/null
    if podman pull -q --tls-verify=false "$HOST/$repo:v1" >/dev/null 2>"$SD/anon.err"; then
        fail "podman pull without a login succeeded"
    fi
}

# A valid user without push permission gets a clear "denied".
sc_auth_denied() {
    layout_image "$SD/src" v1 "auth denied $RUN_ID" >/dev/null
    sk login --tls-verify=false -u "$WHARF_E2E_AUTH_DENIED" -p "$WHARF_E2E_AUTH_DENIED_PASS" "$HOST"
    if sk copy --dest-tls-verify=false "oci:$SD/src:v1" "docker://$HOST/team/e2e/denied:v1" 2>"$SD/err"; then
        fail "push without permission succeeded"
    fi
    grep -qi 'denied' "$SD/err" || fail "push error does not say denied: $(tail -n 3 "$SD/err")"
    sk logout "$HOST"
}

# wharf login, push, pull.
sc_auth_wharf_client() {
    local ref=$HOST/team/e2e/pkg:v1
    mkdir -p "$SD/in"
    printf 'wharf client %s\n' "$RUN_ID" >"$SD/in/hello.txt"
    head -c 50000 /dev/urandom >"$SD/in/data.bin"
    printf '%s\n' "$WHARF_E2E_AUTH_PASS" |
        "$WHARF_E2E_BIN" login "$HOST" --username "$WHARF_E2E_AUTH_USER" --password-stdin >/dev/null
    (cd "$SD/in" && "$WHARF_E2E_BIN" push -q "$ref" hello.txt data.bin) >/dev/null
    "$WHARF_E2E_BIN" pull -q "$ref" -o "$SD/out" >/dev/null
    cmp -s "$SD/in/hello.txt" "$SD/out/hello.txt" || fail "hello.txt differs after wharf pull"
    cmp -s "$SD/in/data.bin" "$SD/out/data.bin" || fail "data.bin differs after wharf pull"
    "$WHARF_E2E_BIN" logout "$HOST" >/dev/null
    if "$WHARF_E2E_BIN" pull -q "$ref" -o "$SD/out2" >/dev/null 2>"$SD/err"; then
        fail "wharf pull without a login succeeded"
    fi
}

# The token flow over TLS: TLS_HOST has the same users and policy and serves
# HTTPS with a private CA; clients get the CA (--cert-dir, --ca-cert), never
# --tls-verify=false. The challenge's realm is https.
sc_auth_tls_skopeo() {
    local repo=team/e2e/tls-skopeo want c=$TLS_CA_DIR
    curl -sS --max-time 60 --cacert "$c/ca.crt" -o /dev/null -D "$SD/h" "https://$TLS_HOST/v2/"
    grep -qi "^www-authenticate: Bearer realm=\"https://$TLS_HOST/token\"" "$SD/h" ||
        fail "challenge over TLS: $(grep -i www-authenticate "$SD/h")"
    layout_image "$SD/src" v1 "auth tls skopeo $RUN_ID" >/dev/null
    want=$(ref_digest "$SD/src" v1)
    sk login --cert-dir "$c" -u "$WHARF_E2E_AUTH_USER" -p "$WHARF_E2E_AUTH_PASS" "$TLS_HOST"
    sk copy --preserve-digests --dest-cert-dir "$c" "oci:$SD/src:v1" "docker://$TLS_HOST/$repo:v1"
    expect_eq "$(sk inspect --cert-dir "$c" "docker://$TLS_HOST/$repo:v1" | jq -r .Digest)" "$want" "digest after push over TLS"
    sk copy --preserve-digests --src-cert-dir "$c" "docker://$TLS_HOST/$repo:v1" "oci:$SD/out:v1"
    compare_layouts "$SD/src" "$SD/out" v1
    sk logout "$TLS_HOST"
    if sk inspect --cert-dir "$c" "docker://$TLS_HOST/$repo:v1" >/dev/null 2>"$SD/anon.err"; then
        fail "inspect over TLS without a login succeeded"
    fi
    grep -qiE 'unauthorized|authentication required' "$SD/anon.err" || fail "anonymous error: $(cat "$SD/anon.err")"
}

sc_auth_tls_podman() {
    local repo=team/e2e/tls-podman id pushed c=$TLS_CA_DIR
    export STORAGE_DRIVER=vfs
    layout_image "$SD/src" v1 "auth tls podman $RUN_ID" >/dev/null
    id=localhost/e2e-auth/tls-podman:v1
    sk copy "oci:$SD/src:v1" "containers-storage:$id"
    podman login --cert-dir "$c" -u "$WHARF_E2E_AUTH_USER" -p "$WHARF_E2E_AUTH_PASS" "$TLS_HOST" >/dev/null
    podman push -q --cert-dir "$c" --digestfile "$SD/pushed" "$id" "docker://$TLS_HOST/$repo:v1"
    pushed=$(cat "$SD/pushed")
    podman rmi -a -f >/dev/null
    podman pull -q --cert-dir "$c" "$TLS_HOST/$repo:v1" >/dev/null
    expect_eq "$(podman image inspect --format '{{.Digest}}' "$TLS_HOST/$repo:v1")" "$pushed" "digest podman pulled over TLS"
    podman logout "$TLS_HOST" >/dev/null
    podman rmi -a -f >/dev/null
    if podman pull -q --cert-dir "$c" "$TLS_HOST/$repo:v1" >/dev/null 2>"$SD/anon.err"; then
        fail "podman pull over TLS without a login succeeded"
    fi
}

sc_auth_tls_wharf_client() {
    local ref=https://$TLS_HOST/team/e2e/tls-pkg:v1 ca=$TLS_CA_DIR/ca.crt
    mkdir -p "$SD/in"
    printf 'wharf client over TLS %s\n' "$RUN_ID" >"$SD/in/hello.txt"
    printf '%s\n' "$WHARF_E2E_AUTH_PASS" |
        "$WHARF_E2E_BIN" login "https://$TLS_HOST" --ca-cert "$ca" \
            --username "$WHARF_E2E_AUTH_USER" --password-stdin >/dev/null
    (cd "$SD/in" && "$WHARF_E2E_BIN" push -q --ca-cert "$ca" "$ref" hello.txt) >/dev/null
    "$WHARF_E2E_BIN" pull -q --ca-cert "$ca" "$ref" -o "$SD/out" >/dev/null
    cmp -s "$SD/in/hello.txt" "$SD/out/hello.txt" || fail "hello.txt differs after wharf pull over TLS"
    "$WHARF_E2E_BIN" logout "https://$TLS_HOST" >/dev/null
    if "$WHARF_E2E_BIN" pull -q --ca-cert "$ca" "$ref" -o "$SD/out2" >/dev/null 2>"$SD/err"; then
        fail "wharf pull over TLS without a login succeeded"
    fi
}
