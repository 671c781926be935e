#!/usr/bin/env bash
# make-vm-image.sh OUT.img.zst MIRROR
#
# Builds the bootable fixture of the `w4b test` integration tests (tests/it/vmtest.rs): a
# real, minimal Debian bookworm arm64 system that boots under `qemu-system-aarch64 -M
# virt` with its own kernel and initramfs, as a disk image compressed with zstd.
#
# - `mmdebstrap --variant=minbase` plus systemd as init, udev, Debian's generic arm64
#   kernel (`linux-image-arm64`) and `initramfs-tools`, from MIRROR (the host's own
#   Debian mirror, read by the caller from its apt sources; never hard-coded here);
#   documentation, man pages and locales are left out to keep the image small.
# - An MBR disk of 2 GiB (sparse) with disk signature 0x5734b007 and one ext4 partition
#   at 1 MiB, filled by `mkfs.ext4 -d`; `/etc/fstab` names it by PARTUUID (5734b007-01),
#   as a Raspberry Pi image does. There is no boot partition: the VM test boots the
#   kernel and initramfs of `/boot` directly.
# - A fixed hostname, an empty machine-id (systemd makes one at boot, as on a fresh
#   image), no root password.
#
# Needs root (mmdebstrap into a directory, `chroot` for the kernel's maintainer scripts),
# qemu-user with binfmt_misc for arm64, mmdebstrap, e2fsprogs, fdisk and zstd. Takes a
# few minutes, most of it running arm64 maintainer scripts under emulation.

set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 OUT.img.zst MIRROR" >&2
    exit 2
fi
out=$1
mirror=$2
for tool in mmdebstrap mkfs.ext4 sfdisk zstd truncate dd; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$0: \`$tool\` is not installed (needs mmdebstrap, e2fsprogs, fdisk, zstd)" >&2
        exit 1
    fi
done

SIG=5734b007
DISK_MIB=2048
ROOT_START=2048 # sectors: 1 MiB
export LC_ALL=C TZ=UTC SOURCE_DATE_EPOCH=1700000000

work=$(mktemp -d "${TMPDIR:-/tmp}/make-vm-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"

mmdebstrap --quiet --arch=arm64 --variant=minbase \
    --include=systemd-sysv,udev,linux-image-arm64,initramfs-tools,zstd \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="echo w4b-vmtest > \"\$1/etc/hostname\"" \
    --customize-hook="printf 'PARTUUID=$SIG-01  /  ext4  defaults,noatime  0  1\n' > \"\$1/etc/fstab\"" \
    --customize-hook='rm -f "$1/etc/machine-id" "$1/var/lib/dbus/machine-id"; : > "$1/etc/machine-id"' \
    --customize-hook='passwd --root "$1" -d root' \
    --customize-hook='rm -rf "$1/var/cache/apt/"* "$1/var/lib/apt/lists/"*' \
    bookworm "$root" "$mirror"

disk="$work/disk.img"
part="$work/root.ext4"
root_sectors=$((DISK_MIB * 2048 - ROOT_START))
truncate -s "${DISK_MIB}M" "$disk"
printf 'label: dos\nlabel-id: 0x%s\n%s,%s,83\n' "$SIG" "$ROOT_START" "$root_sectors" | sfdisk --quiet "$disk"
truncate -s "$((root_sectors * 512))" "$part"
mkfs.ext4 -q -L rootfs -d "$root" "$part"
dd if="$part" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
rm -f "$part"

tmp_out="$out.tmp.$$"
zstd -q -T0 -6 -f -o "$tmp_out" "$disk"
mv -f "$tmp_out" "$out"
