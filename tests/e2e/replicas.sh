#!/usr/bin/env bash
# Three Wharf replicas over one bucket of a three-node Garage cluster, used
# by real clients through a round-robin proxy (every request to the next
# replica), and faults: a Garage node killed, a replica killed in the
# middle of an upload, the whole cluster stopped and started again.
#
#   tests/e2e/replicas.sh WHARF_BIN GARAGE_CLUSTER_DIR
#
# GARAGE_CLUSTER_DIR is a running cluster of tests/s3/garage-cluster.sh
# (its env file gives the endpoint and key). This script stops and starts
# its nodes; it leaves the cluster running when it ends.
#
# Prints "ok - NAME" / "FAIL - NAME: why" per scenario, then exactly
# "replicas: N passed, M failed"; exits 1 if M > 0, 2 on a setup error.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

bin=$(realpath "${1:?usage: replicas.sh WHARF_BIN GARAGE_CLUSTER_DIR}")
cluster=$(realpath "${2:?usage: replicas.sh WHARF_BIN GARAGE_CLUSTER_DIR}")
[[ -r $cluster/env ]] || { echo "replicas.sh: no cluster env in $cluster" >&2; exit 2; }
venv=${WHARF_E2E_VENV:-$HOME/.cache/wharf-e2e-venv}
# shellcheck disable=SC1091
source "$cluster/env"

work=$(mktemp -d)
prefix=replicas-$$-$RANDOM
pids=()
proxy_pid=
cleanup() {
    local p
    for p in "${pids[@]}" $proxy_pid; do
        [[ -n $p ]] || continue
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    [[ -n ${WHARF_E2E_KEEP:-} ]] && echo "replicas.sh: kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

ports=()
# start_replica I: (re)start replica I on its port, wait until it answers.
start_replica() {
    local i=$1
    [[ -n ${ports[i]:-} ]] || ports[i]=$(free_port)
    WHARF_S3_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID WHARF_S3_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
        "$bin" serve --listen "127.0.0.1:${ports[i]}" --data-dir "$work/replica$i" \
        --storage s3 --s3-endpoint "$WHARF_S3_ENDPOINT" --s3-region "$WHARF_S3_REGION" \
        --s3-bucket "$WHARF_S3_BUCKET" --s3-prefix "$prefix" --log-level info \
        >>"$work/replica$i.log" 2>&1 &
    pids[i]=$!
    for _ in $(seq 300); do
        curl -fsS "http://127.0.0.1:${ports[i]}/readyz" >/dev/null 2>&1 && return 0
        kill -0 "${pids[i]}" 2>/dev/null || break
        sleep 0.1
    done
    echo "replicas.sh: replica $i did not start:" >&2
    tail -n 20 "$work/replica$i.log" >&2
    exit 2
}

for i in 0 1 2; do start_replica "$i"; done
proxy_port=$(free_port)
"$venv/bin/python" "$HERE/helpers/rr_proxy.py" "$proxy_port" "$work/proxy.log" \
    "http://127.0.0.1:${ports[0]}" "http://127.0.0.1:${ports[1]}" "http://127.0.0.1:${ports[2]}" \
    >"$work/proxy.out" 2>&1 &
proxy_pid=$!
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$proxy_port/v2/" >/dev/null 2>&1 && break
    sleep 0.1
done
proxy=127.0.0.1:$proxy_port

passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
bad() {
    echo "FAIL - $1: $2"
    failed=$((failed + 1))
}

# sha256 of a URL's body, or "" on an HTTP error.
url_sha() { curl -fsS "$1" | sha256sum | cut -d' ' -f1; }

# 1. The whole client suite (skopeo, buildah, podman, oras-py, drca, curl)
# through the proxy. TLS scenarios are skipped (no TLS replica here).
e2e_status=0
env -u WHARF_E2E_TLS_HOST -u WHARF_E2E_TLS_CA_DIR bash "$HERE/run.sh" "$proxy" >"$work/e2e.log" 2>&1 || e2e_status=$?
read -r p f < <(sed -n 's/^e2e: \([0-9]*\) passed, \([0-9]*\) failed.*/\1 \2/p' "$work/e2e.log" | tail -n 1)
sed -n 's/^\(ok\|FAIL\|skip\) - /replicas e2e: &/p' "$work/e2e.log"
passed=$((passed + ${p:-0}))
failed=$((failed + ${f:-0}))
if [[ $e2e_status != 0 && ${f:-0} == 0 ]]; then
    bad e2e-through-proxy "tests/e2e/run.sh stopped (exit $e2e_status)"
    tail -n 20 "$work/e2e.log"
fi

# 2. Requests really were spread: every replica served some, and upload
# sessions had their requests answered by more than one replica.
read -r used crossed < <(awk '
    { seen[$1] = 1 }
    $3 ~ /\/blobs\/uploads\/[^\/?]+/ {
        id = $3; sub(/.*\/blobs\/uploads\//, "", id); sub(/\?.*/, "", id)
        if (id != "" && !((id, $1) in pair)) { pair[id, $1] = 1; n[id]++ }
    }
    END { c = 0; for (id in n) if (n[id] > 1) c++; print length(seen), c }' "$work/proxy.log")
if [[ $used == 3 && $crossed -gt 0 ]]; then
    ok "spread: 3 replicas served requests; $crossed upload sessions crossed replicas"
else
    bad spread "replicas used: $used, upload sessions across replicas: $crossed"
fi

# 3. The wharf client through the proxy, read back from one replica.
mkdir -p "$work/pkg/in/dir" "$work/pkg/xdg"
printf 'replicated package %s\n' "$prefix" >"$work/pkg/in/dir/a.txt"
head -c $((20 << 20)) /dev/urandom >"$work/pkg/in/big.bin"
if (
    export XDG_CACHE_HOME=$work/pkg/xdg XDG_RUNTIME_DIR=$work/pkg/xdg
    cd "$work/pkg/in"
    "$bin" push -q "http://$proxy/replicas/pkg:1" dir big.bin >/dev/null
    "$bin" pull -q "http://127.0.0.1:${ports[2]}/replicas/pkg:1" -o "$work/pkg/out" >/dev/null
    cmp -s dir/a.txt "$work/pkg/out/dir/a.txt" && cmp -s big.bin "$work/pkg/out/big.bin"
) >"$work/pkg.log" 2>&1; then
    ok "wharf-client: push through the proxy, pull from one replica"
else
    bad wharf-client "$(tail -n 3 "$work/pkg.log")"
fi

# Wait (up to two minutes) until a blob push through replica 1 succeeds:
# after nodes come back, Garage takes a moment before it has a quorum.
wait_writable() {
    local i
    for i in $(seq 600); do
        printf 'probe %s %s' "$prefix" "$i" >"$work/probe"
        local d=sha256:$(sha256sum "$work/probe" | cut -d' ' -f1)
        if [[ $(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary "@$work/probe" \
            "http://127.0.0.1:${ports[1]}/v2/replicas/probe/blobs/uploads/?digest=$d") == 201 ]]; then
            return 0
        fi
        sleep 0.2
    done
    echo "replicas.sh: the cluster takes no writes 2 minutes after its nodes came back" >&2
}

# push_file REPO TAG FILE VIA: a one-layer artifact with curl, monolithic.
push_file() {
    local repo=$1 tag=$2 file=$3 via=$4 d cfg loc
    d=sha256:$(sha256sum "$file" | cut -d' ' -f1)
    loc=$(curl -fsS -X POST -o /dev/null -w '%header{location}' "http://$via/v2/$repo/blobs/uploads/")
    [[ $loc == http* ]] || loc=http://$via$loc
    curl -fsS -X PUT -H 'Expect:' -H 'Content-Type: application/octet-stream' -T "$file" \
        "$loc$([[ $loc == *\?* ]] && echo '&' || echo '?')digest=$d" -o /dev/null
    curl -fsS -X POST "http://$via/v2/$repo/blobs/uploads/?digest=sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a" \
        -H 'Content-Type: application/octet-stream' --data-binary '{}' -o /dev/null
    cfg='{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}'
    curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"artifactType\":\"application/x.test\",\"config\":$cfg,\"layers\":[{\"mediaType\":\"application/octet-stream\",\"digest\":\"$d\",\"size\":$(stat -c %s "$file")}]}" \
        "http://$via/v2/$repo/manifests/$tag" -o /dev/null
    echo "$d"
}

# 4. A Garage node killed (kill -9) in the middle of a push, and another in
# the middle of a pull: quorum (2 of 3) carries both, nothing is lost.
head -c $((96 << 20)) /dev/urandom >"$work/node-down.bin"
if (
    set -e
    push_file replicas/node-down v1 "$work/node-down.bin" "$proxy" >"$work/node-down.digest" &
    push=$!
    sleep 0.5
    bash "$ROOT/tests/s3/garage-cluster.sh" kill "$cluster" 3
    wait "$push"
    d=$(cat "$work/node-down.digest")
    bash "$ROOT/tests/s3/garage-cluster.sh" restart "$cluster" 3
    # Node 3 must be a full member again before node 2 goes.
    wait_writable
    curl -fsS "http://$proxy/v2/replicas/node-down/blobs/$d" -o "$work/node-down.out" &
    pull=$!
    sleep 0.3
    bash "$ROOT/tests/s3/garage-cluster.sh" kill "$cluster" 2
    wait "$pull"
    cmp "$work/node-down.bin" "$work/node-down.out"
    [[ $(url_sha "http://$proxy/v2/replicas/pkg/manifests/1") != "" ]]
) >"$work/node-down.log" 2>&1; then
    ok "garage-node-down: a node killed during a push, another during a pull"
else
    bad garage-node-down "$(tail -n 3 "$work/node-down.log")"
fi
# Bring back what the scenario left down (a node already back is left
# alone: restarting it now would take a second node away at once), then
# wait until the cluster takes writes again.
for n in 2 3; do
    [[ -e $cluster/node$n/pid ]] || bash "$ROOT/tests/s3/garage-cluster.sh" restart "$cluster" "$n"
done
wait_writable

# 5. A replica killed (kill -9) in the middle of a chunked upload: another
# replica continues the session from the state in the bucket.
head -c $((9 << 20)) /dev/urandom >"$work/mid.1"
head -c 777777 /dev/urandom >"$work/mid.2"
cat "$work/mid.1" "$work/mid.2" >"$work/mid.all"
mid_d=sha256:$(sha256sum "$work/mid.all" | cut -d' ' -f1)
if (
    set -e
    a=http://127.0.0.1:${ports[0]} b=http://127.0.0.1:${ports[1]}
    loc=$(curl -fsS -X POST -o /dev/null -w '%header{location}' "$a/v2/replicas/mid/blobs/uploads/")
    path=${loc#http://*/}
    path=/${path#/}
    loc=$(curl -fsS -X PATCH -H 'Content-Type: application/octet-stream' -H "Content-Range: 0-$(((9 << 20) - 1))" \
        --data-binary "@$work/mid.1" -o /dev/null -w '%header{location}' "$a$path")
    path=${loc#http://*/}
    path=/${path#/}
    kill -9 "${pids[0]}"
    wait "${pids[0]}" 2>/dev/null || true
    range=$(curl -fsS -o /dev/null -w '%header{range}' "$b$path")
    [[ $range == "0-$(((9 << 20) - 1))" ]] || { echo "range on the other replica: $range"; exit 1; }
    curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$work/mid.2" \
        "$b$path$([[ $path == *\?* ]] && echo '&' || echo '?')digest=$mid_d" -o /dev/null
    [[ $(url_sha "http://127.0.0.1:${ports[2]}/v2/replicas/mid/blobs/$mid_d") == "${mid_d#sha256:}" ]]
) >"$work/mid.log" 2>&1; then
    ok "replica-killed-mid-upload: another replica finished the session"
else
    bad replica-killed-mid-upload "$(tail -n 3 "$work/mid.log")"
fi
start_replica 0

# 6. The whole cluster stopped: 503 with a clear reason (not a hang, not a
# 500), /readyz says unavailable; started again, everything is back.
bash "$ROOT/tests/s3/garage-cluster.sh" stop "$cluster"
body=$(curl -sS --max-time 120 -w ' %{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://127.0.0.1:${ports[1]}/v2/replicas/node-down/manifests/v1" 2>&1 || true)
ready=$(curl -sS --max-time 120 -o /dev/null -w '%{http_code}' "http://127.0.0.1:${ports[2]}/readyz" || true)
for n in 1 2 3; do bash "$ROOT/tests/s3/garage-cluster.sh" restart "$cluster" "$n"; done
if [[ $body == *'"storage unavailable"'*' 503' && $ready == 503 ]]; then
    ok "storage-down: 503 storage unavailable, /readyz 503"
else
    bad storage-down "manifest GET answered: $body; /readyz: $ready"
fi
back=
for _ in $(seq 600); do
    if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${ports[1]}/readyz") == 200 ]] &&
        [[ $(url_sha "http://$proxy/v2/replicas/mid/blobs/$mid_d" 2>/dev/null) == "${mid_d#sha256:}" ]]; then
        back=1
        break
    fi
    sleep 0.2
done
if [[ -n $back ]]; then
    ok "storage-back: ready again and the content is intact"
else
    bad storage-back "not ready 120 s after the cluster restarted"
fi

if ((failed > 0)); then
    for i in 0 1 2; do
        echo "--- replica $i log (tail) ---"
        tail -n 15 "$work/replica$i.log"
    done
fi
echo "replicas: $passed passed, $failed failed"
((failed == 0))
