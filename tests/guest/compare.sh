#!/usr/bin/env bash
# The one-boot comparison of issue 13: ONE Linux guest (QEMU 11.1.3, TCG, as the guest tests)
# with two NVMe controllers side by side, QEMU's emulated nvme (-device nvme on a raw file) and
# our VF (vfio-user-pci to `vfio-nvme serve --namespace file:...`), namespaces of the same size
# on files in the same directory. The guest (tests/guest/init-compare) runs dd with O_DIRECT,
# 4 KiB and 1 MiB, read and write, on each device, alternating which goes first, --repeat
# times; this script prints a table (row, QEMU MB/s, ours MB/s, ratio; medians) and a
# machine-readable summary as its last line (COMPARE-JSON {...}). Not part of the test suite.
#
# Usage: tests/guest/compare.sh [--release] [--serve-arg ARG]... [--host-cache buffered|direct]
#            [--ns-opts OPTS] [--qemu-aio MODE] [--size MIB] [--small-mib N] [--large-mib N] [--repeat N]
#            [--lba 512|4096] [--dir DIR] [--timeout SECS] [--keep] [--json]
#   --release        build and run the release binary (default: debug; measure with --release)
#   --serve-arg ARG  pass ARG to `vfio-nvme serve` (repeatable), e.g. --serve-arg=--io-workers
#                    --serve-arg=2
#   --host-cache M   buffered (default): both go through the host page cache (QEMU
#                    cache=writeback, ours file:...); direct: both bypass it (QEMU cache=none,
#                    ours file:...,direct)
#   --ns-opts OPTS   more options for our namespace spec, e.g. aio=uring
#   --qemu-aio MODE  QEMU's -drive aio= (threads, the default, native or io_uring)
#   --size MIB       namespace size of both (default 1024)
#   --small-mib N    MiB each 4 KiB row moves (default 32)
#   --large-mib N    MiB each 1 MiB row moves (default 256, at most 256; a dd's time includes
#                    about 15 ms of process start-up under TCG, so keep the rows long)
#   --repeat N       repetitions, medians reported (default 5)
#   --lba N          logical block size of both namespaces (default 512)
#   --dir DIR        where the two namespace files go (default ${TMPDIR:-/tmp}; the output
#                    names its filesystem)
#   --timeout S      give up on the guest after S seconds (default 1200)
#   --keep           keep the work directory (logs, namespace files, socket)
#   --json           print only the JSON summary on stdout (the logs still go to stderr)
# Environment: RUST_LOG for the server (default warn); VFIO_NVME_GUEST_CACHE as in setup.sh;
#   VFIO_NVME_BIN=PATH to run an already built vfio-nvme binary instead of building one.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
REPO=$(cd "$GUEST_DIR/../.." && pwd)

PROFILE=debug
SERVE_ARGS=()
HOST_CACHE=buffered
NS_OPTS=""
QEMU_AIO=threads
SIZE_MIB=1024
SMALL_MIB=32
LARGE_MIB=256
REPEAT=5
LBA=512
DIR=${TMPDIR:-/tmp}
TIMEOUT=1200
KEEP=0
JSON=0
need() { [ -n "${2:-}" ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
    case "$1" in
    --release) PROFILE=release ;;
    --serve-arg=*) SERVE_ARGS+=("${1#--serve-arg=}") ;;
    --serve-arg)
        need "$1" "${2:-}"
        SERVE_ARGS+=("$2")
        shift
        ;;
    --host-cache | --ns-opts | --qemu-aio | --size | --small-mib | --large-mib | --repeat | --lba | --dir | --timeout)
        need "$1" "${2:-}"
        case "$1" in
        --host-cache) HOST_CACHE=$2 ;;
        --ns-opts) NS_OPTS=$2 ;;
        --qemu-aio) QEMU_AIO=$2 ;;
        --size) SIZE_MIB=$2 ;;
        --small-mib) SMALL_MIB=$2 ;;
        --large-mib) LARGE_MIB=$2 ;;
        --repeat) REPEAT=$2 ;;
        --lba) LBA=$2 ;;
        --dir) DIR=$2 ;;
        --timeout) TIMEOUT=$2 ;;
        esac
        shift
        ;;
    --keep) KEEP=1 ;;
    --json) JSON=1 ;;
    *) die "unknown argument '$1' (see the header of $0)" ;;
    esac
    shift
done
case "$HOST_CACHE" in buffered | direct) ;; *) die "--host-cache must be buffered or direct, not '$HOST_CACHE'" ;; esac
case "$LBA" in 512 | 4096) ;; *) die "--lba must be 512 or 4096, not '$LBA'" ;; esac
for n in SIZE_MIB SMALL_MIB LARGE_MIB REPEAT TIMEOUT; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "${n,,} must be a positive integer, not '${!n}'"
done
[ "$LARGE_MIB" -le 256 ] || die "--large-mib is at most 256 (the guest keeps the pattern in tmpfs)"
if [ $((SIZE_MIB / 2)) -lt "$LARGE_MIB" ] || [ $((SIZE_MIB / 2)) -lt "$SMALL_MIB" ]; then
    die "--size $SIZE_MIB MiB cannot hold a read region and a write region of --large-mib $LARGE_MIB and --small-mib $SMALL_MIB MiB"
fi

# Everything the user reads goes to stderr with --json, so stdout holds only the summary.
if [ "$JSON" -eq 1 ]; then exec 3>&1 1>&2; else exec 3>&1; fi

mkdir -p "$DIR"
WORK=$(mktemp -d "$DIR/vfio-nvme-compare.XXXXXX")
SERIAL=$WORK/serial.log
SERVER_LOG=$WORK/server.log
SOCKET=$WORK/vf.sock
NS_QEMU=$WORK/qemu.img
NS_OURS=$WORK/ours.img
QEMU_SERIAL=qemu-cmp
SERVER_PID=""

trap kill_server_and_clean EXIT

show_logs() {
    printf '\n===== guest serial log (%s) =====\n' "$SERIAL"
    cat "$SERIAL" 2>/dev/null || echo "(none)"
    printf '\n===== server log (%s, last 200 lines) =====\n' "$SERVER_LOG"
    tail -n 200 "$SERVER_LOG" 2>/dev/null || echo "(none)"
    printf '===== end of logs =====\n'
}

# utime + stime of process $1 in clock ticks (USER_HZ, 100 per second).
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

"$GUEST_DIR/setup.sh"
vfio_nvme_binary "$REPO" "$PROFILE"

FS=$(df -T "$WORK" | awk 'NR == 2 { print $2 }')
log "creating two ${SIZE_MIB} MiB namespace files with the same random data in $WORK ($FS)"
head -c $((SIZE_MIB * 1048576)) /dev/urandom >"$NS_QEMU"
cp --sparse=never "$NS_QEMU" "$NS_OURS"
sync

QEMU_CACHE=writeback
OUR_SPEC="file:$NS_OURS,lba=$LBA"
if [ "$HOST_CACHE" = direct ]; then
    QEMU_CACHE=none
    OUR_SPEC="$OUR_SPEC,direct"
fi
[ -n "$NS_OPTS" ] && OUR_SPEC="$OUR_SPEC,$NS_OPTS"

log "starting vfio-nvme serve --namespace $OUR_SPEC ${SERVE_ARGS[*]}"
if ! RUST_LOG=${RUST_LOG:-warn} start_server "$SERVER_LOG" --socket "$SOCKET" --namespace "$OUR_SPEC" "${SERVE_ARGS[@]}"; then
    show_logs
    die "the server did not create $SOCKET"
fi
SERVE_TICKS_BEFORE=$(cpu_ticks "$SERVER_PID")

APPEND="console=ttyS0 panic=-1 vnt.qemu_serial=$QEMU_SERIAL vnt.size=$((SIZE_MIB * 1048576))"
APPEND="$APPEND vnt.small_mib=$SMALL_MIB vnt.large_mib=$LARGE_MIB vnt.repeat=$REPEAT"
LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
boot_guest "$TIMEOUT" "$SERIAL" "$INITRAMFS_COMPARE" "$APPEND" "$WORK/qemu.log" \
    -drive "file=$NS_QEMU,if=none,id=qemu-nvme,format=raw,cache=$QEMU_CACHE,aio=$QEMU_AIO" \
    -device "nvme,serial=$QEMU_SERIAL,drive=qemu-nvme,logical_block_size=$LBA,physical_block_size=$LBA" \
    -device "$(vfio_user_device "$SOCKET")"
SERVE_CPU_S=$(awk -v a="$SERVE_TICKS_BEFORE" -v b="$(cpu_ticks "$SERVER_PID" 2>/dev/null || echo "$SERVE_TICKS_BEFORE")" \
    'BEGIN { printf "%.2f", (b - a) / 100 }')
stop_server

grep '^GUEST-DEVICE' <<<"$GUEST_LINES" || true
DD_LINES=$(grep '^GUEST-DD' <<<"$GUEST_LINES" || true)
CLOCK_US=$(awk '$1 == "GUEST-CLOCK" { print $2 }' <<<"$GUEST_LINES")
[[ $CLOCK_US =~ ^[0-9]+$ ]] || host_check timings FAIL "the guest printed no GUEST-CLOCK line"
[ -n "$DD_LINES" ] || host_check timings FAIL "the guest printed no GUEST-DD line"

if [ "${#FAILURES[@]}" -ne 0 ]; then
    show_logs
    printf 'COMPARISON FAILED: %s\n' "${FAILURES[*]}"
    exit 1
fi

# The table and the summary: medians of MB/s (10^6 bytes per second) per row and device.
SUMMARY=$(
    DD_LINES=$DD_LINES python3 - "$BOOT_SECS" "$SERVE_CPU_S" "$LOAD_BEFORE" "$FS" "$HOST_CACHE" \
        "$QEMU_AIO" "$OUR_SPEC" "$PROFILE" "$REPEAT" "$LBA" "$CLOCK_US" "${SERVE_ARGS[@]}" <<'EOF'
import json, os, statistics, sys
boot_s, serve_cpu_s, load, fs, cache, qemu_aio, spec, profile, repeat, lba, clock_us = sys.argv[1:12]
serve_args = sys.argv[12:]
rates = {}
for line in os.environ["DD_LINES"].splitlines():
    _, row, dev, _rep, nbytes, usecs = line.split()
    usecs = max(int(usecs) - int(clock_us), 1)
    rates.setdefault(row, {}).setdefault(dev, []).append(int(nbytes) / usecs)
rows = []
for row in ["read-4k", "write-4k", "read-1m", "write-1m"]:
    got = rates.get(row, {})
    q, o = (statistics.median(got[d]) if got.get(d) else None for d in ("qemu", "ours"))
    r1 = lambda v: round(v, 1) if v is not None else None
    rows.append({"row": row, "qemu_mb_s": r1(q), "ours_mb_s": r1(o),
                 "ratio": round(o / q, 3) if q and o else None,
                 "qemu_runs": [r1(v) for v in got.get("qemu", [])],
                 "ours_runs": [r1(v) for v in got.get("ours", [])]})
ratios = [(r["ratio"], r["row"]) for r in rows if r["ratio"] is not None]
lowest = min(ratios) if ratios else (None, None)
summary = {"rows": rows, "lowest_ratio": lowest[0], "lowest_row": lowest[1],
           "all_at_least_1": len(ratios) == len(rows) and lowest[0] >= 1.0,
           "repeat": int(repeat), "guest_s": int(boot_s), "clock_us": int(clock_us),
           "serve_cpu_s": float(serve_cpu_s), "load_average": float(load), "fs": fs,
           "host_cache": cache, "qemu_aio": qemu_aio, "ours_namespace_options": spec.split(",", 1)[1],
           "lba": int(lba), "profile": profile, "serve_args": serve_args}
print(json.dumps(summary))
EOF
)
python3 - "$SUMMARY" <<'EOF'
import json, sys
s = json.loads(sys.argv[1])
fmt = lambda v, spec: format(v, spec) if v is not None else format("-", ">" + spec.split(".")[0])
print(f"one boot, {s['guest_s']} s of guest run; medians of {s['repeat']}; host cache "
      f"{s['host_cache']} on {s['fs']} (QEMU aio={s['qemu_aio']}, ours file:…,{s['ours_namespace_options']}"
      f"{' ' + ' '.join(s['serve_args']) if s['serve_args'] else ''}); load average "
      f"{s['load_average']} at the start; serve used {s['serve_cpu_s']} CPU-s; "
      f"{s['clock_us']} µs of clock reading subtracted per dd")
print(f"{'row':<10} {'QEMU MB/s':>10} {'ours MB/s':>10} {'ratio':>6}")
for r in s["rows"]:
    print(f"{r['row']:<10} {fmt(r['qemu_mb_s'], '10.1f')} {fmt(r['ours_mb_s'], '10.1f')} "
          f"{fmt(r['ratio'], '6.2f')}")
if s["lowest_ratio"] is not None:
    verdict = ("every row at least 1.0x" if s["all_at_least_1"] else
               "below 1.0x" if s["lowest_ratio"] < 1.0 else "rows missing")
    print(f"lowest ratio {s['lowest_ratio']:.2f} ({s['lowest_row']}): {verdict}")
EOF
if [ "$JSON" -eq 1 ]; then
    printf '%s\n' "$SUMMARY" >&3
else
    printf 'COMPARE-JSON %s\n' "$SUMMARY"
fi
