#!/usr/bin/env bash
# make-test-base.sh OUT.img [SIZE_MIB]   (ROOT_DIR=dir: that root filesystem instead of the fake one)
#
# Builds a small disk image shaped like Raspberry Pi OS, with the standard tools, for the
# tests of `unpack` and of anything that starts from a vendor image: an MBR with disk
# signature 0x1a2b3c4d, p1 FAT32 `bootfs` (type 0x0c) at sector 8192, p2 ext4 `rootfs`
# (type 0x83) filling the rest. The root filesystem carries what real images carry and
# readers get wrong: a file capability, a setuid binary, a hard link, a device node,
# symlinks, files owned by other users and groups, an empty mount point.
#
# Deterministic where the tools allow: fixed disk signature, FAT volume id, ext4 UUID and
# hash seed, SOURCE_DATE_EPOCH / E2FSPROGS_FAKE_TIME for the filesystems' own times, and
# every inode's owner and times set explicitly with `debugfs` (so the result does not
# depend on who runs the script, or on the ctimes of the temporary source tree). Nothing
# here needs root: ownership, the capability and the device node are written into the
# ext4 image with `debugfs`, not through the kernel.
#
# Needs only: bash, coreutils (>= 8.31 for basenc), sfdisk (fdisk), dosfstools, mtools,
# e2fsprogs. (No `attr`/`setcap`: debugfs writes the xattrs.) Takes a few seconds.

set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 OUT.img [SIZE_MIB (default 256)]" >&2
    exit 2
fi
out=$1
size_mib=${2:-256}
if ! [[ $size_mib =~ ^[0-9]+$ ]] || ((size_mib < 128)); then
    echo "$0: SIZE_MIB must be a whole number of MiB, at least 128" >&2
    exit 2
fi

for tool in sfdisk mkfs.vfat mcopy mke2fs debugfs dd truncate touch; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$0: \`$tool\` is not installed (needs fdisk, dosfstools, mtools, e2fsprogs)" >&2
        exit 1
    fi
done

EPOCH=1700000000
export SOURCE_DATE_EPOCH=$EPOCH E2FSPROGS_FAKE_TIME=$EPOCH TZ=UTC LC_ALL=C
# mtools reads ~/.mtoolsrc and /etc/mtools.conf; no drive letters are used, and without
# this it refuses images whose geometry it does not like.
export MTOOLS_SKIP_CHECK=1

SIG=1a2b3c4d
BOOT_START=8192
BOOT_SECTORS=131072 # 64 MiB: enough clusters for FAT32 with 512-byte clusters
ROOT_START=$((BOOT_START + BOOT_SECTORS))
TOTAL_SECTORS=$((size_mib * 2048))
ROOT_SECTORS=$((TOTAL_SECTORS - ROOT_START))

work=$(mktemp -d "${TMPDIR:-/tmp}/make-test-base.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Deterministic pseudo-random bytes (no /dev/urandom): SHA-512 of "NAME-i" for i = 0, 1,
# ..., one small file per 64 bytes of output so a single `sha512sum` hashes them all.
pseudo_random() { # NAME BYTES
    local name=$1 bytes=$2 dir
    dir=$(mktemp -d "$work/rand.XXXXXX")
    local n=$(((bytes + 63) / 64)) i
    for ((i = 0; i < n; i++)); do
        printf '%s-%d' "$name" "$i" >"$dir/$i"
    done
    (cd "$dir" && seq 0 $((n - 1)) | xargs sha512sum) | cut -d' ' -f1 | tr -d '\n' | tr a-f A-F |
        basenc --base16 -d | head -c "$bytes"
    rm -rf "$dir"
}

# --- boot partition ----------------------------------------------------------------
boot="$work/boot"
mkdir -p "$boot/overlays"
cat >"$boot/config.txt" <<'EOF'
# For more options and information see
# http://rptl.io/configtxt
dtparam=audio=on
camera_auto_detect=1
display_auto_detect=1
auto_initramfs=1
dtoverlay=vc4-kms-v3d
max_framebuffers=2
disable_fw_kms_setup=1
arm_64bit=1
disable_overscan=1
arm_boost=1

[all]
EOF
printf 'console=serial0,115200 console=tty1 root=PARTUUID=%s-02 rootfstype=ext4 fsck.repair=yes rootwait\n' "$SIG" >"$boot/cmdline.txt"
# The boot files a Raspberry Pi OS bookworm image carries (`w4b validate --board` looks
# for the kernel and device tree of each board), with small fake contents: every kernel
# the firmware may pick (kernel.img: Pi 1/Zero; kernel7.img: Pi 2/3/Zero 2 W 32-bit;
# kernel7l.img: Pi 4 32-bit; kernel8.img: 64-bit; kernel_2712.img: Pi 5), the device
# trees of the boards w4b knows, the Pi 4 firmware and the Pi 1-3 bootloader.
pseudo_random kernel8 $((2 << 20)) >"$boot/kernel8.img"
pseudo_random kernel_2712 8192 >"$boot/kernel_2712.img"
pseudo_random kernel7l 8192 >"$boot/kernel7l.img"
pseudo_random kernel7 8192 >"$boot/kernel7.img"
pseudo_random kernel 8192 >"$boot/kernel.img"
for dtb in bcm2711-rpi-4-b bcm2712-rpi-5-b bcm2710-rpi-3-b bcm2710-rpi-3-b-plus \
    bcm2710-rpi-zero-2-w bcm2711-rpi-cm4; do
    pseudo_random "$dtb" 4096 >"$boot/$dtb.dtb"
done
pseudo_random start4 4096 >"$boot/start4.elf"
pseudo_random fixup4 1024 >"$boot/fixup4.dat"
pseudo_random bootcode 1024 >"$boot/bootcode.bin"
pseudo_random w1-gpio 1024 >"$boot/overlays/w1-gpio.dtbo"
pseudo_random i2c-gpio 1024 >"$boot/overlays/i2c-gpio.dtbo"
printf 'Overlays are device tree fragments applied by `dtoverlay=` lines in config.txt.\n' >"$boot/overlays/README"
printf 'Raspberry Pi reference 2024-11-19\nGenerated using pi-gen, https://github.com/RPi-Distro/pi-gen, stage2\n' >"$boot/issue.txt"
find "$boot" -exec touch -h -d "@$EPOCH" {} +

bootimg="$work/boot.img"
truncate -s $((BOOT_SECTORS * 512)) "$bootimg"
# `--invariant`: the label entry gets a fixed time instead of the wall clock (mkfs.fat
# ignores SOURCE_DATE_EPOCH). Raspberry Pi OS labels it in lowercase; mkfs.fat warns
# about that on stderr.
mkfs.vfat --invariant -F 32 -s 1 -S 512 -n bootfs -i 1A2B3C4D -h "$BOOT_START" "$bootimg" 2>&1 >/dev/null |
    { grep -v -i 'lowercase labels' || true; } >&2
# `-s -m`: recursive, keeping the source's (fixed) mtimes, also for directories (`mmd`
# would stamp the wall clock).
mcopy -s -m -i "$bootimg" "$boot"/* ::/

# --- root partition ----------------------------------------------------------------
root="$work/root"
if [[ -n "${ROOT_DIR:-}" ]]; then
# A real root filesystem (a Debian root from `mmdebstrap`, for the package tests):
# copied with its owners (run as root), given the Raspberry Pi OS fstab and the boot
# mount point, every time set to the epoch.
mkdir -p "$root"
cp -a "$ROOT_DIR/." "$root/"
mkdir -p "$root/boot/firmware"
cat >"$root/etc/fstab" <<EOF
proc            /proc           proc    defaults          0       0
PARTUUID=$SIG-01  /boot/firmware  vfat    defaults          0       2
PARTUUID=$SIG-02  /               ext4    defaults,noatime  0       1
EOF
find "$root" -exec touch -h -d "@$EPOCH" {} +
else
mkdir -p "$root"/{etc,home/pi,usr/bin,usr/lib,boot/firmware,dev,bin,lib,tmp,var/log}
cat >"$root/etc/fstab" <<EOF
proc            /proc           proc    defaults          0       0
PARTUUID=$SIG-01  /boot/firmware  vfat    defaults          0       2
PARTUUID=$SIG-02  /               ext4    defaults,noatime  0       1
EOF
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
pi:x:1000:1000:,,,:/home/pi:/bin/bash
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
shadow:x:42:
sudo:x:27:pi
nogroup:x:65534:
pi:x:1000:
EOF
cat >"$root/etc/shadow" <<'EOF'
root:*:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
pi:!:19000:0:99999:7:::
EOF
echo raspberrypi >"$root/etc/hostname"
printf 'Debian GNU/Linux 12 \\n \\l\n\n' >"$root/etc/issue"
printf '# ~/.bashrc\nalias ll="ls -l"\n' >"$root/home/pi/.bashrc"
pseudo_random ping 20000 >"$root/usr/bin/ping"
pseudo_random sudo 30000 >"$root/usr/bin/sudo"
pseudo_random busybox 50000 >"$root/usr/bin/busybox"
ln "$root/usr/bin/busybox" "$root/usr/bin/sh.busybox"
pseudo_random libc 100000 >"$root/usr/lib/libc.so.6"
# The unit that `systemctl enable ssh` links, as openssh-server ships it (bookworm keeps
# units in /usr/lib/systemd/system; /lib is the merged-/usr path to the same place).
mkdir -p "$root/usr/lib/systemd/system" "$root/etc/systemd/system/multi-user.target.wants"
printf '[Unit]\nDescription=OpenBSD Secure Shell server\nAfter=network.target auditd.service\n\n[Service]\nExecStartPre=/usr/sbin/sshd -t\nExecStart=/usr/sbin/sshd -D $SSHD_OPTS\nType=notify\nRestart=on-failure\n\n[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n' >"$root/usr/lib/systemd/system/ssh.service"
printf '[Unit]\nDescription=Getty on %%I\n\n[Service]\nExecStart=-/sbin/agetty -o "-p -- \\\\u" --noclear - $TERM\nType=idle\n\n[Install]\nWantedBy=getty.target\n' >"$root/usr/lib/systemd/system/getty@.service"
chmod 0644 "$root/usr/lib/systemd/system/ssh.service" "$root/usr/lib/systemd/system/getty@.service"
ln -s ../usr/bin/busybox "$root/bin/sh"
ln -s usr/lib "$root/lib64"
ln -s /proc/self/mounts "$root/etc/mtab"
chmod 0755 "$root/usr/bin/ping" "$root/usr/bin/busybox" "$root/usr/lib/libc.so.6"
chmod 4755 "$root/usr/bin/sudo"
chmod 0640 "$root/etc/shadow"
chmod 1777 "$root/tmp"
chmod 0700 "$root/home/pi"
chmod 0644 "$root/etc/fstab" "$root/etc/passwd" "$root/etc/group" "$root/etc/hostname" \
    "$root/etc/issue" "$root/home/pi/.bashrc"
find "$root" -exec touch -h -d "@$EPOCH" {} +

fi

rootimg="$work/root.img"
truncate -s $((ROOT_SECTORS * 512)) "$rootimg"
mke2fs -q -F -t ext4 -b 4096 -L rootfs \
    -U 0b0e0e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f \
    -E hash_seed=5a6b7c8d-0b0e-4e0f-9a2b-1c3d4e5f6a7b,root_owner=0:0 \
    -d "$root" "$rootimg"

if [[ -z "${ROOT_DIR:-}" ]]; then
# Owners, times, the capability and the device node, written into the image directly.
cmds="$work/debugfs.cmds"
{
    # Every inode the source tree made: root-owned, one time for everything.
    (cd "$root" && find . -mindepth 1) | sed 's|^\.||' | while IFS= read -r p; do
        printf 'sif "%s" uid 0\nsif "%s" gid 0\n' "$p" "$p"
    done
    printf 'sif "/home/pi" uid 1000\nsif "/home/pi" gid 1000\n'
    printf 'sif "/home/pi/.bashrc" uid 1000\nsif "/home/pi/.bashrc" gid 1000\n'
    printf 'sif "/etc/shadow" gid 42\n'
    # cap_net_raw+ep as a v2 vfs_cap_data: magic_etc 0x02000001 (revision 2, effective),
    # permitted bit 13 (CAP_NET_RAW), nothing inheritable, no high words.
    printf 'ea_set -f %s /usr/bin/ping security.capability\n' "$work/cap"
    printf 'ea_set /usr/bin/busybox user.comment test-base\n'
    # debugfs's mknod takes a name in the current directory, not a path.
    printf 'cd /dev\nmknod null c 1 3\nmknod loop0 b 7 0\ncd /\n'
    printf 'sif /dev/null mode 020666\nsif /dev/loop0 mode 060660\nsif /dev/loop0 gid 6\n'
    (cd "$root" && find . -mindepth 1) | sed 's|^\.||' | cat - <(printf '/\n/lost+found\n/dev/null\n/dev/loop0\n') |
        while IFS= read -r p; do
            for field in atime mtime ctime crtime; do
                printf 'sif "%s" %s @%d\n' "$p" "$field" "$EPOCH"
            done
        done
} >"$cmds"
printf '\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00' >"$work/cap"
debugfs -w -f "$cmds" "$rootimg" >"$work/debugfs.log" 2>&1
if grep -E -i 'error|not found|invalid|usage' "$work/debugfs.log" | grep -v '^debugfs ' >&2; then
    echo "$0: debugfs reported errors (above)" >&2
    exit 1
fi

fi

# --- the disk ----------------------------------------------------------------------
rm -f "$out"
truncate -s $((TOTAL_SECTORS * 512)) "$out"
sfdisk --quiet --no-reread --no-tell-kernel "$out" <<EOF
label: dos
label-id: 0x$SIG
unit: sectors

start=$BOOT_START, size=$BOOT_SECTORS, type=c
start=$ROOT_START, size=$ROOT_SECTORS, type=83
EOF
dd if="$bootimg" of="$out" bs=1M seek=$((BOOT_START * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
dd if="$rootimg" of="$out" bs=1M seek=$((ROOT_START * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
