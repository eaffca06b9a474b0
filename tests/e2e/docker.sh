#!/usr/bin/env bash
# End-to-end tests with the Docker daemon as the client: it logs in, pushes,
# pulls, mounts across repositories, runs and inspects images against Wharf
# servers this script starts (plain HTTP on loopback; Basic auth; the token
# service; HTTPS with a private CA, verified for real).
#
#   tests/e2e/docker.sh [WHARF_BINARY]      (default target/debug/wharf)
#
# Prints "ok - NAME" / "FAIL - NAME: reason" per scenario, then
# "docker: N passed, M failed"; exits 1 if M > 0, 2 on a setup error.
#
# Needs a running Docker daemon (docker info) and busybox-static (the one
# binary of the test image, built FROM scratch: no image is pulled from
# anywhere). The daemon treats every 127.0.0.0/8 registry as insecure
# (it skips certificate checks there), so the TLS scenario serves on ::1
# under a name added to /etc/hosts for the run, with the CA in
# /etc/docker/certs.d/<name>:<port>/; both are removed at the end.
# Docker's credentials go to a config directory of this run (DOCKER_CONFIG),
# and every image this script made is removed from the daemon at the end.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=$(realpath "${1:-${CARGO_TARGET_DIR:-$HERE/../../target}/debug/wharf}")
[[ -x $bin ]] || { echo "docker.sh: no wharf binary at $bin" >&2; exit 2; }
command -v docker >/dev/null || { echo "docker.sh: the docker CLI is missing" >&2; exit 2; }
docker info >/dev/null 2>&1 || { echo "docker.sh: no Docker daemon answers (docker info)" >&2; exit 2; }
busybox=/bin/busybox
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' && [[ -x $busybox ]] ||
    { echo "docker.sh: busybox-static missing; run tests/e2e/install.sh" >&2; exit 2; }

work=$(mktemp -d -t wharf-e2e-docker.XXXXXX)
export DOCKER_CONFIG=$work/docker-config
mkdir -p "$DOCKER_CONFIG"
run_id=wharf-e2e-$$
tls_name=$run_id.test
pids=()
hosts_line=
certs_dir=
cleanup() {
    local p ids
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    ids=$(docker images -q --filter "label=wharf-e2e=$run_id" 2>/dev/null | sort -u)
    for p in $(docker images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep -E "^(127\.0\.0\.1:[0-9]+|$tls_name:[0-9]+)/e2e/" || true); do
        docker rmi -f "$p" >/dev/null 2>&1 || true
    done
    # shellcheck disable=SC2086
    [[ -z $ids ]] || docker rmi -f $ids >/dev/null 2>&1 || true
    if [[ -n $hosts_line ]]; then
        sed -i "/ $tls_name\$/d" /etc/hosts 2>/dev/null || true
    fi
    [[ -z $certs_dir ]] || rm -rf "$certs_dir"
    docker rm -f "$run_id-registry" >/dev/null 2>&1 || true
    docker volume rm "$run_id-data" >/dev/null 2>&1 || true
    docker rmi "wharf-e2e-image:$run_id" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start NAME LISTEN [ARGS...]: a wharf on LISTEN with its own data dir; waits
# until /v2/ answers (200 or 401) over the scheme its ARGS imply, at
# $check_host when set (a name its certificate is for), else at LISTEN.
start() {
    local name=$1 listen=$2
    shift 2
    "$bin" serve --listen "$listen" --data-dir "$work/$name-data" --log-level warn "$@" \
        >"$work/$name.log" 2>&1 &
    pids+=($!)
    local url="http://${check_host:-$listen}/v2/" opts=()
    if [[ " $* " == *" --tls-cert "* ]]; then
        url="https://${check_host:-$listen}/v2/"
        opts=(--cacert "$work/tls/clients/ca.crt")
    fi
    for _ in $(seq 200); do
        [[ $(curl -s "${opts[@]}" -o /dev/null -w '%{http_code}' "$url" 2>/dev/null) =~ ^(200|401)$ ]] && return 0
        sleep 0.1
    done
    echo "docker.sh: wharf ($name) did not start:" >&2
    tail -n 20 "$work/$name.log" >&2
    exit 2
}

fail() {
    echo "$*" >"$work/reason"
    return 1
}

# The test images: busybox as the only file of a FROM scratch image, two
# variants (the second for a second platform of an index).
mkdir -p "$work/ctx"
cp "$busybox" "$work/ctx/busybox"
cat >"$work/ctx/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
ARG VARIANT=one
LABEL org.example.variant=$VARIANT
ENTRYPOINT ["/bin/busybox"]
CMD ["echo", "hello from an image pulled from wharf"]
EOF
build() { # build TAG VARIANT
    DOCKER_BUILDKIT=0 docker build -q --label "wharf-e2e=$run_id" --build-arg "VARIANT=$2" -t "$1" "$work/ctx" >/dev/null 2>"$work/build.err" ||
        { cat "$work/build.err" >&2; return 1; }
}
build "$run_id/base:one" one || exit 2
build "$run_id/base:two" two || exit 2

login() { # login HOST USER PASSWORD
    printf '%s\n' "$3" | docker login -u "$2" --password-stdin "$1" >"$work/login.out" 2>&1
}

# ---------------------------------------------------------------------------

# Push, mount on push, pull by tag and digest, run, manifest inspect.
sc_push_pull_run() {
    local h=$1 ref digest
    ref=$h/e2e/app:1.0
    docker tag "$run_id/base:one" "$ref"
    docker push "$ref" >"$work/push.out" 2>&1 || fail "docker push: $(tail -n 1 "$work/push.out")"
    digest=$(sed -n 's/.*digest: \(sha256:[0-9a-f]*\).*/\1/p' "$work/push.out")
    [[ -n $digest ]] || fail "docker push printed no digest"
    curl -fsS -o /dev/null "http://$h/v2/e2e/app/manifests/$digest" || fail "pushed manifest not served by digest"
    # The same layer pushed to another repository is mounted, not uploaded.
    docker tag "$run_id/base:one" "$h/e2e/other:1.0"
    docker push "$h/e2e/other:1.0" >"$work/mount.out" 2>&1 || fail "second push: $(tail -n 1 "$work/mount.out")"
    grep -q "Mounted from e2e/app" "$work/mount.out" || fail "no cross-repository mount: $(cat "$work/mount.out")"
    docker rmi "$ref" "$h/e2e/other:1.0" >/dev/null
    docker pull "$ref" >"$work/pull.out" 2>&1 || fail "docker pull: $(tail -n 1 "$work/pull.out")"
    grep -q "Digest: $digest" "$work/pull.out" || fail "pull digest differs from the pushed one"
    [[ $(docker run --rm "$ref") == "hello from an image pulled from wharf" ]] || fail "docker run of the pulled image"
    docker rmi "$ref" >/dev/null
    docker pull "$h/e2e/app@$digest" >"$work/pull.out" 2>&1 || fail "pull by digest: $(tail -n 1 "$work/pull.out")"
    [[ $(docker run --rm "$h/e2e/app@$digest" echo by-digest) == by-digest ]] || fail "docker run by digest"
    docker rmi "$h/e2e/app@$digest" >/dev/null
    docker manifest inspect --insecure "$ref" >"$work/inspect.json" 2>&1 || fail "manifest inspect: $(cat "$work/inspect.json")"
    [[ $(jq -r .mediaType "$work/inspect.json") == application/vnd.docker.distribution.manifest.v2+json ]] ||
        fail "manifest inspect: unexpected media type"
    # A tag that is not there: a clean "not found", not a crash.
    if docker pull "$h/e2e/app:missing" >"$work/missing.out" 2>&1; then fail "pull of a missing tag succeeded"; fi
    grep -qi "not found\|manifest unknown" "$work/missing.out" || fail "missing tag: $(cat "$work/missing.out")"
}

# Two platform images pushed, joined in an index with docker manifest, pushed;
# pulled back by the index (the daemon picks linux/amd64).
sc_multi_platform() {
    local h=$1
    local list=$h/e2e/multi:1.0
    docker tag "$run_id/base:one" "$h/e2e/multi:amd64"
    docker tag "$run_id/base:two" "$h/e2e/multi:arm64"
    docker push "$h/e2e/multi:amd64" >/dev/null 2>&1 || fail "push amd64 image"
    docker push "$h/e2e/multi:arm64" >/dev/null 2>&1 || fail "push arm64 image"
    docker manifest create --insecure "$list" "$h/e2e/multi:amd64" "$h/e2e/multi:arm64" >"$work/mc.out" 2>&1 ||
        fail "manifest create: $(cat "$work/mc.out")"
    docker manifest annotate --os linux --arch arm64 "$list" "$h/e2e/multi:arm64"
    docker manifest push --insecure --purge "$list" >"$work/mp.out" 2>&1 || fail "manifest push: $(cat "$work/mp.out")"
    docker manifest inspect --insecure "$list" >"$work/index.json" 2>&1 || fail "inspect index: $(cat "$work/index.json")"
    [[ $(jq -r '.manifests | length' "$work/index.json") == 2 ]] || fail "the index has not two manifests"
    [[ $(jq -r '[.manifests[].platform.architecture] | sort | join(",")' "$work/index.json") == amd64,arm64 ]] ||
        fail "platforms: $(jq -c '[.manifests[].platform]' "$work/index.json")"
    local amd_digest
    amd_digest=$(jq -r '.manifests[] | select(.platform.architecture == "amd64") | .digest' "$work/index.json")
    docker rmi "$h/e2e/multi:amd64" "$h/e2e/multi:arm64" >/dev/null
    docker pull "$list" >"$work/pull.out" 2>&1 || fail "pull of the index: $(tail -n 1 "$work/pull.out")"
    [[ $(docker inspect -f '{{index .Config.Labels "org.example.variant"}}' "$list") == one ]] ||
        fail "the pulled image is not the linux/amd64 one"
    [[ $(docker inspect -f '{{join .RepoDigests ","}}' "$list") == *"$h/e2e/multi@sha256:"* ]] || fail "no repo digest"
    curl -fsS -o /dev/null "http://$h/v2/e2e/multi/manifests/$amd_digest" || fail "child manifest not served"
    docker rmi "$list" >/dev/null
}

# Basic auth (htpasswd): login, push, pull; a wrong password is refused.
sc_basic_auth() {
    local h=$1
    if login "$h" alice wrong-password; then fail "login with a wrong password succeeded"; fi
    grep -qi "unauthorized\|incorrect" "$work/login.out" || fail "wrong password: $(cat "$work/login.out")"
    login "$h" alice "$alice_pass" || fail "docker login: $(cat "$work/login.out")"
    docker tag "$run_id/base:one" "$h/e2e/basic:1"
    docker push "$h/e2e/basic:1" >"$work/push.out" 2>&1 || fail "push: $(tail -n 1 "$work/push.out")"
    docker rmi "$h/e2e/basic:1" >/dev/null
    docker pull "$h/e2e/basic:1" >"$work/pull.out" 2>&1 || fail "pull: $(tail -n 1 "$work/pull.out")"
    docker rmi "$h/e2e/basic:1" >/dev/null
    docker logout "$h" >/dev/null
    if docker pull "$h/e2e/basic:1" >"$work/anon.out" 2>&1; then fail "anonymous pull succeeded"; fi
    return 0
}

# The token service: login, push, cross-repository mount, pull; a user the
# policy does not let push is denied.
sc_token_auth() {
    local h=$1
    login "$h" alice "$alice_pass" || fail "docker login: $(cat "$work/login.out")"
    docker tag "$run_id/base:one" "$h/e2e/tok:1"
    docker push "$h/e2e/tok:1" >"$work/push.out" 2>&1 || fail "push: $(tail -n 1 "$work/push.out")"
    docker tag "$run_id/base:one" "$h/e2e/tok2:1"
    docker push "$h/e2e/tok2:1" >"$work/mount.out" 2>&1 || fail "second push: $(tail -n 1 "$work/mount.out")"
    grep -q "Mounted from e2e/tok" "$work/mount.out" || fail "no cross-repository mount with tokens: $(cat "$work/mount.out")"
    docker rmi "$h/e2e/tok:1" "$h/e2e/tok2:1" >/dev/null
    docker pull "$h/e2e/tok:1" >"$work/pull.out" 2>&1 || fail "pull: $(tail -n 1 "$work/pull.out")"
    docker rmi "$h/e2e/tok:1" >/dev/null
    login "$h" bob "$bob_pass" || fail "docker login (bob): $(cat "$work/login.out")"
    docker tag "$run_id/base:one" "$h/e2e/tok:bob"
    if docker push "$h/e2e/tok:bob" >"$work/denied.out" 2>&1; then fail "a push without permission succeeded"; fi
    grep -qi "denied\|unauthorized\|insufficient_scope" "$work/denied.out" || fail "refusal: $(tail -n 1 "$work/denied.out")"
    docker rmi "$h/e2e/tok:bob" >/dev/null
    docker logout "$h" >/dev/null
}

# HTTPS with a private CA the daemon verifies: refused without the CA, then
# token login, push and pull with it.
sc_tls() {
    local h=$1
    docker tag "$run_id/base:one" "$h/e2e/tls:1"
    if login "$h" alice "$alice_pass"; then fail "login succeeded without the CA"; fi
    grep -qi "x509\|certificate" "$work/login.out" || fail "without the CA: $(cat "$work/login.out")"
    mkdir -p "/etc/docker/certs.d/$h"
    cp "$work/tls/clients/ca.crt" "/etc/docker/certs.d/$h/ca.crt"
    login "$h" alice "$alice_pass" || fail "docker login over TLS: $(cat "$work/login.out")"
    docker push "$h/e2e/tls:1" >"$work/push.out" 2>&1 || fail "push over TLS: $(tail -n 1 "$work/push.out")"
    docker rmi "$h/e2e/tls:1" >/dev/null
    docker pull "$h/e2e/tls:1" >"$work/pull.out" 2>&1 || fail "pull over TLS: $(tail -n 1 "$work/pull.out")"
    [[ $(docker run --rm "$h/e2e/tls:1" echo tls) == tls ]] || fail "run after a pull over TLS"
    docker rmi "$h/e2e/tls:1" >/dev/null
    docker logout "$h" >/dev/null
}

# Wharf's own image (dist/Dockerfile, built by dist/build-image.sh): it runs
# as a non-root user, turns healthy, and the Docker daemon pushes to and
# pulls from the registry in the container; the data survives a restart.
sc_wharf_image() {
    local image=wharf-e2e-image:$run_id name=$run_id-registry port h
    WHARF_IMAGE_PROFILE=${WHARF_IMAGE_PROFILE:-release} bash "$HERE/../../dist/build-image.sh" "$image" \
        >"$work/image-build.out" 2>&1 || fail "build-image.sh: $(tail -n 3 "$work/image-build.out")"
    [[ $(docker inspect -f '{{.Config.User}}' "$image") == 65532:65532 ]] || fail "the image does not run as 65532"
    local size
    size=$(docker inspect -f '{{.Size}}' "$image")
    ((size < 40 * 1024 * 1024)) || fail "the image is $size bytes"
    # The CA bundle a pull-through cache needs to verify an HTTPS upstream.
    local probe
    probe=$(docker create "$image") || fail "docker create of the image"
    docker export "$probe" | tar -tf - >"$work/image-files.txt" || true
    docker rm "$probe" >/dev/null 2>&1 || true
    grep -qx 'etc/ssl/certs/ca-certificates.crt' "$work/image-files.txt" || fail "the image has no CA bundle"
    port=$(free_port)
    docker run -d --name "$name" -p "127.0.0.1:$port:5000" -v "$run_id-data:/data" "$image" >/dev/null ||
        fail "docker run of the image"
    local status=
    for _ in $(seq 240); do
        status=$(docker inspect -f '{{.State.Health.Status}}' "$name")
        [[ $status == healthy ]] && break
        sleep 0.5
    done
    [[ $status == healthy ]] || fail "the container is $status: $(docker logs "$name" 2>&1 | tail -n 3)"
    h=127.0.0.1:$port
    docker tag "$run_id/base:one" "$h/e2e/in-image:1"
    docker push "$h/e2e/in-image:1" >"$work/push.out" 2>&1 || fail "push into the container: $(tail -n 1 "$work/push.out")"
    docker rmi "$h/e2e/in-image:1" >/dev/null
    docker restart "$name" >/dev/null
    for _ in $(seq 240); do
        [[ $(docker inspect -f '{{.State.Health.Status}}' "$name") == healthy ]] && break
        sleep 0.5
    done
    docker pull "$h/e2e/in-image:1" >"$work/pull.out" 2>&1 || fail "pull after a restart: $(tail -n 1 "$work/pull.out")"
    [[ $(docker run --rm "$h/e2e/in-image:1" echo from-the-image) == from-the-image ]] || fail "run of the pulled image"
    docker rmi "$h/e2e/in-image:1" >/dev/null
    # Logs are JSON lines (WHARF_LOG_FORMAT=json in the image), one per request.
    docker logs "$name" >"$work/image.log" 2>&1
    grep '"target":"wharf::access"' "$work/image.log" | grep -c '"status":201' >/dev/null ||
        fail "no JSON access log line of the push: $(tail -n 2 "$work/image.log")"
}

# ---------------------------------------------------------------------------

rand() { head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
alice_pass=$(rand) bob_pass=$(rand)
{
    printf '%s\n' "$alice_pass" | "$bin" passwd alice
    printf '%s\n' "$bob_pass" | "$bin" passwd bob
} >"$work/htpasswd"
cat >"$work/auth.toml" <<TOML
[auth]
htpasswd = "$work/htpasswd"
[[auth.policy]]
repos = ["e2e/**"]
pull = ["user:alice", "user:bob"]
push = ["user:alice"]
TOML
cat >"$work/token.toml" <<TOML
[auth]
htpasswd = "$work/htpasswd"
[auth.token]
enabled = true
[[auth.policy]]
repos = ["e2e/**"]
pull = ["user:alice", "user:bob"]
push = ["user:alice"]
TOML

plain=127.0.0.1:$(free_port)
start plain "$plain"
basic=127.0.0.1:$(free_port)
start basic "$basic" --config "$work/auth.toml"
token=127.0.0.1:$(free_port)
start token "$token" --config "$work/token.toml"
# TLS: a name of this run for ::1 (not loopback to the daemon's insecure
# list, which is 127.0.0.0/8), a certificate for it signed by a CA made here.
bash "$HERE/helpers/make-ca.sh" "$work/tls"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$tls_name" \
    -keyout "$work/tls/named.key" -out "$work/tls/named.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$tls_name" >"$work/tls/named.cnf"
openssl x509 -req -in "$work/tls/named.csr" -CA "$work/tls/clients/ca.crt" -CAkey "$work/tls/ca.key" \
    -CAserial "$work/tls/ca.srl" -days 2 -extfile "$work/tls/named.cnf" -out "$work/tls/named.crt" 2>/dev/null
hosts_line="::1 $tls_name"
echo "$hosts_line" >>/etc/hosts
tls_port=$(free_port)
certs_dir=/etc/docker/certs.d/$tls_name:$tls_port  # written by sc_tls, removed by cleanup
check_host=$tls_name:$tls_port start tls "[::1]:$tls_port" --config "$work/token.toml" --tls-cert "$work/tls/named.crt" --tls-key "$work/tls/named.key"

passed=0 failed=0
run() { # run NAME FUNCTION HOST
    rm -f "$work/reason"
    # In its own (background) subshell so that errexit applies inside it.
    (set -e; "$2" "$3") >"$work/$1.log" 2>&1 &
    if wait $!; then
        echo "ok - $1"
        passed=$((passed + 1))
    else
        echo "FAIL - $1: $(cat "$work/reason" 2>/dev/null || tail -n 1 "$work/$1.log")"
        tail -n 15 "$work/$1.log" | sed 's/^/#   /' >&2
        failed=$((failed + 1))
    fi
}
set +e
run docker-push-pull-run sc_push_pull_run "$plain"
run docker-multi-platform sc_multi_platform "$plain"
run docker-basic-auth sc_basic_auth "$basic"
run docker-token-auth sc_token_auth "$token"
run docker-tls sc_tls "$tls_name:$tls_port"
run docker-wharf-image sc_wharf_image -
set -e
if ((failed)); then
    for n in plain basic token tls; do
        echo "--- wharf ($n) log (tail) ---" >&2
        tail -n 10 "$work/$n.log" >&2
    done
fi
echo "docker: $passed passed, $failed failed"
((failed == 0))
