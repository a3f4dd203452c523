# shellcheck shell=bash
# Shared paths and helpers for the guest tests; sourced by setup.sh, run.sh, run-pf.sh and
# compare.sh (not run directly).
# shellcheck disable=SC2034 # the variables are used by the scripts that source this file
#
# Everything downloaded or built lives in one cache directory outside the checkout so that reruns
# are fast and the repository stays clean:
#   $GUEST_CACHE/qemu/root/        qemu-system-x86 from trixie-backports plus its library closure
#   $GUEST_CACHE/kernel/root/      bookworm linux-image-6.1.*-amd64 extracted (vmlinuz + modules)
#   $GUEST_CACHE/busybox/root/     busybox-static extracted
#   $GUEST_CACHE/nvme-cli/root/    trixie's nvme-cli 2.13 and its library closure, extracted
#   $GUEST_CACHE/initramfs.cpio.gz the guest's initramfs (busybox, nvme modules, our /init)
#   $GUEST_CACHE/initramfs-pf.cpio.gz  the PF test's (the same, nvme-cli, init-pf as /init)
#   $GUEST_CACHE/initramfs-compare.cpio.gz  compare.sh's (busybox, nvme modules, init-compare)

GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GUEST_CACHE=${VFIO_NVME_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfio-nvme-guest}
QEMU_ROOT=$GUEST_CACHE/qemu/root
KERNEL_ROOT=$GUEST_CACHE/kernel/root
BUSYBOX_ROOT=$GUEST_CACHE/busybox/root
NVME_CLI_ROOT=$GUEST_CACHE/nvme-cli/root
INITRAMFS=$GUEST_CACHE/initramfs.cpio.gz
INITRAMFS_PF=$GUEST_CACHE/initramfs-pf.cpio.gz
INITRAMFS_COMPARE=$GUEST_CACHE/initramfs-compare.cpio.gz
# The QEMU release the test was written against (trixie-backports); setup.sh refuses others.
QEMU_WANT_VERSION=${VFIO_NVME_GUEST_QEMU_VERSION:-11.1.3}
# The nvme-cli release the PF test was written against (trixie); setup.sh refuses others.
NVME_CLI_WANT_VERSION=${VFIO_NVME_GUEST_NVME_CLI_VERSION:-2.13}

log() { printf '[guest] %s\n' "$*" >&2; }
die() {
    printf '[guest] error: %s\n' "$*" >&2
    exit 1
}

# The private root's dynamic loader (trixie is usr-merged, so look in both places).
qemu_loader() {
    local p
    for p in "$QEMU_ROOT/usr/lib64/ld-linux-x86-64.so.2" "$QEMU_ROOT/lib64/ld-linux-x86-64.so.2" \
        "$QEMU_ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"; do
        if [ -e "$p" ]; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    return 1
}

# Sets the array QEMU_CMD to the command that runs the private qemu-system-x86_64 through the
# root's own loader and libraries, with the root's firmware directories, so nothing of the
# host's (older) QEMU or libraries is used. An array so that callers can wrap it (timeout).
qemu_command() {
    local loader
    loader=$(qemu_loader) || die "no ld-linux-x86-64.so.2 in $QEMU_ROOT; run tests/guest/setup.sh"
    QEMU_CMD=(env "QEMU_MODULE_DIR=$QEMU_ROOT/usr/lib/x86_64-linux-gnu/qemu"
        "$loader" --library-path "$QEMU_ROOT/usr/lib/x86_64-linux-gnu:$QEMU_ROOT/lib/x86_64-linux-gnu"
        "$QEMU_ROOT/usr/bin/qemu-system-x86_64"
        -L "$QEMU_ROOT/usr/share/qemu" -L "$QEMU_ROOT/usr/share/seabios" -L "$QEMU_ROOT/usr/lib/ipxe/qemu")
}

# Runs the private QEMU with arguments "$@".
qemu_system() {
    qemu_command
    "${QEMU_CMD[@]}" "$@"
}

# The guest kernel version (the one directory under lib/modules of the extracted package).
kernel_version() {
    local d
    for d in "$KERNEL_ROOT"/lib/modules/*/; do
        [ -d "$d" ] || continue
        basename "$d"
        return 0
    done
    return 1
}

# --- helpers of the run scripts -----------------------------------------------------------------

# Records a host-side check: prints "HOST-CHECK name PASS|FAIL detail" and remembers failures in
# the array FAILURES.
FAILURES=()
host_check() { # name PASS|FAIL detail
    printf 'HOST-CHECK %s %s %s\n' "$1" "$2" "$3"
    [ "$2" = PASS ] || FAILURES+=("$1")
}

# Sets BIN to the vfio-nvme binary: $VFIO_NVME_BIN if set, else one built from checkout $1 with
# profile $2 (debug or release). Dies if it has no working `serve`.
vfio_nvme_binary() {
    local repo=$1 profile=$2
    if [ -n "${VFIO_NVME_BIN:-}" ]; then
        BIN=$VFIO_NVME_BIN
    else
        log "building vfio-nvme ($profile)"
        local build=(cargo build -q -p vfio-nvme-cli --bin vfio-nvme)
        [ "$profile" = release ] && build+=(--release)
        (cd "$repo" && "${build[@]}")
        local target
        target=$(cd "$repo" && cargo metadata -q --format-version 1 --no-deps |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
        BIN=$target/$profile/vfio-nvme
    fi
    "$BIN" serve --help >/dev/null 2>&1 ||
        die "$BIN has no working 'serve' subcommand yet ('vfio-nvme serve --help' failed)"
}

# Starts `$BIN serve ARGS...` (log to file $1, remaining arguments ARGS) in the background, sets
# SERVER_PID, and waits (up to 30 s) until every socket named by a --socket or --pf-socket
# argument exists. Returns 1 if the server exited or a socket never appeared.
start_server() {
    local server_log=$1
    shift
    RUST_LOG=${RUST_LOG:-info} "$BIN" serve "$@" >"$server_log" 2>&1 &
    SERVER_PID=$!
    local sockets=() arg prev=""
    for arg in "$@"; do
        case "$prev" in --socket | --pf-socket) sockets+=("$arg") ;; esac
        prev=$arg
    done
    local socket waited=0
    for socket in "${sockets[@]}"; do
        while [ ! -S "$socket" ]; do
            kill -0 "$SERVER_PID" 2>/dev/null || return 1
            [ "$waited" -lt 300 ] || return 1
            sleep 0.1
            waited=$((waited + 1))
        done
    done
}

# Stops the server of SERVER_PID as an operator would (SIGTERM) and checks it exits 0.
stop_server() {
    local status=0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            host_check server-exit FAIL "still running 10 s after SIGTERM"
        else
            wait "$SERVER_PID" || status=$?
            host_check server-exit "$([ "$status" -eq 0 ] && echo PASS || echo FAIL)" "exit status $status after SIGTERM"
        fi
    else
        wait "$SERVER_PID" || status=$?
        host_check server-exit FAIL "the server exited on its own during the run (status $status)"
    fi
    SERVER_PID=""
}

# Boots the guest: timeout $1 seconds, serial log $2, initramfs $3, kernel command line $4, QEMU's
# own output to $5, then the device arguments. Records host checks `qemu` and `guest` and sets
# GUEST_LINES to the guest's report lines (GUEST-*), without the serial console's carriage
# returns and with any kernel message that shared their line cut off.
# Kills the server of the scripts' $SERVER_PID if it still runs, then removes $WORK unless
# --keep ($KEEP=1) asked to keep it: the end of every guest script's EXIT trap.
kill_server_and_clean() {
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

boot_guest() {
    local timeout=$1 serial=$2 initramfs=$3 append=$4 qemu_log=$5
    shift 5
    local kver
    kver=$(kernel_version)
    log "booting the guest ($kver, QEMU $(qemu_system -version | head -n 1 | awk '{print $4}'), timeout ${timeout}s)"
    local start=$SECONDS status=0
    qemu_command
    timeout -k 10 "$timeout" "${QEMU_CMD[@]}" \
        -accel tcg -smp 2 -m 512M \
        -object memory-backend-memfd,id=mem,size=512M,share=on -machine memory-backend=mem \
        -nodefaults -display none -no-reboot -serial "file:$serial" \
        -kernel "$KERNEL_ROOT/boot/vmlinuz-$kver" -initrd "$initramfs" -append "$append" \
        "$@" >"$qemu_log" 2>&1 || status=$?
    BOOT_SECS=$((SECONDS - start))
    log "QEMU exited with status $status after ${BOOT_SECS}s"
    if [ -s "$qemu_log" ]; then
        log "QEMU output:"
        sed 's/^/    /' "$qemu_log" >&2
    fi
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        host_check qemu FAIL "the guest did not power off within ${timeout}s"
    else
        host_check qemu "$([ "$status" -eq 0 ] && echo PASS || echo FAIL)" "exit status $status after ${BOOT_SECS}s"
    fi
    GUEST_LINES=$(tr -d '\r' <"$serial" 2>/dev/null | grep -a -o 'GUEST-[A-Z]*[ ].*' || true)
    grep '^GUEST-CHECK' <<<"$GUEST_LINES" || true
    local result
    result=$(grep '^GUEST-RESULT' <<<"$GUEST_LINES" || true)
    if [ "$result" = "GUEST-RESULT PASS" ]; then
        host_check guest PASS "$result"
    else
        host_check guest FAIL "${result:-no GUEST-RESULT line}"
    fi
}

# The QEMU argument that hands the guest the vfio-user device at socket $1 in PCI slot $2 (hex,
# optional).
vfio_user_device() {
    local addr=""
    [ -n "${2:-}" ] && addr=",\"addr\":\"$2\""
    printf -- '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"%s"}%s}' "$1" "$addr"
}

# Builds the host side of the PF test's handover (crates/nvme-host/examples/handover.rs) with
# profile $2 in repository $1; prints its path.
handover_binary() {
    local repo=$1 profile=$2
    local build=(cargo build -q -p nvme-host --example handover)
    [ "$profile" = release ] && build+=(--release)
    (cd "$repo" && "${build[@]}") >&2 || die "cannot build the handover example"
    local target
    target=$(cd "$repo" && cargo metadata -q --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    printf '%s\n' "$target/$profile/examples/handover"
}

# Writes initramfs $3: $1 (the PF test's) with binary $2 appended as /usr/sbin/vfio-nvme, plus
# the libraries it needs that $1 lacks (a second cpio archive; the kernel unpacks both). The
# C library and loader are trixie's, already in $1 for nvme-cli; libm comes from the same
# trixie libc6, libgcc_s from this host (it needs only libc).
with_vfio_nvme() {
    local base=$1 bin=$2 out=$3
    local stage lib name
    stage=$(mktemp -d "${TMPDIR:-/tmp}/vfio-nvme-initramfs.XXXXXX")
    mkdir -p "$stage/usr/sbin" "$stage/lib/x86_64-linux-gnu"
    cp -L "$bin" "$stage/usr/sbin/vfio-nvme"
    for lib in $(ldd "$bin" | awk '$2 == "=>" { print $3 }'); do
        name=$(basename "$lib")
        case "$name" in
        libc.so.6) continue ;;
        libm.so.6)
            local m
            m=$(find "$NVME_CLI_ROOT" -name libm.so.6 | head -n 1)
            [ -n "$m" ] || die "no trixie libm.so.6 in $NVME_CLI_ROOT"
            cp -L "$m" "$stage/lib/x86_64-linux-gnu/$name"
            ;;
        *) cp -L "$lib" "$stage/lib/x86_64-linux-gnu/$name" ;;
        esac
    done
    cp "$base" "$out"
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
        "$BUSYBOX_ROOT/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -1 >>"$out"
    rm -rf "$stage"
}
