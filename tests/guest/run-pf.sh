#!/usr/bin/env bash
# The PF guest test: `vfio-nvme serve --pf-socket` serves the primary controller and two VFs; an
# unmodified Linux guest (bookworm 6.1 kernel, stock nvme driver) in QEMU 11.1.3 gets all three
# as `vfio-user-pci` devices, and Debian trixie's nvme-cli 2.13 manages the VFs through the PF
# (checks in tests/guest/init-pf). Last, the seed's architecture end to end (issue 15): the host
# does verified I/O on VF 3 (served, not given to the guest) with `handover`
# (crates/nvme-host/examples/handover.rs); in the guest `vfio-nvme pf migrate --from vf3 --to vf4`
# moves the controller through the kernel's admin pass-through; the host then rings VF 4's
# doorbells for the same queues, and its queued writes must complete there exactly once and
# every block verify. Exits 0 only if every guest and host check passed and the server exited
# cleanly.
#
# Usage: tests/guest/run-pf.sh [--release] [--timeout SECS] [--keep]
#   --release    build and run the release binary (default: debug)
#   --timeout S  give up on the guest after S seconds (default 600)
#   --keep       keep the temporary directory (logs, sockets)
# Environment: as tests/guest/run.sh (RUST_LOG, VFIO_NVME_GUEST_CACHE, VFIO_NVME_BIN).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
REPO=$(cd "$GUEST_DIR/../.." && pwd)

PROFILE=debug
TIMEOUT=600
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
    --release) PROFILE=release ;;
    --timeout)
        TIMEOUT=${2:?--timeout needs a value}
        shift
        ;;
    --keep) KEEP=1 ;;
    *) die "unknown argument '$1' (see the header of $0)" ;;
    esac
    shift
done

# What the device starts with (the defaults of `serve`): every VF online with 64 I/O queue
# pairs plus the admin pair (VQ) and 65 vectors (VI); the PF keeps 17 of each private.
VQ=65
VI=65
PRIVATE=17
# Served VFs: 1 and 2 for the guest, 3 and 4 for the host's handover. Namespace 1..4 are the
# VFs' private ones, 5 the one shared by the PF and every VF (the host's).
VFS=4
SHARED_NSID=5
# PCI slots of the PF and the VFs in the guest.
PF_SLOT=0x4
VF1_SLOT=0x5
VF2_SLOT=0x6
bdf() { printf '0000:00:%02x.0' "$1"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vfio-nvme-guest-pf.XXXXXX")
SERIAL=$WORK/serial.log
SERVER_LOG=$WORK/server.log
SERVER_PID=""
HOST_PID=""
WATCH_PID=""

cleanup() {
    local pid
    for pid in "$HOST_PID" "$WATCH_PID"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    kill_server_and_clean
}
trap cleanup EXIT

show_logs() {
    printf '\n===== guest serial log (%s) =====\n' "$SERIAL"
    cat "$SERIAL" 2>/dev/null || echo "(none)"
    printf '\n===== server log (%s, last 1000 lines) =====\n' "$SERVER_LOG"
    tail -n 1000 "$SERVER_LOG" 2>/dev/null || echo "(none)"
    printf '\n===== host handover log (%s) =====\n' "$WORK/handover.log"
    cat "$WORK/handover.log" 2>/dev/null || echo "(none)"
    printf '===== end of logs =====\n'
}

"$GUEST_DIR/setup.sh"
vfio_nvme_binary "$REPO" "$PROFILE"

HANDOVER=$(handover_binary "$REPO" "$PROFILE")
# The guest's initramfs plus this build's vfio-nvme and the libraries it needs.
INITRAMFS_RUN=$WORK/initramfs.cpio.gz
with_vfio_nvme "$INITRAMFS_PF" "$BIN" "$INITRAMFS_RUN"

log "starting vfio-nvme serve with the PF and $VFS VFs in $WORK"
if ! start_server "$SERVER_LOG" --pf-socket "$WORK/pf.sock" --socket "$WORK/vf1.sock" \
    --socket "$WORK/vf2.sock" --socket "$WORK/vf3.sock" --socket "$WORK/vf4.sock" \
    --namespace ram:64M,lba=4096 --namespace ram:16M,lba=4096,shared; then
    show_logs
    die "the server did not create its sockets"
fi

# The host's VF 3: verified writes in flight before the guest boots; the guest's
# GUEST-LM-MIGRATED line (seen by the watcher) tells it the controller now lives on VF 4.
"$HANDOVER" --from "$WORK/vf3.sock" --to "$WORK/vf4.sock" --nsid "$SHARED_NSID" \
    --ready "$WORK/host-ready" --migrated "$WORK/migrated" --timeout "$TIMEOUT" \
    >"$WORK/handover.log" 2>&1 &
HOST_PID=$!
for _ in $(seq 1 600); do
    [ -e "$WORK/host-ready" ] || ! kill -0 "$HOST_PID" 2>/dev/null || sleep 0.1
done
if [ ! -e "$WORK/host-ready" ]; then
    show_logs
    die "the host's handover client did not get ready"
fi
(
    until [ -e "$SERIAL" ] && tr -d '\r' <"$SERIAL" | grep -aq '^GUEST-LM-MIGRATED'; do sleep 0.2; done
    touch "$WORK/migrated"
) &
WATCH_PID=$!

APPEND="console=ttyS0 panic=-1 vnt.pf=$(bdf $PF_SLOT) vnt.vf1=$(bdf $VF1_SLOT) vnt.vf2=$(bdf $VF2_SLOT)"
APPEND="$APPEND vnt.vq=$VQ vnt.vi=$VI vnt.private=$PRIVATE vnt.vfs=$VFS vnt.shared=$SHARED_NSID"
boot_guest "$TIMEOUT" "$SERIAL" "$INITRAMFS_RUN" "$APPEND" "$WORK/qemu.log" \
    -device "$(vfio_user_device "$WORK/pf.sock" "$PF_SLOT")" \
    -device "$(vfio_user_device "$WORK/vf1.sock" "$VF1_SLOT")" \
    -device "$(vfio_user_device "$WORK/vf2.sock" "$VF2_SLOT")"
# The host finishes on VF 4 (the guest has powered off; the server still runs).
touch "$WORK/migrated"
host_status=0
wait "$HOST_PID" || host_status=$?
HOST_PID=""
kill "$WATCH_PID" 2>/dev/null || true
wait "$WATCH_PID" 2>/dev/null || true
WATCH_PID=""
result=$(grep '^HANDOVER ' "$WORK/handover.log" | tail -n 1 || true)
host_check handover "$([ "$host_status" -eq 0 ] && echo PASS || echo FAIL)" "exit $host_status: ${result:-no result}"
stop_server

if [ "${#FAILURES[@]}" -ne 0 ]; then
    show_logs
    printf 'PF GUEST TEST FAILED: %s\n' "${FAILURES[*]}"
    exit 1
fi
printf 'PF GUEST TEST PASSED (PF and 2 VFs over vfio-user-pci, nvme-cli %s, VF 3 -> VF 4 through the pass-through, guest run %ss)\n' \
    "$NVME_CLI_WANT_VERSION" "$BOOT_SECS"
