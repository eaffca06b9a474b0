#!/usr/bin/env bash
# Run the e2e suite against Debian's reference registry (docker/distribution,
# package docker-registry), e.g. to validate the suite itself or to get a
# baseline for comparisons with Wharf.
#
#   tests/e2e/with-reference.sh            # registry on 127.0.0.1:5099
#   WHARF_E2E_REF_PORT=5100 tests/e2e/with-reference.sh
#
# The exit status is run.sh's.
#
# Expected failures against the reference registry (distribution 2.8.2):
#   referrers-api  it has no referrers API (404) and sends no OCI-Subject
#   tags-list      it ignores n/last and does not sort tags/list
# so, for a green run: WHARF_E2E_SKIP="referrers-api tags-list" tests/e2e/with-reference.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
port=${WHARF_E2E_REF_PORT:-5099}
addr=127.0.0.1:$port
registry_bin=${DOCKER_REGISTRY_BIN:-/usr/bin/docker-registry}

[[ -x $registry_bin ]] || { echo "with-reference: $registry_bin not found (run tests/e2e/install.sh)" >&2; exit 2; }

work=$(mktemp -d -t wharf-e2e-ref.XXXXXX)
pid=
cleanup() {
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $addr
EOF

if curl -s -o /dev/null --max-time 2 "http://$addr/v2/"; then
    echo "with-reference: something already listens on $addr" >&2
    exit 2
fi

"$registry_bin" serve "$work/config.yml" >"$work/registry.log" 2>&1 &
pid=$!

# Bounded wait (10 s) for the registry to answer.
for _ in $(seq 100); do
    curl -s -o /dev/null --max-time 1 "http://$addr/v2/" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if ! curl -s -o /dev/null --max-time 2 "http://$addr/v2/"; then
    echo "with-reference: registry did not start; its log:" >&2
    cat "$work/registry.log" >&2
    exit 2
fi

rc=0
"$here/run.sh" "$addr" || rc=$?
if [[ $rc -ne 0 && -n ${WHARF_E2E_SHOW_REGISTRY_LOG:-} ]]; then
    echo "--- reference registry log ---" >&2
    tail -n 50 "$work/registry.log" >&2
fi
exit "$rc"
