#!/usr/bin/env bash
# Side-by-side benchmark of Wharf and the reference registry (Debian's
# docker-registry, CNCF Distribution 2.8) — issue 3. See docs/benchmarks.md.
#
#   bench/run.sh                  # full run: about 6 minutes on 2 cores, plus the
#                                 # build and 1-3 minutes deleting the data directories
#   BENCH_QUICK=1 bench/run.sh    # smoke run with small sizes, about 1 minute
#   BENCH_STORAGE=s3 bench/run.sh # both registries on one three-node Garage cluster
#                                 # (issue 14), with a plain S3 client as the ceiling:
#                                 # about 5.5 minutes on 2 cores
#   BENCH_GC=1 bench/run.sh       # garbage collection (issue 15): a store of 10,000
#                                 # and 100,000 small blobs, mostly garbage; wharf gc
#                                 # time and peak RSS, manifest GET latency without and
#                                 # during a collection, the reference's offline GC.
#                                 # With BENCH_STORAGE=s3: 10,000 blobs on Garage.
#   BENCH_MIRROR=1 bench/run.sh   # the pull-through cache (issue 16): an image of
#                                 # 4 x 64 MiB layers pulled direct from a wharf
#                                 # upstream, cold and warm through a cache, 5 times
#                                 # (medians): about 1 minute.
#
# Builds wharf and wharf-bench (profile dist), installs docker-registry with apt
# if it is missing, then for each registry in turn: a fresh data directory,
# the server on loopback, every scenario, the server stopped. Prints the
# machine and a table (Wharf, reference, ratio, goal, pass/fail).
#
# BENCH_STORAGE=s3: tests/s3/garage-cluster.sh starts a three-node Garage
# cluster on loopback (data under BENCH_DATA_ROOT), `wharf-bench s3-ceiling`
# measures a plain S3 client's multipart PUT and GET of a big-blob-sized
# object on it, then each registry runs against the same bucket under its own
# prefix ("wharf", "reference"); the cluster is stopped and removed at the
# end (Garage's request logs are kept in the results). Each registry pushes
# its own bytes (Garage deduplicates identical blocks). Default scenarios
# there: the big blob, GET/HEAD, small and manifest pushes (no tag/catalog
# paging, no huge blob); the goals are issue 14's.
#
# Overrides (environment): BENCH_BIG_SIZE (1G), BENCH_CHUNK_SIZE (16M),
# BENCH_HUGE_SIZE (4G, 0 skips), BENCH_DURATION (10 s per load scenario),
# BENCH_TAG_SIZES (1000,10000,100000), BENCH_REPO_SIZES (1000,10000),
# BENCH_TAG_SEED_SECS (75), BENCH_REPO_SEED_SECS (50), BENCH_PAGE_SAMPLES (100),
# BENCH_SCENARIOS (all), BENCH_THREADS (2, load generator threads),
# BENCH_REGISTRIES ("wharf reference"), BENCH_TIMEOUT (420 s per registry),
# BENCH_WHARF_PORT (5391), BENCH_REF_PORT (5392), BENCH_DATA_ROOT ($TMPDIR or
# /tmp), BENCH_OUT ($CARGO_TARGET_DIR/bench-results/<time>), BENCH_NO_BUILD=1,
# BENCH_VERIFY_PULL=1, BENCH_KEEP_DATA=1, BENCH_REF_CACHE (inmemory; "none" drops the
# reference's blob descriptor cache), BENCH_WHARF_ARGS (extra serve flags),
# CARGO_TARGET_DIR (where the binaries are built and looked for; target/),
# BENCH_PROFILE (dist; release builds quicker, not the published binary).
# S3 mode: BENCH_STORAGE (fs; s3), BENCH_S3_PART_SIZE (8M) and
# BENCH_S3_CONCURRENCY (4): the S3 client's multipart parts and parts in
# flight, BENCH_S3_CEILING_REPEAT (2, the best is the ceiling), GARAGE_BIN
# (see tests/s3/garage-cluster.sh).
# GC mode: BENCH_GC=1, BENCH_GC_SIZES (10000,100000; on S3 10000),
# BENCH_GC_STEPS (dry_run,serve,cli,reference), BENCH_GC_DURING (20: at most
# this many seconds of GETs during the collection; BENCH_DURATION is the
# baseline's), BENCH_GC_REFERENCED_PCT (10).
# Mirror mode: BENCH_MIRROR=1, BENCH_MIRROR_LAYERS (4), BENCH_MIRROR_LAYER_SIZE
# (64M), BENCH_MIRROR_CONNS (3 blobs at a time), BENCH_MIRROR_REPEAT (5); the
# upstream on BENCH_WHARF_PORT, the cache on the next port.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
t_start=$(date +%s)

storage=${BENCH_STORAGE:-fs}
case $storage in
    fs) ;;
    s3)
        # Issue 14's scenarios; listing pages and the huge blob are issue
        # 3's (add them with BENCH_SCENARIOS / BENCH_HUGE_SIZE).
        : "${BENCH_SCENARIOS:=push_mono,push_chunked,pull,manifest_get,blob_head,small_push,manifest_push}"
        : "${BENCH_HUGE_SIZE:=0}"
        ;;
    *) echo "bench: BENCH_STORAGE must be fs or s3 (got $storage)" >&2; exit 2 ;;
esac

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    : "${BENCH_BIG_SIZE:=64M}" "${BENCH_HUGE_SIZE:=256M}" "${BENCH_DURATION:=2}"
    : "${BENCH_TAG_SIZES:=100,1000}" "${BENCH_REPO_SIZES:=100,1000}"
    : "${BENCH_TAG_SEED_SECS:=15}" "${BENCH_REPO_SEED_SECS:=15}" "${BENCH_PAGE_SAMPLES:=10}"
    : "${BENCH_TIMEOUT:=120}"
fi
big=${BENCH_BIG_SIZE:-1G}
chunk=${BENCH_CHUNK_SIZE:-16M}
huge=${BENCH_HUGE_SIZE:-4G}
duration=${BENCH_DURATION:-10}
tag_sizes=${BENCH_TAG_SIZES:-1000,10000,100000}
repo_sizes=${BENCH_REPO_SIZES:-1000,10000}
tag_seed_secs=${BENCH_TAG_SEED_SECS:-75}
repo_seed_secs=${BENCH_REPO_SEED_SECS:-50}
page_samples=${BENCH_PAGE_SAMPLES:-100}
scenarios=${BENCH_SCENARIOS:-all}
threads=${BENCH_THREADS:-2}
registries=${BENCH_REGISTRIES:-wharf reference}
per_registry_timeout=${BENCH_TIMEOUT:-420}
wharf_port=${BENCH_WHARF_PORT:-5391}
ref_port=${BENCH_REF_PORT:-5392}
data_root=${BENCH_DATA_ROOT:-${TMPDIR:-/tmp}}
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$root/$target_dir
out=${BENCH_OUT:-$target_dir/bench-results/$(date +%Y%m%d-%H%M%S)}
ref_cache=${BENCH_REF_CACHE:-inmemory}
# Cargo profile of the binaries: dist as published; release for a quicker
# build (not the published figure).
profile=${BENCH_PROFILE:-dist}
registry_bin=${DOCKER_REGISTRY_BIN:-/usr/bin/docker-registry}
# As tests/s3/garage-cluster.sh finds it.
garage_bin=${GARAGE_BIN:-$(command -v garage || echo "$HOME/.cache/wharf-garage/2.5.0/bin/garage")}
s3_part=${BENCH_S3_PART_SIZE:-8M}
s3_conc=${BENCH_S3_CONCURRENCY:-4}
s3_repeat=${BENCH_S3_CEILING_REPEAT:-2}
mkdir -p "$out"

say() { printf '== [%4ds] %s\n' "$(( $(date +%s) - t_start ))" "$*" >&2; }

# ---------------------------------------------------------------- build
if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    say "building wharf and wharf-bench (profile $profile$([[ $profile == dist ]] && echo ': full LTO, one codegen unit' || true))"
    cargo build --profile "$profile" -q -p wharf -p wharf-bench
fi
t_built=$(date +%s)
wharf_bin=$target_dir/$profile/wharf
bench_bin=$target_dir/$profile/wharf-bench

if [[ " $registries " == *" reference "* && ! -x $registry_bin ]]; then
    say "installing docker-registry with apt"
    sudo_=; [[ $(id -u) == 0 ]] || sudo_=sudo
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-registry >&2 \
        || { $sudo_ apt-get update -q >&2 && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-registry >&2; }
fi

# -------------------------------------------------------------- machine
mkdir -p "$data_root"
sha_line=$(openssl speed -evp sha256 -bytes 16384 -seconds 2 2>/dev/null | awk '/^sha256/ {print $NF}')
sha_mbs=$(awk -v k="${sha_line%k}" 'BEGIN { printf "%.0f", k * 1000 / 1e6 }')
cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
fs_type=$(df -T "$data_root" | awk 'NR==2 {print $2 " (" $1 ")"}')
# How fast this machine fills the page cache with new data, 256 MiB at a
# time for 1 GiB: on VMs whose memory the host backs lazily (Firecracker)
# the first write to each page costs ~10x more than on bare metal, except in
# memory the guest freed a moment ago. Both registries pay it per byte
# pushed, so push figures are to be read with this line.
pc_probe=$data_root/wharf-bench-pagecache.$$
pc_steps=()
for i in 1 2 3 4; do
    s=$( TIMEFORMAT=%R; { time dd if=/dev/zero of="$pc_probe.$i" bs=1M count=256 2>/dev/null; } 2>&1 | tail -1)
    pc_steps+=("$(awk -v s="$s" 'BEGIN { if (s > 0) printf "%.0f", 268.435456 / s; else print "?" }')")
done
rm -f "$pc_probe".*
# What the VM does with memory the guest is not using: free page reporting
# hands freed pages back to the host; a DAMON "pageout" scheme evicts page
# cache nobody touched for a while (a later read goes to the disk).
mem_notes=()
pr=/sys/module/page_reporting/parameters
if [[ -r $pr/page_reporting_order ]]; then
    mem_notes+=("free page reporting on (order $(cat $pr/page_reporting_order)$([[ -r $pr/min_free_ms ]] && echo ", after $(cat $pr/min_free_ms) ms"))")
fi
for k in /sys/kernel/mm/damon/admin/kdamonds/*; do
    [[ $(cat "$k/state" 2>/dev/null) == on ]] || continue
    for sc in "$k"/contexts/*/schemes/*; do
        [[ $(cat "$sc/action" 2>/dev/null) == pageout ]] || continue
        ctx=${sc%/schemes/*}
        idle=$(awk -v a="$(cat "$sc/access_pattern/age/min" 2>/dev/null)" -v u="$(cat "$ctx/monitoring_attrs/intervals/aggr_us" 2>/dev/null)" 'BEGIN { printf "%.0f", a * u / 1e6 }')
        mem_notes+=("DAMON pages out memory idle for ≥${idle}s")
    done
done
mem_line=$(printf '%s; ' "${mem_notes[@]}")
mem_line=${mem_line%; }
{
    echo "date:       $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu:        ${cpu_model:-unknown}, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
    echo "sha-256:    ${sha_mbs} MB/s single core (openssl speed -evp sha256 -bytes 16384 -seconds 2)"
    echo "kernel:     $(uname -sr)"
    echo "load avg:   $(cut -d' ' -f1-3 /proc/loadavg) at start (other work on the machine skews results)"
    echo "data dir:   $data_root on $fs_type"
    echo "page cache: ${pc_steps[*]} MB/s for each 256 MiB of 1 GiB of new data (dd, no fsync; bare metal: several GB/s each)"
    echo "memory:     ${mem_line:-no page reporting or DAMON reclaim found}"
    wharf_rev="$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- crates 2>/dev/null || echo '+uncommitted changes'), profile $profile$([[ $profile == dist ]] && echo ' (full LTO, one codegen unit)' || true)"
    ref_version=$("$registry_bin" --version 2>/dev/null | awk '{print $2, $3}')
    if [[ $storage == s3 ]]; then
        echo "storage:    S3: Garage $("$garage_bin" --version 2>/dev/null | awk '{sub(/^cargo:/, "", $2); print $2; exit}'), three nodes on loopback (replication 3, sqlite metadata), data on this machine's disk"
        echo "wharf:      $wharf_rev, --storage s3 (prefix wharf; blob GETs streamed, no redirect: as shipped)"
        echo "reference:  $ref_version, s3 driver (rootdirectory /reference; defaults: 10 MiB chunks; redirect disabled so blobs stream through it like Wharf's), delete enabled, blobdescriptor cache: $ref_cache"
        echo "sizes:      blob $big (chunks $chunk), ${duration}s per load; scenarios $scenarios"
    elif [[ ${BENCH_GC:-0} == 1 ]]; then
        echo "wharf:      $wharf_rev, fsync on (as shipped)"
        echo "reference:  $ref_version, filesystem, offline garbage-collect"
    else
        echo "wharf:      $wharf_rev, fsync on (as shipped)"
        echo "reference:  $ref_version, filesystem, delete enabled, blobdescriptor cache: $ref_cache"
        echo "sizes:      blob $big (chunks $chunk), huge $huge, ${duration}s per load, tags $tag_sizes (≤${tag_seed_secs}s seeding), repos $repo_sizes (≤${repo_seed_secs}s seeding)"
    fi
} >"$out/machine.txt"

# ------------------------------------------------------------- registries
pid=
work=
leftovers=()
stop_server() {
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    pid=
    # Removing 100k small files takes minutes on some disks: done at the
    # end, after the table, so it cannot slow the next registry down.
    [[ -z $work ]] || leftovers+=("$work")
    work=
}
remove_data() {
    if [[ ${#leftovers[@]} -gt 0 && ${BENCH_KEEP_DATA:-0} != 1 ]]; then
        say "removing the data directories (${leftovers[*]}); BENCH_KEEP_DATA=1 keeps them"
        local d
        for d in "${leftovers[@]}"; do rm -rf "$d" & done
        wait
        say "removed"
    fi
    leftovers=()
}
# The Garage cluster (S3 mode): started once, both registries and the S3
# client on the same bucket, stopped (only the PIDs the script recorded)
# and removed at the end.
cluster=
stop_cluster() {
    if [[ -n $cluster ]]; then
        bash "$root/tests/s3/garage-cluster.sh" stop "$cluster" >&2 || true
        # Garage logs every S3 request it serves (node 1's endpoint takes
        # them all): the request pattern of each registry, kept.
        local n
        for n in 1 2 3; do
            gzip -c "$cluster/node$n/log" >"$out/garage-node$n.log.gz" 2>/dev/null || true
        done
        leftovers+=("$cluster")
        cluster=
    fi
}
trap 'stop_server; stop_cluster; remove_data' EXIT
trap 'exit 130' INT TERM

storage_pids=
s3_env=()
if [[ $storage == s3 ]]; then
    [[ -x $garage_bin ]] || {
        echo "bench: no garage binary ($garage_bin); see tests/s3/README.md" >&2
        exit 2
    }
    cluster=$(mktemp -d "$data_root/wharf-bench-garage.XXXXXX")
    say "starting a three-node Garage cluster in $cluster"
    GARAGE_BIN=$garage_bin bash "$root/tests/s3/garage-cluster.sh" start "$cluster" >/dev/null
    # WHARF_S3_ENDPOINT, WHARF_S3_REGION, WHARF_S3_BUCKET, AWS_ACCESS_KEY_ID,
    # AWS_SECRET_ACCESS_KEY (shell variables here, passed on explicitly).
    # shellcheck disable=SC1091
    source "$cluster/env"
    storage_pids=$(cat "$cluster"/node[123]/pid | paste -sd, -)
    s3_env=(WHARF_S3_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" WHARF_S3_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY")
    # (Not in GC mode: no big objects there.)
    if [[ ${BENCH_GC:-0} != 1 ]]; then
        say "S3 ceiling: a plain S3 client, multipart PUT ($s3_part parts, $s3_conc in flight) and GET of $big, best of $s3_repeat"
        rc=0
        env "${s3_env[@]}" "$bench_bin" s3-ceiling --endpoint "$WHARF_S3_ENDPOINT" \
            --region "$WHARF_S3_REGION" --bucket "$WHARF_S3_BUCKET" --prefix s3-client \
            --size "$big" --part-size "$s3_part" --concurrency "$s3_conc" --repeat "$s3_repeat" \
            --storage-pids "$storage_pids" --threads "$threads" >"$out/s3-client.jsonl" || rc=$?
        [[ $rc == 0 ]] || say "S3 ceiling: wharf-bench s3-ceiling exited with $rc"
    fi
fi

# ------------------------------------------------------- GC (issue 15)
# One store per size (written by wharf-bench through the store crate),
# measured in turn; the table at the end. The servers and `wharf gc` are
# wharf-bench's children.
if [[ ${BENCH_GC:-0} == 1 ]]; then
    if [[ $storage == s3 ]]; then gc_sizes=${BENCH_GC_SIZES:-10000}; else gc_sizes=${BENCH_GC_SIZES:-10000,100000}; fi
    echo "gc:         sizes $gc_sizes blobs of 1 KiB, ${BENCH_GC_REFERENCED_PCT:-10}% in tagged images; GETs: ${duration}s without GC, ≤${BENCH_GC_DURING:-20}s during; steps ${BENCH_GC_STEPS:-dry_run,serve,cli,reference}" >>"$out/machine.txt"
    for n in ${gc_sizes//,/ }; do
        work=$(mktemp -d "$data_root/wharf-bench-gc.XXXXXX")
        s3_args=()
        if [[ $storage == s3 ]]; then
            s3_args=(--s3-endpoint "$WHARF_S3_ENDPOINT" --s3-region "$WHARF_S3_REGION"
                     --s3-bucket "$WHARF_S3_BUCKET" --s3-prefix "gc-$n")
        fi
        say "gc: $n blobs on $storage in $work"
        rc=0
        env ${s3_env[@]+"${s3_env[@]}"} "$bench_bin" gc --wharf "$wharf_bin" --storage "$storage" \
            --work "$work" --blobs "$n" --referenced-pct "${BENCH_GC_REFERENCED_PCT:-10}" \
            --baseline-secs "$duration" --during-secs "${BENCH_GC_DURING:-20}" \
            --port "$wharf_port" --reference "$registry_bin" \
            --steps "${BENCH_GC_STEPS:-dry_run,serve,cli,reference}" \
            ${s3_args[@]+"${s3_args[@]}"} >>"$out/gc.jsonl" || rc=$?
        [[ $rc == 0 ]] || say "gc: wharf-bench gc exited with $rc"
        leftovers+=("$work")
        work=
    done
    stop_cluster
    echo
    echo "## Machine"
    echo
    sed 's/^/    /' "$out/machine.txt"
    echo
    echo "## Garbage collection"
    echo
    "$bench_bin" gc-report "$out/gc.jsonl" | tee "$out/gc-table.md"
    echo "raw results: $out"
    echo "time: build $(( t_built - t_start )) s, benchmark $(( $(date +%s) - t_built )) s"
    remove_data
    exit 0
fi

# ------------------------------------------------ the cache (issue 16)
# Pulls through the pull-through cache beside direct pulls from its
# upstream: both wharf servers are wharf-bench's children, a fresh cache
# per repetition (cold, then warm); the table at the end.
if [[ ${BENCH_MIRROR:-0} == 1 ]]; then
    m_layers=${BENCH_MIRROR_LAYERS:-4} m_size=${BENCH_MIRROR_LAYER_SIZE:-64M}
    m_conns=${BENCH_MIRROR_CONNS:-3} m_repeat=${BENCH_MIRROR_REPEAT:-5}
    echo "mirror:     one image of $m_layers layers x $m_size on a wharf upstream; pulls of $m_conns blobs at a time, direct / cold / warm through a cache, $m_repeat repetitions" >>"$out/machine.txt"
    work=$(mktemp -d "$data_root/wharf-bench-mirror.XXXXXX")
    say "mirror: $m_layers x $m_size, $m_repeat repetitions, in $work"
    rc=0
    # shellcheck disable=SC2086
    "$bench_bin" mirror --wharf "$wharf_bin" --work "$work" --layers "$m_layers" \
        --layer-size "$m_size" --conns "$m_conns" --repeat "$m_repeat" --port "$wharf_port" \
        --cache-dir "$target_dir/bench-cache" --cache-args "${BENCH_WHARF_ARGS:-}" \
        >"$out/mirror.jsonl" || rc=$?
    [[ $rc == 0 ]] || say "mirror: wharf-bench mirror exited with $rc"
    for f in "$work"/*.log; do [[ -e $f ]] && gzip -c "$f" >"$out/mirror-$(basename "$f").gz"; done
    leftovers+=("$work")
    work=
    echo
    echo "## Machine"
    echo
    sed 's/^/    /' "$out/machine.txt"
    echo
    echo "## Pull-through cache"
    echo
    "$bench_bin" mirror-report "$out/mirror.jsonl" | tee "$out/mirror-table.md"
    echo "raw results: $out"
    echo "time: build $(( t_built - t_start )) s, benchmark $(( $(date +%s) - t_built )) s"
    remove_data
    exit 0
fi

start_wharf() {
    local s3=()
    if [[ $storage == s3 ]]; then
        s3=(--storage s3 --s3-endpoint "$WHARF_S3_ENDPOINT" --s3-region "$WHARF_S3_REGION"
            --s3-bucket "$WHARF_S3_BUCKET" --s3-prefix wharf)
    fi
    # shellcheck disable=SC2086
    env ${s3_env[@]+"${s3_env[@]}"} "$wharf_bin" serve --listen "127.0.0.1:$wharf_port" \
        --data-dir "$work/data" ${s3[@]+"${s3[@]}"} ${BENCH_WHARF_ARGS:-} \
        >"$out/wharf.log" 2>&1 &
    pid=$!
    addr=127.0.0.1:$wharf_port
}

start_reference() {
    local cache=
    [[ $ref_cache == none ]] || cache="  cache:
    blobdescriptor: $ref_cache"
    # Debian's shipped /etc/docker/registry/config.yml without auth, on a
    # fresh directory (or the S3 cluster) and another port.
    local driver="  filesystem:
    rootdirectory: $work/data"
    if [[ $storage == s3 ]]; then
        # Distribution 2.8's s3 driver with its defaults (10 MiB chunks);
        # a regionendpoint makes it use path-style URLs and skip its AWS
        # region check. Blob GETs would redirect to a presigned URL on
        # Garage: disabled, so that the blob streams through the registry
        # as Wharf's does (as shipped, no redirect).
        driver="  s3:
    accesskey: $AWS_ACCESS_KEY_ID
    secretkey: $AWS_SECRET_ACCESS_KEY
    region: $WHARF_S3_REGION
    regionendpoint: $WHARF_S3_ENDPOINT
    bucket: $WHARF_S3_BUCKET
    secure: false
    v4auth: true
    rootdirectory: /reference
  redirect:
    disable: true"
    fi
    ( umask 077; cat >"$work/config.yml" <<EOF
version: 0.1
log:
  fields:
    service: registry
storage:
$cache
$driver
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$ref_port
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
EOF
    )
    # AWS_CA_BUNDLE in the environment makes the s3 driver panic at start;
    # nothing here uses TLS.
    env -u AWS_CA_BUNDLE "$registry_bin" serve "$work/config.yml" >"$out/reference.log" 2>&1 &
    pid=$!
    addr=127.0.0.1:$ref_port
}

for reg in $registries; do
    port=$wharf_port; [[ $reg == reference ]] && port=$ref_port
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/v2/"; then
        echo "bench: something already listens on 127.0.0.1:$port" >&2
        exit 2
    fi
    work=$(mktemp -d "$data_root/wharf-bench.XXXXXX")
    sync
    # This disk's write speed right now (virtual disks vary a lot): 1 GiB
    # written and fdatasync'ed, as a durable blob push must.
    disk=$(dd if=/dev/zero of="$work/dd" bs=16M count=64 conv=fdatasync 2>&1 | awk '/copied/ {print $(NF-1), $NF}')
    rm -f "$work/dd"
    echo "disk:       $disk write+fdatasync of 1 GiB (dd) before the $reg run" >>"$out/machine.txt"
    say "$reg: starting"
    case $reg in
        wharf) start_wharf ;;
        reference) start_reference ;;
        *) echo "bench: unknown registry $reg" >&2; exit 2 ;;
    esac
    extra=()
    [[ ${BENCH_VERIFY_PULL:-0} == 1 ]] && extra+=(--verify-pull)
    if [[ $storage == s3 ]]; then
        # Garage deduplicates identical blocks: each registry pushes its own
        # bytes, or the second would store little of what it is sent.
        extra+=(--storage-pids "$storage_pids" --content-seed "$([[ $reg == wharf ]] && echo 1 || echo 2)")
    fi
    rc=0
    timeout --kill-after=10 "$per_registry_timeout" "$bench_bin" run \
        --url "http://$addr" --name "$reg" --pid "$pid" \
        --scenarios "$scenarios" --big-size "$big" --chunk-size "$chunk" --huge-size "$huge" \
        --duration "$duration" --tag-sizes "$tag_sizes" --repo-sizes "$repo_sizes" \
        --tag-seed-secs "$tag_seed_secs" --repo-seed-secs "$repo_seed_secs" \
        --page-samples "$page_samples" --threads "$threads" \
        --cache-dir "$target_dir/bench-cache" "${extra[@]}" \
        >"$out/$reg.jsonl" || rc=$?
    [[ $rc == 0 ]] || say "$reg: wharf-bench exited with $rc (124: timed out after ${per_registry_timeout}s)"
    kill -0 "$pid" 2>/dev/null || say "$reg: the server died during the run (see $out/$reg.log)"
    if [[ $storage == s3 ]]; then
        used="cluster dir $(du -sh "$cluster" 2>/dev/null | cut -f1) (three replicas)"
    else
        used="data dir $(du -sh "$work/data" 2>/dev/null | cut -f1)"
    fi
    say "$reg: done; $used, log $(wc -l <"$out/$reg.log") lines"
    stop_server
done

stop_cluster

# ----------------------------------------------------------------- report
echo
echo "## Machine"
echo
sed 's/^/    /' "$out/machine.txt"
echo
echo "## Results"
echo
s3_report=()
[[ $storage == s3 ]] && s3_report=(--s3 --ceiling "$out/s3-client.jsonl")
"$bench_bin" report --wharf "$out/wharf.jsonl" --reference "$out/reference.jsonl" \
    --sha256-mbs "$sha_mbs" ${s3_report[@]+"${s3_report[@]}"} | tee "$out/table.md"
echo
for reg in $registries; do
    n=$(grep -ciE ' (ERROR|WARN) |level=(error|warn)|panic' "$out/$reg.log" || true)
    gzip -f "$out/$reg.log"
    echo "$reg log: $n warning/error lines ($out/$reg.log.gz)"
done
echo "raw results: $out"
echo "time: build $(( t_built - t_start )) s, benchmark $(( $(date +%s) - t_built )) s"
remove_data
