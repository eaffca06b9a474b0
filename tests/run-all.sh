#!/usr/bin/env bash
# Every Wharf test: unit and HTTP integration tests (cargo test), then the
# end-to-end suite, which drives real clients (skopeo, buildah, podman,
# oras-py) against a freshly started `wharf serve`, the authentication
# scenarios (tests/e2e/auth.sh, a second server with the token flow on),
# `serve --from` (tests/e2e/serve-from.sh), the Docker daemon as a client
# (tests/e2e/docker.sh; needs a running daemon), and the S3 backend: the
# HTTP integration suite again on a three-node Garage cluster (tests/s3;
# Garage is built once into ~/.cache by tests/s3/install-garage.sh), and
# three replicas over it (tests/e2e/replicas.sh).
#
#   bash tests/run-all.sh
#
# The end-to-end clients come from tests/e2e/install.sh (run as root; this
# script runs it when they are missing). The last line is the total:
# "all: N passed, M failed". Exit status is non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${WHARF_E2E_VENV:-$HOME/.cache/wharf-e2e-venv}
if ! command -v skopeo >/dev/null || ! command -v buildah >/dev/null || ! command -v htpasswd >/dev/null || ! [[ -x /bin/busybox ]] || ! command -v systemd-analyze >/dev/null ||
    ! [[ -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import docker_registry_client_async' 2>/dev/null; then
    if [[ $(id -u) == 0 ]]; then
        bash tests/e2e/install.sh
    else
        echo "the end-to-end clients are missing: run 'sudo bash tests/e2e/install.sh' first" >&2
        exit 2
    fi
fi

work=$(mktemp -d)
server_pid=
tls_pid=
cleanup() {
    local p
    [[ -d $work/garage ]] && bash tests/s3/garage-cluster.sh stop "$work/garage" || true
    for p in $server_pid $tls_pid; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# 1. Unit and integration tests. Every test binary runs even when an
# earlier one fails (--no-fail-fast), and the tests each binary lists are
# the ones expected: a binary that crashes, hangs past its limit or never
# starts leaves its tests "not run", and they are counted, never dropped.
#
# cargo_pass NAME CARGO-ARGS... -- TEST-ARGS...: one counted `cargo test`
# run; adds to the cargo_* totals.
cargo_passed=0 cargo_failed=0 cargo_skipped=0 cargo_not_run=0
cargo_pass() {
    local name=$1 list_status=0 expected passed failed skipped unfinished not_run
    shift
    cargo test --no-fail-fast -q "$@" --list --format terse > "$work/$name-list.txt" 2>"$work/$name-list.err" || list_status=$?
    expected=$(grep -c ': test$' "$work/$name-list.txt" || true)
    if ((list_status != 0)); then
        echo "FAIL $name: some test binaries could not list their tests"
        grep -v '^ *$' "$work/$name-list.err" | tail -n 20
        cargo_failed=$((cargo_failed + 1))
    fi
    timeout -k 30 "${WHARF_CARGO_TEST_TIMEOUT:-3600}" \
        cargo test --no-fail-fast "$@" 2>&1 | tee "$work/$name.log" || true
    # Per binary: "Running <target>" or "Doc-tests <crate>" opens it, "test
    # result:" closes it; a binary left open did not finish.
    read -r passed failed skipped unfinished < <(awk '
        /^ *(Running|Doc-tests) / {
            if (open_bin != "") bad = bad open_bin ","
            sub(/^ *(Running|Doc-tests) /, ""); sub(/ \(.*/, ""); open_bin = $0; next
        }
        /^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i+1) ~ /^passed/) p += $i
                if ($(i+1) ~ /^failed/) f += $i
                if ($(i+1) ~ /^ignored/) s += $i
            }
            open_bin = ""
            next
        }
        END { if (open_bin != "") bad = bad open_bin ","; print p + 0, f + 0, s + 0, (bad == "" ? "-" : bad) }' "$work/$name.log")
    not_run=$((expected - passed - failed - skipped))
    ((not_run >= 0)) || not_run=0
    if ((expected == 0)); then
        echo "FAIL $name: no tests were listed"
        cat "$work/$name-list.err"
        cargo_failed=$((cargo_failed + 1))
    fi
    if ((not_run > 0)); then
        echo "FAIL $name: $not_run of $expected tests did not run (unfinished: ${unfinished%,})"
    fi
    echo "$name: $passed passed, $failed failed, $skipped ignored, $not_run not run"
    cargo_passed=$((cargo_passed + passed)) cargo_failed=$((cargo_failed + failed))
    cargo_skipped=$((cargo_skipped + skipped)) cargo_not_run=$((cargo_not_run + not_run))
}

if cargo test --workspace --no-run 2>&1 | tee "$work/cargo-build.log"; then
    cargo_pass cargo-fs --workspace --
else
    echo "FAIL cargo test: the tests did not build; none of them ran"
    cargo_failed=1
fi

# 1b. The HTTP integration suite again, from the same test code, with every
# server on the S3 backend over a three-node Garage cluster (tests/s3),
# plus the replica tests (ignored in the filesystem run). Tests of the
# filesystem itself are skipped by name here; the list is printed. (The
# crash, restart and full-disk binaries are about the data directory and
# are not in the S3 run.)
s3_suites=(blobs uploads manifests listing errors auth hardening health client_protocol client_wharf client_cp client_interop shutdown replicas store_copy immutable gc gc_crash retention mirror quota metrics events ui)
s3_fs_only=(
    # they make the storage unusable by moving the data directory away
    health::probes_answer_and_readyz_follows_the_storage
    health::healthcheck_command_uses_readyz
)
garage_dir=$work/garage
if garage=$(bash tests/s3/install-garage.sh) &&
    GARAGE_BIN=$garage bash tests/s3/garage-cluster.sh start "$garage_dir" > "$work/garage.log" 2>&1; then
    skip_args=()
    for t in "${s3_fs_only[@]}"; do skip_args+=(--skip "${t#*::}"); done
    echo "cargo-s3: skipped as filesystem-only: ${s3_fs_only[*]}"
    suite_args=()
    for t in "${s3_suites[@]}"; do suite_args+=(--test "$t"); done
    WHARF_TEST_S3_ENV=$garage_dir/env cargo_pass cargo-s3 -p wharf "${suite_args[@]}" -- --include-ignored "${skip_args[@]}"
else
    echo "FAIL cargo-s3: could not build or start the Garage cluster; the S3 suite did not run"
    cat "$work/garage.log" 2>/dev/null | tail -n 20
    cargo_failed=$((cargo_failed + 1))
fi

# e2e_script NAME LABEL SCRIPT ARGS...: run an end-to-end script whose
# last line is "LABEL: N passed, M failed"; add to the e2e totals. A script
# that stops before printing its total counts as one failure.
e2e_passed=0 e2e_failed=0
e2e_script() {
    local name=$1 label=$2 status=0 p f
    shift 2
    bash "$@" 2>&1 | tee "$work/$name.log" || status=$?
    read -r p f < <(sed -n "s/^$label: \([0-9]*\) passed, \([0-9]*\) failed.*/\1 \2/p" "$work/$name.log" | tail -n 1)
    p=${p:-0} f=${f:-0}
    if [[ $status != 0 && $f == 0 ]]; then
        echo "FAIL $name: $1 stopped before its scenarios ran (exit $status)"
        f=1
    fi
    e2e_passed=$((e2e_passed + p)) e2e_failed=$((e2e_failed + f))
}

# 2. End-to-end tests against a fresh server on a free loopback port.
cargo build --bin wharf

# The README's first command, as written there but in the debug profile
# built above, on a free port with its own data directory: it must start
# the registry (a workspace with two binaries needs its --bin).
readme_passed=0 readme_failed=1
readme_cmd=$(sed -n 's/^\(cargo run [^#]*\)# the registry.*/\1/p' README.md | head -n 1)
readme_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if [[ -n $readme_cmd ]]; then
    setsid bash -c "${readme_cmd/ --release/} --listen 127.0.0.1:$readme_port --data-dir '$work/readme-data'" > "$work/readme.log" 2>&1 &
    readme_pid=$!
    for _ in $(seq 300); do
        if curl -fsS "http://127.0.0.1:$readme_port/v2/" >/dev/null 2>&1; then
            readme_passed=1 readme_failed=0
            break
        fi
        kill -0 "$readme_pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -- "-$readme_pid" 2>/dev/null || true
    wait "$readme_pid" 2>/dev/null || true
fi
if [[ $readme_failed == 0 ]]; then
    echo "ok   README: the first command starts the registry"
else
    echo "FAIL README: the first command (${readme_cmd:-not found}) did not start the registry"
    tail -n 5 "$work/readme.log" 2>/dev/null || true
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${CARGO_TARGET_DIR:-target}/debug/wharf" serve --listen "127.0.0.1:$port" --data-dir "$work/data" --log-level warn > "$work/wharf.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
    sleep 0.1
done
# A second server with HTTPS, its certificate signed by a CA made here, for
# the TLS scenarios (real verification: clients get the CA, never
# --tls-verify=false).
tls_dir=$work/tls
bash tests/e2e/helpers/make-ca.sh "$tls_dir"
tls_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${CARGO_TARGET_DIR:-target}/debug/wharf" serve --listen "127.0.0.1:$tls_port" --data-dir "$work/tls-data" \
    --tls-cert "$tls_dir/server.crt" --tls-key "$tls_dir/server.key" --log-level warn > "$work/wharf-tls.log" 2>&1 &
tls_pid=$!
for _ in $(seq 100); do
    curl -fsS --cacert "$tls_dir/clients/ca.crt" "https://127.0.0.1:$tls_port/v2/" >/dev/null 2>&1 && break
    sleep 0.1
done
export WHARF_E2E_TLS_HOST=127.0.0.1:$tls_port WHARF_E2E_TLS_CA_DIR=$tls_dir/clients
WHARF_E2E_WHARF_BIN=$(realpath "${CARGO_TARGET_DIR:-target}/debug/wharf")
export WHARF_E2E_WHARF_BIN

e2e_script e2e e2e tests/e2e/run.sh "127.0.0.1:$port"

# 3. End-to-end tests of authentication (their own server, the token flow).
e2e_script e2e-auth e2e tests/e2e/auth.sh "${CARGO_TARGET_DIR:-target}/debug/wharf"
if [[ $e2e_failed != 0 ]]; then
    echo "--- wharf log (tail) ---"
    tail -n 40 "$work/wharf.log"
    echo "--- wharf (TLS) log (tail) ---"
    tail -n 20 "$work/wharf-tls.log"
fi

# 3. Quotas end to end: skopeo, podman and the wharf client pushing past a
# quota fail with its message (its own server).
e2e_script e2e-quota e2e tests/e2e/quota.sh "${CARGO_TARGET_DIR:-target}/debug/wharf"

# 3. `wharf serve --from` end to end (starts its own server with sources).
e2e_script from serve-from tests/e2e/serve-from.sh "${CARGO_TARGET_DIR:-target}/debug/wharf"
e2e_passed=$((e2e_passed + readme_passed))
e2e_failed=$((e2e_failed + readme_failed))

# 3b. Immutable tags and retention with skopeo and podman (starts its own server).
e2e_script lifecycle lifecycle tests/e2e/lifecycle.sh "${CARGO_TARGET_DIR:-target}/debug/wharf"

# 3c. The pull-through cache with podman, ctr (a private containerd),
# skopeo and `wharf cp` (starts its own servers).
e2e_script mirror mirror tests/e2e/mirror.sh "${CARGO_TARGET_DIR:-target}/debug/wharf"
# 3d. The Docker daemon pulling through the cache as its registry-mirrors
# (a private dockerd of the script's own; the machine's is not touched).
e2e_script mirror-docker mirror-docker tests/e2e/mirror-docker.sh "${CARGO_TARGET_DIR:-target}/debug/wharf"

# 3d. The web UI in headless Chromium (WebDriver), seeded by skopeo and
# the wharf client (starts its own server).
e2e_script ui ui tests/e2e/ui.sh "${CARGO_TARGET_DIR:-target}/debug/wharf"

# 4. The Docker daemon as a client (starts its own servers).
e2e_script docker docker tests/e2e/docker.sh "${CARGO_TARGET_DIR:-target}/debug/wharf"

# 5. Three replicas over the Garage cluster, through a round-robin proxy:
# the client suite again, the wharf client, and faults (a Garage node
# killed during a push and a pull, a replica killed mid-upload, the cluster
# stopped and started again).
if [[ -r $garage_dir/env ]]; then
    e2e_script replicas replicas tests/e2e/replicas.sh "${CARGO_TARGET_DIR:-target}/debug/wharf" "$garage_dir"
else
    echo "FAIL replicas: no Garage cluster, so the replica tests did not run"
    e2e_failed=$((e2e_failed + 1))
fi

not_run=$cargo_not_run
echo "cargo test (fs and s3): $cargo_passed passed, $cargo_failed failed, $cargo_skipped ignored, $cargo_not_run not run"
echo "e2e: $e2e_passed passed, $e2e_failed failed"
total="all: $((cargo_passed + e2e_passed)) passed, $((cargo_failed + e2e_failed)) failed"
# Ignored in the fs run are the S3-only tests, which the S3 run runs.
((cargo_skipped == 0)) || total+=", $cargo_skipped skipped"
((not_run == 0)) || total+=", $not_run not run"
echo "$total"
[[ $cargo_failed == 0 && $e2e_failed == 0 && $not_run == 0 ]]
