#!/usr/bin/env bash
# Prepares everything the guest tests need, idempotently, in a cache outside the checkout
# (see lib.sh): QEMU 11.1.3 from trixie-backports in a private root, the bookworm guest kernel
# and its nvme modules, busybox-static, trixie's nvme-cli 2.13 with its library closure, and three
# initramfs images: tests/guest/init as /init, the PF test's with nvme-cli and
# tests/guest/init-pf as /init, and compare.sh's with tests/guest/init-compare as /init.
#
# Nothing is installed on the host: apt-get runs with its own state, cache and sources list
# (built here from the host's own apt entries, so the same mirror is used) and only downloads;
# packages are unpacked with dpkg-deb -x. The registry host name is never written into the
# repository. Reruns only rebuild the initramfs when /init or the module set changed.
#
# Environment:
#   VFIO_NVME_GUEST_CACHE   cache directory (default ${XDG_CACHE_HOME:-$HOME/.cache}/vfio-nvme-guest)
#   VFIO_NVME_GUEST_MIRROR  Debian mirror URI to use instead of the one found in /etc/apt
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# Prints the URI of the host's Debian mirror: the first apt entry, one-line (*.list) or deb822
# (*.sources), of type "deb" whose suites include the host's own release codename.
host_mirror() {
    local codename f
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || die "cannot read VERSION_CODENAME from /etc/os-release"
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk -v s="$codename" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
                if ($(i + 1) == s) { print $i; exit }
            }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v s="$codename" '
            BEGIN { RS = ""; FS = "\n" }
            {
                deb = 0; suite = 0; uri = ""; enabled = 1
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^#/) continue
                    key = line; sub(/:.*/, "", key)
                    val = line; sub(/^[^:]*:[ \t]*/, "", val)
                    n = split(val, w, /[ \t]+/)
                    if (key == "Types") { for (j = 1; j <= n; j++) if (w[j] == "deb") deb = 1 }
                    if (key == "Suites") { for (j = 1; j <= n; j++) if (w[j] == s) suite = 1 }
                    if (key == "URIs") uri = w[1]
                    if (key == "Enabled" && val == "no") enabled = 0
                }
                if (deb && suite && enabled && uri != "") { print uri; exit }
            }' "$f"
    done
}

MIRROR=${VFIO_NVME_GUEST_MIRROR:-$(host_mirror | head -n 1)}
[ -n "$MIRROR" ] || die "found no Debian mirror in /etc/apt; set VFIO_NVME_GUEST_MIRROR"

# Runs apt tool $1 (apt-get or apt-cache) confined to the private directory $2 (state, cache,
# sources list, empty dpkg status), so it neither reads nor changes the host's package state.
# Remaining arguments go to the tool.
apt_private() {
    local tool=$1 d=$2
    shift 2
    local sandbox=()
    [ "$(id -u)" -eq 0 ] && sandbox=(-o APT::Sandbox::User=root)
    "$tool" -q -o Dir::State="$d/state" -o Dir::State::status="$d/status" \
        -o Dir::Cache="$d/cache" -o Dir::Etc::SourceList="$d/sources.list" \
        -o Dir::Etc::SourceParts="$d/empty" -o Dir::Etc::Preferences="$d/empty/none" \
        -o Dir::Etc::PreferencesParts="$d/empty" -o Debug::NoLocking=1 \
        -o APT::Architecture=amd64 -o APT::Architectures::=amd64 \
        -o APT::Install-Recommends=false -o APT::Install-Suggests=false \
        -o Acquire::Languages=none "${sandbox[@]}" "$@"
}

# Creates private apt directory $1 with a sources list for suites $2... on the host's mirror
# and refreshes its package lists.
apt_prepare() {
    local d=$1
    shift
    mkdir -p "$d/state/lists/partial" "$d/cache/archives/partial" "$d/empty"
    : >"$d/status"
    local signed=""
    [ -r "$KEYRING" ] && signed="[signed-by=$KEYRING] "
    local suite
    for suite in "$@"; do
        printf 'deb %s%s %s main\n' "$signed" "$MIRROR" "$suite"
    done >"$d/sources.list"
    log "apt-get update in $d ($*)"
    apt_private apt-get "$d" update >"$d/update.log" 2>&1 || {
        cat "$d/update.log" >&2
        die "apt-get update failed for suites $*"
    }
}

# Unpacks every .deb in directory $1 into root $2 (replacing the root).
unpack_debs() {
    local debs=$1 root=$2 deb
    rm -rf "$root"
    mkdir -p "$root"
    for deb in "$debs"/*.deb; do
        dpkg-deb -x "$deb" "$root"
    done
}

setup_qemu() {
    if [ -f "$QEMU_ROOT/.complete" ] && qemu_system -version >/dev/null 2>&1; then
        log "QEMU root cached: $(qemu_system -version | head -n 1)"
        return 0
    fi
    local d=$GUEST_CACHE/qemu/apt
    apt_prepare "$d" trixie trixie-backports
    rm -f "$d/cache/archives/"*.deb
    log "downloading qemu-system-x86 from trixie-backports and its dependency closure"
    # -t: dependencies that must match the backport (qemu-system-common, seabios, ...) come
    # from trixie-backports too; the rest resolves from trixie.
    apt_private apt-get "$d" install --download-only -y -t trixie-backports qemu-system-x86 \
        >"$d/install.log" 2>&1 || {
        cat "$d/install.log" >&2
        die "downloading qemu-system-x86 failed"
    }
    unpack_debs "$d/cache/archives" "$QEMU_ROOT"
    local version
    version=$(qemu_system -version | head -n 1) || die "the unpacked QEMU does not start"
    case "$version" in
    *"version $QEMU_WANT_VERSION"*) ;;
    *) die "expected QEMU $QEMU_WANT_VERSION, got: $version" ;;
    esac
    qemu_system -device help | grep -q '"vfio-user-pci"' ||
        die "this QEMU has no vfio-user-pci device"
    touch "$QEMU_ROOT/.complete"
    rm -rf "$d"
    log "QEMU ready: $version ($(du -sh "$QEMU_ROOT" | cut -f1))"
}

# Downloads bookworm's current linux-image-6.1.*-amd64 and busybox-static (packages only,
# no dependencies) and unpacks them.
setup_kernel_and_busybox() {
    if [ -f "$KERNEL_ROOT/.complete" ] && [ -f "$BUSYBOX_ROOT/.complete" ]; then
        log "guest kernel cached: $(kernel_version)"
        return 0
    fi
    local d=$GUEST_CACHE/kernel/apt
    apt_prepare "$d" bookworm
    local image
    image=$(apt_private apt-cache "$d" depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.1\.[0-9.]*-[0-9]+-amd64$/ { print $2; exit }') ||
        true
    [ -n "$image" ] || die "cannot find bookworm's linux-image-6.1.*-amd64 (via linux-image-amd64)"
    local dl=$d/download
    rm -rf "$dl"
    mkdir -p "$dl/kernel" "$dl/busybox"
    log "downloading $image and busybox-static"
    if ! (cd "$dl/kernel" && apt_private apt-get "$d" download "$image" &&
        cd "$dl/busybox" && apt_private apt-get "$d" download busybox-static) >"$d/download.log" 2>&1; then
        cat "$d/download.log" >&2
        die "downloading $image or busybox-static failed"
    fi
    unpack_debs "$dl/kernel" "$KERNEL_ROOT"
    unpack_debs "$dl/busybox" "$BUSYBOX_ROOT"
    local kver
    kver=$(kernel_version) || die "no lib/modules in $image"
    prune_kernel "$kver"
    rm -rf "$d"
    touch "$KERNEL_ROOT/.complete" "$BUSYBOX_ROOT/.complete"
    log "guest kernel ready: $kver ($(du -sh "$KERNEL_ROOT" | cut -f1) kept)"
}

# Keeps only what the guest needs of the unpacked kernel package (about 420 MB): vmlinuz and
# the nvme module closure for kernel version $1.
prune_kernel() {
    local kver=$1 modules m
    modules=$(nvme_module_files "$kver") || die "cannot resolve the nvme module dependencies"
    local pruned=$GUEST_CACHE/kernel/pruned
    rm -rf "$pruned"
    mkdir -p "$pruned/boot"
    cp "$KERNEL_ROOT/boot/vmlinuz-$kver" "$pruned/boot/"
    for m in $modules; do
        mkdir -p "$pruned/lib/modules/$kver/$(dirname "$m")"
        cp "$KERNEL_ROOT/lib/modules/$kver/$m" "$pruned/lib/modules/$kver/$m"
    done
    rm -rf "$KERNEL_ROOT"
    mv "$pruned" "$KERNEL_ROOT"
}

# Prints, in load order (dependencies first), the module files (relative to lib/modules/KVER)
# that nvme needs. The package ships no modules.dep (depmod runs at install time), so the
# dependencies are read from each module's .modinfo strings: "depends=" plus "softdep=pre:"
# names that are modules, plus the crypto implementations that crc64-rocksoft and crc-t10dif
# look up by algorithm name when they load (without them t10-pi, hence nvme-core, fails).
nvme_module_files() {
    python3 - "$KERNEL_ROOT/lib/modules/$1" <<'EOF'
import lzma, os, re, sys
moddir = sys.argv[1]
def norm(n):
    return n.replace("-", "_")
paths = {}
for root, _, files in os.walk(os.path.join(moddir, "kernel")):
    for f in files:
        m = re.match(r"(.*)\.ko(\.xz)?$", f)
        if m:
            paths[norm(m.group(1))] = os.path.relpath(os.path.join(root, f), moddir)
def modinfo(name, key):
    path = os.path.join(moddir, paths[name])
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rb") as f:
        data = f.read()
    return [v.decode() for v in re.findall(rb"(?:^|\0)" + key.encode() + rb"=([^\0]*)", data)]
crypto = {"crc64_rocksoft": ["crc64_rocksoft_generic"], "crc_t10dif": ["crct10dif_generic"]}
order = []
def visit(name):
    if name in order:
        return
    pre = list(crypto.get(name, []))
    for sd in modinfo(name, "softdep"):
        words = sd.split()
        if words and words[0] == "pre:":
            pre += [norm(w) for w in words[1:] if w != "post:"]
    for dep in modinfo(name, "depends"):
        pre += [norm(d) for d in dep.split(",") if d]
    for d in pre:
        if d in paths:
            visit(d)
    order.append(name)
if "nvme" not in paths:
    sys.exit("nvme is not a module in " + moddir)
visit("nvme")
print("\n".join(paths[n] for n in order))
EOF
}

# Downloads trixie's nvme-cli and the packages of its library closure (pf-interop.md §c.3;
# packages only, no dependency resolution: the closure is fixed and checked below), unpacks them
# and checks the version.
setup_nvme_cli() {
    local want="nvme version $NVME_CLI_WANT_VERSION"
    if [ -f "$NVME_CLI_ROOT/.complete" ] && nvme_cli version 2>/dev/null | grep -q "^$want "; then
        log "nvme-cli cached: $(nvme_cli version | head -n 1)"
        return 0
    fi
    local d=$GUEST_CACHE/nvme-cli/apt
    apt_prepare "$d" trixie
    local dl=$d/download
    rm -rf "$dl"
    mkdir -p "$dl"
    local packages=(nvme-cli libnvme1t64 libjson-c5 libssl3t64 libkeyutils1 libzstd1 zlib1g libc6)
    log "downloading ${packages[*]} (trixie)"
    if ! (cd "$dl" && apt_private apt-get "$d" download "${packages[@]}") >"$d/download.log" 2>&1; then
        cat "$d/download.log" >&2
        die "downloading nvme-cli or its libraries failed"
    fi
    unpack_debs "$dl" "$NVME_CLI_ROOT"
    local version
    version=$(nvme_cli version | head -n 1) || die "the unpacked nvme-cli does not start"
    case "$version" in
    "$want "*) ;;
    *) die "expected nvme-cli $NVME_CLI_WANT_VERSION, got: $version" ;;
    esac
    touch "$NVME_CLI_ROOT/.complete"
    rm -rf "$d"
    log "nvme-cli ready: $version"
}

# The unpacked root's dynamic loader and library path (trixie is usr-merged).
NVME_CLI_LIBS=$NVME_CLI_ROOT/usr/lib/x86_64-linux-gnu:$NVME_CLI_ROOT/lib/x86_64-linux-gnu
nvme_cli_loader() {
    local p
    for p in "$NVME_CLI_ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
        "$NVME_CLI_ROOT/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"; do
        [ -e "$p" ] && printf '%s\n' "$p" && return 0
    done
    return 1
}

# Runs the unpacked nvme with arguments "$@" through its own loader and libraries.
nvme_cli() {
    local loader
    loader=$(nvme_cli_loader) || return 1
    "$loader" --library-path "$NVME_CLI_LIBS" "$NVME_CLI_ROOT/usr/sbin/nvme" "$@"
}

# Prints the files of nvme's library closure as resolved by its own loader, one per line.
nvme_cli_closure() {
    local loader
    loader=$(nvme_cli_loader) || return 1
    "$loader" --library-path "$NVME_CLI_LIBS" --list "$NVME_CLI_ROOT/usr/sbin/nvme" |
        awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
    printf '%s\n' "$loader"
}

# Puts nvme-cli into initramfs stage $1: /usr/sbin/nvme, its libraries in /lib/x86_64-linux-gnu
# (the loader's default search path) and the interpreter its ELF header names,
# /lib64/ld-linux-x86-64.so.2.
stage_nvme_cli() {
    local stage=$1 lib
    mkdir -p "$stage/usr/sbin" "$stage/lib/x86_64-linux-gnu" "$stage/lib64"
    cp -L "$NVME_CLI_ROOT/usr/sbin/nvme" "$stage/usr/sbin/nvme"
    local closure
    closure=$(nvme_cli_closure) || die "cannot list nvme's libraries"
    for lib in $closure; do
        case "$lib" in "$NVME_CLI_ROOT"/*) ;; *) die "nvme resolved $lib outside its root" ;; esac
        cp -L "$lib" "$stage/lib/x86_64-linux-gnu/$(basename "$lib")"
    done
    ln -sf ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$stage/lib64/ld-linux-x86-64.so.2"
}

# Builds initramfs $1 with /init from file $2 (and nvme-cli if $3 is "nvme-cli"): busybox (with
# applet links), the nvme modules (decompressed if needed) and the list of them in load order.
# Skipped when the inputs are unchanged.
build_initramfs() {
    local out=$1 init=$2 extra=${3:-}
    local kver
    kver=$(kernel_version)
    local bb=$BUSYBOX_ROOT/bin/busybox
    [ -x "$bb" ] || die "no busybox in $BUSYBOX_ROOT"
    local modules
    modules=$(nvme_module_files "$kver") || die "cannot resolve the nvme module dependencies"
    local stamp
    stamp=$( (
        printf '%s\n' "$kver" "$modules" "$extra"
        sha256sum "$init" "$bb"
        if [ "$extra" = nvme-cli ]; then nvme_cli version; fi
    ) | sha256sum | cut -d' ' -f1)
    if [ -f "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
        log "initramfs up to date: $out"
        return 0
    fi
    local stage
    stage=$(mktemp -d "$GUEST_CACHE/initramfs.XXXXXX")
    mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,modules}
    cp "$bb" "$stage/bin/busybox"
    local applet
    for applet in $("$bb" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$stage/bin/$applet"
    done
    local m src dst
    for m in $modules; do
        src=$KERNEL_ROOT/lib/modules/$kver/$m
        dst=$stage/modules/$(basename "${m%.xz}")
        case "$m" in
        *.ko.xz) xz -dc "$src" >"$dst" ;;
        *) cp "$src" "$dst" ;;
        esac
        basename "$dst" >>"$stage/modules/load-order"
    done
    if [ "$extra" = nvme-cli ]; then stage_nvme_cli "$stage"; fi
    install -m 0755 "$init" "$stage/init"
    # busybox's own cpio writes the archive: the host need not have cpio installed.
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | "$bb" cpio -o -H newc 2>/dev/null) |
        gzip -9 >"$out.tmp"
    mv "$out.tmp" "$out"
    printf '%s\n' "$stamp" >"$out.stamp"
    rm -rf "$stage"
    # shellcheck disable=SC2086 # $modules: paths without spaces, split on purpose
    log "initramfs built: $out ($(du -h "$out" | cut -f1); modules: $(basename -a $modules | tr '\n' ' ')${extra:+; $extra})"
}

main() {
    mkdir -p "$GUEST_CACHE"
    # One setup at a time per cache (CI jobs or a developer's parallel runs).
    exec 9>"$GUEST_CACHE/.lock"
    flock 9
    local start=$SECONDS
    setup_qemu
    setup_kernel_and_busybox
    setup_nvme_cli
    build_initramfs "$INITRAMFS" "$GUEST_DIR/init"
    build_initramfs "$INITRAMFS_PF" "$GUEST_DIR/init-pf" nvme-cli
    build_initramfs "$INITRAMFS_COMPARE" "$GUEST_DIR/init-compare"
    log "setup done in $((SECONDS - start)) s (cache: $GUEST_CACHE)"
}

main "$@"
