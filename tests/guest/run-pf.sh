#!/usr/bin/env bash
# The PF guest test: `vfio-nvme serve --pf-socket` serves the primary controller and two VFs; an
# unmodified Linux guest (bookworm 6.1 kernel, stock nvme driver) in QEMU 11.1.3 gets all three
# as `vfio-user-pci` devices, and Debian trixie's nvme-cli 2.13 manages the VFs through the PF
# (checks in tests/guest/init-pf). Exits 0 only if every guest check passed and the server
# exited cleanly.
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
# PCI slots of the PF and the VFs in the guest.
PF_SLOT=0x4
VF1_SLOT=0x5
VF2_SLOT=0x6
bdf() { printf '0000:00:%02x.0' "$1"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vfio-nvme-guest-pf.XXXXXX")
SERIAL=$WORK/serial.log
SERVER_LOG=$WORK/server.log
SERVER_PID=""

cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ "$KEEP" -eq 1 ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

show_logs() {
    printf '\n===== guest serial log (%s) =====\n' "$SERIAL"
    cat "$SERIAL" 2>/dev/null || echo "(none)"
    printf '\n===== server log (%s, last 1000 lines) =====\n' "$SERVER_LOG"
    tail -n 1000 "$SERVER_LOG" 2>/dev/null || echo "(none)"
    printf '===== end of logs =====\n'
}

"$GUEST_DIR/setup.sh"
vfio_nvme_binary "$REPO" "$PROFILE"

log "starting vfio-nvme serve with the PF and two VFs in $WORK"
if ! start_server "$SERVER_LOG" --pf-socket "$WORK/pf.sock" --socket "$WORK/vf1.sock" \
    --socket "$WORK/vf2.sock" --namespace ram:64M,lba=4096; then
    show_logs
    die "the server did not create its sockets"
fi

APPEND="console=ttyS0 panic=-1 vnt.pf=$(bdf $PF_SLOT) vnt.vf1=$(bdf $VF1_SLOT) vnt.vf2=$(bdf $VF2_SLOT)"
APPEND="$APPEND vnt.vq=$VQ vnt.vi=$VI vnt.private=$PRIVATE"
boot_guest "$TIMEOUT" "$SERIAL" "$INITRAMFS_PF" "$APPEND" "$WORK/qemu.log" \
    -device "$(vfio_user_device "$WORK/pf.sock" "$PF_SLOT")" \
    -device "$(vfio_user_device "$WORK/vf1.sock" "$VF1_SLOT")" \
    -device "$(vfio_user_device "$WORK/vf2.sock" "$VF2_SLOT")"
stop_server

if [ "${#FAILURES[@]}" -ne 0 ]; then
    show_logs
    printf 'PF GUEST TEST FAILED: %s\n' "${FAILURES[*]}"
    exit 1
fi
printf 'PF GUEST TEST PASSED (PF and 2 VFs over vfio-user-pci, nvme-cli %s, guest run %ss)\n' \
    "$NVME_CLI_WANT_VERSION" "$BOOT_SECS"
