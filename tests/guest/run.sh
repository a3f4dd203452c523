#!/usr/bin/env bash
# The guest test: an unmodified Linux guest (bookworm 6.1 kernel, stock nvme driver) in QEMU
# 11.1.3 uses a VF served by `vfio-nvme serve` as a `vfio-user-pci` device, and does verified
# I/O on it (checks in tests/guest/init). Exits 0 only if every guest check passed and the
# backing file, read by the host after power-off, holds exactly what the guest says it wrote.
#
# Usage: tests/guest/run.sh [--no-device] [--release] [--lba 512|4096] [--doorbells shared|trapped]
#                           [--timeout SECS] [--keep]
#   --no-device  boot the guest without the VF: proves QEMU, kernel and initramfs work
#   --release    build and run the release binary (default: debug)
#   --lba N      namespace logical block size (default 512)
#   --doorbells M  serve --doorbells M (default shared); with trapped, the guest's driver must also
#                configure shadow doorbells (the server logs it)
#   --timeout S  give up on the guest after S seconds (default 300)
#   --keep       keep the temporary directory (logs, namespace file, socket)
# Environment: RUST_LOG for the server (default info); VFIO_NVME_GUEST_CACHE as in setup.sh;
#   VFIO_NVME_BIN=PATH to run an already built vfio-nvme binary instead of building one.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
REPO=$(cd "$GUEST_DIR/../.." && pwd)

NO_DEVICE=0
PROFILE=debug
LBA=512
DOORBELLS=shared
TIMEOUT=300
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
    --no-device) NO_DEVICE=1 ;;
    --release) PROFILE=release ;;
    --lba)
        LBA=${2:?--lba needs a value}
        shift
        ;;
    --doorbells)
        DOORBELLS=${2:?--doorbells needs a value}
        shift
        ;;
    --timeout)
        TIMEOUT=${2:?--timeout needs a value}
        shift
        ;;
    --keep) KEEP=1 ;;
    *) die "unknown argument '$1' (see the header of $0)" ;;
    esac
    shift
done
case "$LBA" in 512 | 4096) ;; *) die "--lba must be 512 or 4096, not '$LBA'" ;; esac
case "$DOORBELLS" in shared | trapped) ;; *) die "--doorbells must be shared or trapped, not '$DOORBELLS'" ;; esac

NS_MIB=64            # namespace size; the guest's layout (see init) uses [0,52) MiB
READ_MIB=16          # host-written region the guest checksums
UNTOUCHED_OFF_MIB=52 # [52,64) is never written by the guest

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vfio-nvme-guest.XXXXXX")
SERIAL=$WORK/serial.log
SERVER_LOG=$WORK/server.log
SOCKET=$WORK/vf.sock
NS=$WORK/namespace.img
SERVER_PID=""

trap kill_server_and_clean EXIT

show_logs() {
    printf '\n===== guest serial log (%s) =====\n' "$SERIAL"
    cat "$SERIAL" 2>/dev/null || echo "(none)"
    if [ "$NO_DEVICE" -eq 0 ]; then
        printf '\n===== server log (%s, last 1000 lines) =====\n' "$SERVER_LOG"
        tail -n 1000 "$SERVER_LOG" 2>/dev/null || echo "(none)"
    fi
    printf '===== end of logs =====\n'
}

# sha256 of $2 bytes of file $3 from byte offset $1 (both multiples of 1 MiB).
range_sha() {
    dd if="$3" bs=1M skip=$(($1 / 1048576)) count=$(($2 / 1048576)) status=none | sha256sum | cut -d' ' -f1
}

"$GUEST_DIR/setup.sh"

APPEND="console=ttyS0 panic=-1"
DEVICE_ARGS=()
if [ "$NO_DEVICE" -eq 1 ]; then
    APPEND="$APPEND vnt.mode=nodevice"
else
    vfio_nvme_binary "$REPO" "$PROFILE"

    log "creating a ${NS_MIB} MiB namespace with random host data"
    head -c $((NS_MIB * 1048576)) /dev/urandom >"$NS"
    READ_SHA=$(range_sha 0 $((READ_MIB * 1048576)) "$NS")
    UNTOUCHED_SHA=$(range_sha $((UNTOUCHED_OFF_MIB * 1048576)) $(((NS_MIB - UNTOUCHED_OFF_MIB) * 1048576)) "$NS")

    log "starting vfio-nvme serve on $SOCKET (--doorbells $DOORBELLS)"
    if ! start_server "$SERVER_LOG" --socket "$SOCKET" --namespace "file:$NS,lba=$LBA" --doorbells "$DOORBELLS"; then
        show_logs
        die "the server did not create $SOCKET"
    fi
    mode=$(stat -c %a "$SOCKET")
    host_check socket-mode "$([ "$mode" = 600 ] && echo PASS || echo FAIL)" "socket mode $mode (want 600)"

    APPEND="$APPEND vnt.mode=full vnt.size=$((NS_MIB * 1048576)) vnt.lba=$LBA vnt.read_sha=$READ_SHA"
    DEVICE_ARGS=(-device "$(vfio_user_device "$SOCKET")")
fi

boot_guest "$TIMEOUT" "$SERIAL" "$INITRAMFS" "$APPEND" "$WORK/qemu.log" "${DEVICE_ARGS[@]}"

if [ "$NO_DEVICE" -eq 0 ]; then
    # Stop the server as an operator would, and expect a clean exit.
    stop_server

    if [ "$DOORBELLS" = trapped ]; then
        # Linux configures shadow doorbells when the controller offers them (OACS bit 8): the
        # trapped path the guest just used is the one with EventIdx.
        if grep -q "the host configured shadow doorbells" "$SERVER_LOG"; then
            host_check shadow-doorbells PASS "the guest's driver configured shadow doorbells"
        else
            host_check shadow-doorbells FAIL "the server log has no 'the host configured shadow doorbells'"
        fi
    fi

    # The backing file must hold exactly what the guest wrote, and nothing else may have changed.
    written=$(grep '^GUEST-WRITTEN' <<<"$GUEST_LINES" || true)
    if [ -z "$written" ]; then
        host_check backing-file FAIL "the guest reported no written ranges"
    else
        while read -r _ off len sha; do
            got=$(range_sha "$off" "$len" "$NS")
            host_check backing-file "$([ "$got" = "$sha" ] && echo PASS || echo FAIL)" \
                "bytes [$off,$((off + len))): host $got, guest $sha"
        done <<<"$written"
    fi
    got=$(range_sha 0 $((READ_MIB * 1048576)) "$NS")
    host_check read-region-unchanged "$([ "$got" = "$READ_SHA" ] && echo PASS || echo FAIL)" "MiB [0,$READ_MIB)"
    got=$(range_sha $((UNTOUCHED_OFF_MIB * 1048576)) $(((NS_MIB - UNTOUCHED_OFF_MIB) * 1048576)) "$NS")
    host_check untouched-region "$([ "$got" = "$UNTOUCHED_SHA" ] && echo PASS || echo FAIL)" "MiB [$UNTOUCHED_OFF_MIB,$NS_MIB)"
fi

if [ "${#FAILURES[@]}" -ne 0 ]; then
    show_logs
    printf 'GUEST TEST FAILED: %s\n' "${FAILURES[*]}"
    exit 1
fi
printf 'GUEST TEST PASSED (%s, guest run %ss)\n' "$([ "$NO_DEVICE" -eq 1 ] && echo no device || echo "vfio-user-pci, lba $LBA, $DOORBELLS doorbells")" "$BOOT_SECS"
