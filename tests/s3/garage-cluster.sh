#!/usr/bin/env bash
# A three-node Garage cluster on loopback (replication factor 3), for tests
# of Wharf's S3 backend against a real distributed object store.
#
#   tests/s3/garage-cluster.sh start DIR   start the nodes, apply a layout, make
#                                          a bucket and a key; print the settings
#                                          (shell assignments, also in DIR/env)
#   tests/s3/garage-cluster.sh stop DIR    stop the nodes this script started
#                                          (by the PIDs it recorded), nothing else
#   tests/s3/garage-cluster.sh kill DIR N  kill -9 node N (1-3), for fault tests
#   tests/s3/garage-cluster.sh restart DIR N   start node N again
#
# The garage binary: $GARAGE_BIN, else `garage` on the PATH, else
# $HOME/.cache/wharf-garage/<version>/bin/garage (where .ci/run caches the
# `cargo install --locked garage` build, which takes 15-45 minutes on two
# cores). Printed settings:
#   WHARF_S3_ENDPOINT=http://127.0.0.1:PORT   node 1's S3 API (WHARF_S3_ENDPOINTS: all three)
#   WHARF_S3_REGION=garage  WHARF_S3_BUCKET=wharf
#   AWS_ACCESS_KEY_ID=GK...  AWS_SECRET_ACCESS_KEY=...
set -euo pipefail
GARAGE_VERSION=2.5.0

usage() {
    echo "usage: $0 start|stop DIR | kill|restart DIR N" >&2
    exit 2
}
cmd=${1:-}
dir=${2:-}
[[ -n $cmd && -n $dir ]] || usage

[[ -d $dir || $cmd == start ]] || { echo "garage-cluster.sh: no cluster in $dir" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
garage=${GARAGE_BIN:-$(command -v garage || echo "$HOME/.cache/wharf-garage/$GARAGE_VERSION/bin/garage")}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# g N ARGS...: the garage CLI as node N's admin.
g() {
    local n=$1
    shift
    "$garage" -c "$dir/node$n/garage.toml" "$@"
}

start_node() {
    local n=$1
    # garage itself in the background (not through g, a function: $! would
    # be a subshell's PID, and stop would not find the server).
    "$garage" -c "$dir/node$n/garage.toml" server >>"$dir/node$n/log" 2>&1 &
    echo $! >"$dir/node$n/pid"
}

stop_node() {
    local n=$1 sig=${2:-TERM} pid
    pid=$(cat "$dir/node$n/pid" 2>/dev/null) || return 0
    # Only a process that is still this node's garage server.
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$dir/node$n/garage.toml"; then
        kill "-$sig" "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$dir/node$n/pid"
}

case $cmd in
start)
    [[ -x $garage ]] || {
        echo "garage-cluster.sh: no garage binary (GARAGE_BIN, PATH, or $HOME/.cache/wharf-garage/$GARAGE_VERSION/bin/garage)" >&2
        exit 2
    }
    if [[ -e $dir/node1/pid ]]; then
        echo "garage-cluster.sh: $dir already has a cluster; stop it first" >&2
        exit 2
    fi
    secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    endpoints=()
    for n in 1 2 3; do
        mkdir -p "$dir/node$n/meta" "$dir/node$n/data"
        rpc=$(free_port) s3=$(free_port) admin=$(free_port)
        endpoints+=("http://127.0.0.1:$s3")
        # rpc_timeout_msec is lowered so that a node that was away catches
        # up on missing blocks in seconds, not the default 2 x 30 s x ...
        cat >"$dir/node$n/garage.toml" <<TOML
metadata_dir = "$dir/node$n/meta"
data_dir = "$dir/node$n/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"
rpc_timeout_msec = 10000

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
TOML
        chmod 600 "$dir/node$n/garage.toml"
        start_node "$n"
    done
    # Wait for each node's RPC, then connect them.
    ids=()
    for n in 1 2 3; do
        id=
        for _ in $(seq 300); do
            id=$(g "$n" node id -q 2>/dev/null) && [[ -n $id ]] && break
            id=
            sleep 0.1
        done
        [[ -n $id ]] || {
            echo "garage-cluster.sh: node $n did not start:" >&2
            tail -n 20 "$dir/node$n/log" >&2
            exit 1
        }
        ids+=("$id")
    done
    for n in 2 3; do
        g 1 node connect "${ids[n - 1]}" >/dev/null
    done
    for n in 1 2 3; do
        g 1 layout assign -z dc1 -c 1G "${ids[n - 1]%%@*}" >/dev/null
    done
    g 1 layout apply --version 1 >/dev/null
    # The cluster serves once every node has the layout.
    for _ in $(seq 300); do
        if g 1 status 2>/dev/null | grep -q 'HEALTHY\|healthy' ||
            [[ $(g 1 status 2>/dev/null | grep -c '127.0.0.1') -ge 3 ]]; then
            break
        fi
        sleep 0.1
    done
    g 1 bucket create wharf >/dev/null
    key=$(g 1 key create wharf-key)
    key_id=$(sed -n 's/^Key ID: *//p' <<<"$key" | head -n 1)
    key_secret=$(sed -n 's/^Secret key: *//p' <<<"$key" | head -n 1)
    [[ -n $key_id && -n $key_secret ]] || {
        echo "garage-cluster.sh: cannot read the key garage made:" >&2
        echo "$key" >&2
        exit 1
    }
    g 1 bucket allow --read --write --owner wharf --key wharf-key >/dev/null
    {
        echo "WHARF_S3_ENDPOINT=${endpoints[0]}"
        echo "WHARF_S3_ENDPOINTS=\"${endpoints[*]}\""
        echo "WHARF_S3_REGION=garage"
        echo "WHARF_S3_BUCKET=wharf"
        echo "AWS_ACCESS_KEY_ID=$key_id"
        echo "AWS_SECRET_ACCESS_KEY=$key_secret"
    } >"$dir/env"
    chmod 600 "$dir/env"
    cat "$dir/env"
    ;;
stop)
    for n in 1 2 3; do stop_node "$n"; done
    ;;
kill)
    n=${3:-}
    [[ $n =~ ^[123]$ ]] || usage
    stop_node "$n" KILL
    ;;
restart)
    n=${3:-}
    [[ $n =~ ^[123]$ ]] || usage
    [[ -e $dir/node$n/pid ]] && stop_node "$n"
    start_node "$n"
    for _ in $(seq 300); do
        g "$n" node id -q >/dev/null 2>&1 && break
        sleep 0.1
    done
    ;;
*)
    usage
    ;;
esac
