# shellcheck shell=bash
# Shared paths and helpers for the guest test; sourced by setup.sh and run.sh (not run directly).
# shellcheck disable=SC2034 # the variables are used by the scripts that source this file
#
# Everything downloaded or built lives in one cache directory outside the checkout so that reruns
# are fast and the repository stays clean:
#   $GUEST_CACHE/qemu/root/        qemu-system-x86 from trixie-backports plus its library closure
#   $GUEST_CACHE/kernel/root/      bookworm linux-image-6.1.*-amd64 extracted (vmlinuz + modules)
#   $GUEST_CACHE/busybox/root/     busybox-static extracted
#   $GUEST_CACHE/initramfs.cpio.gz the guest's initramfs (busybox, nvme modules, our /init)

GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GUEST_CACHE=${VFIO_NVME_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfio-nvme-guest}
QEMU_ROOT=$GUEST_CACHE/qemu/root
KERNEL_ROOT=$GUEST_CACHE/kernel/root
BUSYBOX_ROOT=$GUEST_CACHE/busybox/root
INITRAMFS=$GUEST_CACHE/initramfs.cpio.gz
# The QEMU release the test was written against (trixie-backports); setup.sh refuses others.
QEMU_WANT_VERSION=${VFIO_NVME_GUEST_QEMU_VERSION:-11.1.3}

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
