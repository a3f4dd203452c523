#!/usr/bin/env bash
# The guest test: an unmodified Linux guest (bookworm 6.1 kernel, stock nvme driver) in QEMU
# 11.1.3 uses a VF served by `vfio-nvme serve` as a `vfio-user-pci` device, and does verified
# I/O on it (checks in tests/guest/init). Exits 0 only if every guest check passed and the
# backing file, read by the host after power-off, holds exactly what the guest says it wrote.
#
# Usage: tests/guest/run.sh [--no-device] [--release] [--lba 512|4096] [--timeout SECS] [--keep]
#   --no-device  boot the guest without the VF: proves QEMU, kernel and initramfs work
#   --release    build and run the release binary (default: debug)
#   --lba N      namespace logical block size (default 512)
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

NS_MIB=64            # namespace size; the guest's layout (see init) uses [0,52) MiB
READ_MIB=16          # host-written region the guest checksums
UNTOUCHED_OFF_MIB=52 # [52,64) is never written by the guest

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vfio-nvme-guest.XXXXXX")
SERIAL=$WORK/serial.log
SERVER_LOG=$WORK/server.log
SOCKET=$WORK/vf.sock
NS=$WORK/namespace.img
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

FAILURES=()
host_check() { # name PASS|FAIL detail
    printf 'HOST-CHECK %s %s %s\n' "$1" "$2" "$3"
    [ "$2" = PASS ] || FAILURES+=("$1")
}

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
KVER=$(kernel_version)
VMLINUZ=$KERNEL_ROOT/boot/vmlinuz-$KVER

APPEND="console=ttyS0 panic=-1"
DEVICE_ARGS=()
if [ "$NO_DEVICE" -eq 1 ]; then
    APPEND="$APPEND vnt.mode=nodevice"
else
    if [ -n "${VFIO_NVME_BIN:-}" ]; then
        BIN=$VFIO_NVME_BIN
    else
        log "building vfio-nvme ($PROFILE)"
        build=(cargo build -q -p vfio-nvme-cli --bin vfio-nvme)
        [ "$PROFILE" = release ] && build+=(--release)
        (cd "$REPO" && "${build[@]}")
        TARGET_DIR=$(cd "$REPO" && cargo metadata -q --format-version 1 --no-deps |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
        BIN=$TARGET_DIR/$PROFILE/vfio-nvme
    fi
    "$BIN" serve --help >/dev/null 2>&1 ||
        die "$BIN has no working 'serve' subcommand yet ('vfio-nvme serve --help' failed)"

    log "creating a ${NS_MIB} MiB namespace with random host data"
    head -c $((NS_MIB * 1048576)) /dev/urandom >"$NS"
    READ_SHA=$(range_sha 0 $((READ_MIB * 1048576)) "$NS")
    UNTOUCHED_SHA=$(range_sha $((UNTOUCHED_OFF_MIB * 1048576)) $(((NS_MIB - UNTOUCHED_OFF_MIB) * 1048576)) "$NS")

    log "starting vfio-nvme serve on $SOCKET"
    RUST_LOG=${RUST_LOG:-info} "$BIN" serve --socket "$SOCKET" --namespace "file:$NS,lba=$LBA" \
        >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        [ -S "$SOCKET" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ ! -S "$SOCKET" ]; then
        show_logs
        die "the server did not create $SOCKET"
    fi
    mode=$(stat -c %a "$SOCKET")
    host_check socket-mode "$([ "$mode" = 600 ] && echo PASS || echo FAIL)" "socket mode $mode (want 600)"

    APPEND="$APPEND vnt.mode=full vnt.size=$((NS_MIB * 1048576)) vnt.lba=$LBA vnt.read_sha=$READ_SHA"
    DEVICE_ARGS=(-device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$SOCKET\"}}")
fi

log "booting the guest ($KVER, QEMU $(qemu_system -version | head -n 1 | awk '{print $4}'), timeout ${TIMEOUT}s)"
boot_start=$SECONDS
qemu_status=0
qemu_command
timeout -k 10 "$TIMEOUT" "${QEMU_CMD[@]}" \
    -accel tcg -smp 2 -m 512M \
    -object memory-backend-memfd,id=mem,size=512M,share=on -machine memory-backend=mem \
    -nodefaults -display none -no-reboot -serial "file:$SERIAL" \
    -kernel "$VMLINUZ" -initrd "$INITRAMFS" -append "$APPEND" \
    "${DEVICE_ARGS[@]}" >"$WORK/qemu.log" 2>&1 || qemu_status=$?
boot_secs=$((SECONDS - boot_start))
log "QEMU exited with status $qemu_status after ${boot_secs}s"
if [ -s "$WORK/qemu.log" ]; then
    log "QEMU output:"
    sed 's/^/    /' "$WORK/qemu.log" >&2
fi

if [ "$qemu_status" -eq 124 ] || [ "$qemu_status" -eq 137 ]; then
    host_check qemu FAIL "the guest did not power off within ${TIMEOUT}s"
else
    host_check qemu "$([ "$qemu_status" -eq 0 ] && echo PASS || echo FAIL)" "exit status $qemu_status after ${boot_secs}s"
fi
# The guest's report lines (GUEST-*), without the serial console's carriage returns and with
# any kernel message that shared their line cut off.
GUEST_LINES=$(tr -d '\r' <"$SERIAL" 2>/dev/null | grep -a -o 'GUEST-[A-Z]*[ ].*' || true)
grep '^GUEST-CHECK' <<<"$GUEST_LINES" || true
result=$(grep '^GUEST-RESULT' <<<"$GUEST_LINES" || true)
if [ "$result" = "GUEST-RESULT PASS" ]; then
    host_check guest PASS "$result"
else
    host_check guest FAIL "${result:-no GUEST-RESULT line}"
fi

if [ "$NO_DEVICE" -eq 0 ]; then
    # Stop the server as an operator would, and expect a clean exit.
    server_status=0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            host_check server-exit FAIL "still running 10 s after SIGTERM"
        else
            wait "$SERVER_PID" || server_status=$?
            host_check server-exit "$([ "$server_status" -eq 0 ] && echo PASS || echo FAIL)" "exit status $server_status after SIGTERM"
        fi
    else
        wait "$SERVER_PID" || server_status=$?
        host_check server-exit FAIL "the server exited on its own during the run (status $server_status)"
    fi
    SERVER_PID=""

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
printf 'GUEST TEST PASSED (%s, guest run %ss)\n' "$([ "$NO_DEVICE" -eq 1 ] && echo no device || echo "vfio-user-pci, lba $LBA")" "$boot_secs"
