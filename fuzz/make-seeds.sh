#!/usr/bin/env bash
# Regenerates the seed corpus in fuzz/seeds/<target>/ with the reference tools:
# sfdisk (MBR, GPT), mkfs.vfat + mtools (FAT12/16/32), mke2fs -d (ext4, ext2-style block
# maps, inline data, htree), GNU tar (ustar, pax with xattrs, GNU long names; gzip, xz and
# zstd), and the repository's own definitions for the loader.
#
# Filesystem images are cut after their last non-zero byte: the fat and ext4 targets read
# an input as the start of a partition whose remaining bytes are zero, so the cut images
# are the same filesystems at a fraction of the size.
#
# Times, owners and names are fixed, but mkfs tools write their own UUIDs and tar/gzip
# their own headers, so regenerated seeds differ in bytes from the committed ones; what
# matters is that they are valid.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
seeds="$here/seeds"
for tool in sfdisk mkfs.vfat mcopy mmd mke2fs e2fsck tar gzip xz zstd setfattr python3 dpkg-deb; do
    command -v "$tool" >/dev/null || { echo "make-seeds.sh: \`$tool\` is missing" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TZ=UTC SOURCE_DATE_EPOCH=1700000000
stamp=@1700000000

rm -rf "$seeds"
mkdir -p "$seeds"/{defs,mbr,gpt,fat,ext4,tar,deb,apt,chunks,placement}

# Drops the trailing zero bytes of a file (keeps at least one byte).
trim() {
    python3 - "$1" <<'EOF'
import sys
p = sys.argv[1]
b = open(p, 'rb').read()
open(p, 'wb').write(b[:max(len(b.rstrip(b'\0')), 1)])
EOF
}

# A small tree: nested directories, a long name, an empty file, a multi-block file, a
# fast (short) and a slow (long) symlink.
tree="$work/tree"
mkdir -p "$tree/etc/ssh" "$tree/boot/overlays" "$tree/usr/share/doc/w4b"
printf 'north\n' >"$tree/etc/hostname"
printf 'PermitRootLogin no\n' >"$tree/etc/ssh/sshd_config"
printf 'console=serial0,115200 root=PARTUUID=1a2b3c4d-02 rootwait\n' >"$tree/boot/cmdline.txt"
printf '[all]\narm_64bit=1\n' >"$tree/boot/config.txt"
: >"$tree/boot/overlays/README"
head -c 3000 /dev/zero | tr '\0' 'w' >"$tree/usr/share/doc/w4b/A Long File Name For VFAT.txt"
ln -s ../usr/share/doc/w4b "$tree/etc/w4b-doc"
ln -s "/usr/share/doc/w4b/$(printf 'x%.0s' $(seq 1 80))" "$tree/etc/long-link"
find "$tree" -exec touch -h -d "$stamp" {} +

# --- MBR -------------------------------------------------------------------------------
# 64 KiB disks of 128 sectors; partitions placed by hand (no 1 MiB alignment).
mbr() {
    local name=$1
    truncate -s 64K "$work/$name"
    sfdisk --quiet --no-reread --no-tell-kernel "$work/$name" >/dev/null
    cp "$work/$name" "$seeds/mbr/$name"
}
mbr raspberry-pi.img <<'EOF'
label: dos
label-id: 0x1a2b3c4d
unit: sectors
start=8, size=40, type=c, bootable
start=48, size=80, type=83
EOF
mbr four-primaries.img <<'EOF'
label: dos
label-id: 0x00c0ffee
unit: sectors
start=2, size=20, type=e
start=22, size=20, type=b
start=42, size=20, type=7
start=62, size=66, type=83
EOF
mbr extended-logicals.img <<'EOF'
label: dos
label-id: 0x0badcafe
unit: sectors
start=4, size=20, type=c, bootable
start=24, size=100, type=5
start=26, size=20, type=83
start=48, size=30, type=82
start=80, size=40, type=83
EOF

# --- GPT -------------------------------------------------------------------------------
gpt() {
    local name=$1
    truncate -s 64K "$work/$name"
    sfdisk --quiet --no-reread --no-tell-kernel "$work/$name" >/dev/null
    cp "$work/$name" "$seeds/gpt/$name"
}
gpt two-partitions.img <<'EOF'
label: gpt
label-id: 5C6D7E8F-1A2B-4C3D-8E9F-0A1B2C3D4E5F
unit: sectors
first-lba: 34
start=34, size=20, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="boot", uuid=11111111-2222-4333-8444-555555555555
start=54, size=40, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="rootfs", attrs="LegacyBIOSBootable"
EOF
gpt short-table.img <<'EOF'
label: gpt
label-id: 0F0E0D0C-0B0A-4908-8706-050403020100
unit: sectors
table-length: 4
first-lba: 3
start=3, size=50, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="data"
start=60, size=60, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, attrs="RequiredPartition GUID:63"
EOF

# --- FAT -------------------------------------------------------------------------------
fat() {
    local name=$1 size_k=$2
    shift 2
    mkfs.vfat -C -i 1a2b3c4d -n BOOT "$@" "$work/$name" "$size_k" >/dev/null
    MTOOLS_SKIP_CHECK=1 mcopy -s -p -m -i "$work/$name" "$tree/boot" "$tree/usr" ::/
    MTOOLS_SKIP_CHECK=1 mmd -i "$work/$name" ::/empty
    trim "$work/$name"
    cp "$work/$name" "$seeds/fat/$name"
}
fat fat12.img 256 -F 12 -s 1
fat fat16.img 4096 -F 16 -s 1 -r 64
# The smallest FAT32 volume: 65 525 clusters of 512 bytes; one FAT keeps the data region
# (and so the cut image) near the start.
fat fat32.img 34000 -F 32 -s 1 -f 1 -R 8

# --- ext4 ------------------------------------------------------------------------------
ext4() {
    local name=$1 source=$2 size_k=$3 inodes=$4
    shift 4
    mke2fs -q -F -E root_owner=0:0 -U 0f1e2d3c-4b5a-4968-8776-655443322110 -L root \
        -b 1024 -N "$inodes" -m 0 -d "$source" "$@" "$work/$name" "$size_k" >/dev/null
    # `mke2fs -d` writes linear directories; `e2fsck -D` indexes them (exit 1: "fixed").
    if [ "${index:-0}" = 1 ]; then
        e2fsck -fyD "$work/$name" >/dev/null 2>&1 || [ $? -eq 1 ]
    fi
    e2fsck -fn "$work/$name" >/dev/null
    trim "$work/$name"
    cp "$work/$name" "$seeds/ext4/$name"
}
xtree="$work/xtree"
cp -a "$tree" "$xtree"
setfattr -n user.w4b.note -v "a small value" "$xtree/etc/hostname" 2>/dev/null || true
setfattr -n user.w4b.big -v "$(head -c 300 /dev/zero | tr '\0' 'v')" "$xtree/etc/ssh/sshd_config" 2>/dev/null || true
ext4 ext4.img "$xtree" 512 32 -t ext4 -O ^has_journal
ext4 ext4-inline.img "$tree" 512 32 -t ext4 -O ^has_journal,inline_data
ext4 ext2-blockmap.img "$tree" 512 32 -t ext2
# A directory of more than one block gets an htree index.
htree="$work/htree"
mkdir -p "$htree/many"
for i in $(seq 1 60); do printf '%s\n' "$i" >"$htree/many/a-file-with-a-rather-long-name-$i"; done
find "$htree" -exec touch -h -d "$stamp" {} +
index=1 ext4 ext4-htree.img "$htree" 512 96 -t ext4 -O ^has_journal,dir_index

# --- tar -------------------------------------------------------------------------------
ttree="$work/ttree"
mkdir -p "$ttree/sm-1.0/sensor_manager"
printf "print('hi')\n" >"$ttree/sm-1.0/sensor_manager/__main__.py"
printf 'read me\n' >"$ttree/sm-1.0/README"
ln -s sensor_manager "$ttree/sm-1.0/current"
ln "$ttree/sm-1.0/README" "$ttree/sm-1.0/README.hardlink"
mkdir -p "$ttree/sm-1.0/$(printf 'd%.0s' $(seq 1 70))/$(printf 'e%.0s' $(seq 1 70))"
printf 'deep\n' >"$ttree/sm-1.0/$(printf 'd%.0s' $(seq 1 70))/$(printf 'e%.0s' $(seq 1 70))/file"
setfattr -n user.w4b.note -v note "$ttree/sm-1.0/README" 2>/dev/null || true
find "$ttree" -exec touch -h -d "$stamp" {} +
tarc() {
    local name=$1 format=$2
    shift 2
    tar -C "$ttree" --format="$format" --sort=name --owner=0 --group=0 --numeric-owner \
        --mtime="$stamp" -b 1 "$@" -cf "$seeds/tar/$name" sm-1.0
}
tarc ustar.tar ustar --exclude='dddd*'
tarc gnu.tar gnu
tarc pax.tar pax --xattrs --pax-option=delete=atime,delete=ctime
tar -C "$ttree" --format=ustar --exclude='dddd*' --owner=0 --group=0 --mtime="$stamp" -b 1 \
    -cf - sm-1.0 | gzip -9n >"$seeds/tar/release.tar.gz"
tar -C "$ttree" --format=ustar --exclude='dddd*' --owner=0 --group=0 --mtime="$stamp" -b 1 \
    -cf - sm-1.0 | xz -9 >"$seeds/tar/release.tar.xz"
tar -C "$ttree" --format=ustar --exclude='dddd*' --owner=0 --group=0 --mtime="$stamp" -b 1 \
    -cf - sm-1.0 | zstd -19 -q >"$seeds/tar/release.tar.zst"

# --- deb -------------------------------------------------------------------------------
# A small package with maintainer scripts, conffiles and md5sums, in each compression
# dpkg-deb writes; then versions and relationship fields, one per line.
pkg="$work/pkg"
mkdir -p "$pkg/DEBIAN" "$pkg/etc/w4b" "$pkg/usr/share/doc/w4b-seed"
printf 'threshold = 3\n' >"$pkg/etc/w4b/seed.conf"
printf 'seed\n' >"$pkg/usr/share/doc/w4b-seed/README"
cat >"$pkg/DEBIAN/control" <<'EOF'
Package: w4b-seed
Version: 1:2.3~rc1-0+deb12u1
Architecture: arm64
Maintainer: W4B <w4b@example.org>
Depends: libc6 (>= 2.36), adduser | passwd, python3:any
Pre-Depends: init-system-helpers (>= 1.54~)
Description: a seed package
 with a continuation line
 .
 and a paragraph break.
EOF
printf '/etc/w4b/seed.conf\n' >"$pkg/DEBIAN/conffiles"
printf '#!/bin/sh\nset -e\nexit 0\n' >"$pkg/DEBIAN/postinst"
chmod 0755 "$pkg/DEBIAN/postinst"
(cd "$pkg" && find etc usr -type f | sort | xargs md5sum >DEBIAN/md5sums)
find "$pkg" -exec touch -h -d "$stamp" {} +
for z in xz gzip zstd none; do
    dpkg-deb --root-owner-group -Z"$z" --build "$pkg" "$seeds/deb/seed-$z.deb" >/dev/null
done
cat >"$seeds/deb/versions.txt" <<'EOF'
1:2.36-9+deb12u4
0:1:2-3
2.0~rc1
1.0+dfsg-1~bpo12+1
libc6 (>= 2.36), adduser | passwd, python3:any
foo [amd64 !arm64] <!nocheck>, bar (<< 2:1.0-1) | baz:native
EOF

# --- apt -------------------------------------------------------------------------------
# A Release payload, and a Packages index (plain, xz and gzip) whose packages depend on
# each other through versions, alternatives and a virtual package.
cat >"$seeds/apt/Packages" <<'EOF'
Package: w4b-hive
Version: 1.0-1
Architecture: arm64
Depends: libw4b (>= 1.0), mail-transport-agent | w4b-mta
Pre-Depends: w4b-base
Filename: pool/main/w/w4b-hive/w4b-hive_1.0-1_arm64.deb
Size: 1000
SHA256: 0000000000000000000000000000000000000000000000000000000000000001

Package: libw4b
Version: 1.2-1
Architecture: arm64
Multi-Arch: same
Source: w4b (1.2-1)
Filename: pool/main/w/w4b/libw4b_1.2-1_arm64.deb
Size: 500
SHA256: 0000000000000000000000000000000000000000000000000000000000000002

Package: w4b-mta
Version: 3
Architecture: all
Provides: mail-transport-agent
Filename: pool/main/w/w4b-mta/w4b-mta_3_all.deb
Size: 300
SHA256: 0000000000000000000000000000000000000000000000000000000000000003

Package: w4b-base
Version: 2:0.1
Architecture: arm64
Essential: yes
Priority: required
Filename: pool/main/w/w4b-base/w4b-base_0.1_arm64.deb
Size: 200
SHA256: 0000000000000000000000000000000000000000000000000000000000000004
EOF
xz -9 <"$seeds/apt/Packages" >"$seeds/apt/Packages.xz"
gzip -9n <"$seeds/apt/Packages" >"$seeds/apt/Packages.gz"
{
    printf 'Origin: W4B\nSuite: bookworm\nCodename: bookworm\nDate: Sat, 10 Jun 2023 00:00:00 UTC\n'
    printf 'Valid-Until: Sat, 17 Jun 2023 00:00:00 UTC\nArchitectures: arm64 all\nComponents: main\n'
    printf 'Acquire-By-Hash: yes\nSHA256:\n'
    for f in Packages Packages.xz Packages.gz; do
        printf ' %s %s main/binary-arm64/%s\n' "$(sha256sum <"$seeds/apt/$f" | cut -d' ' -f1)" \
            "$(stat -c %s "$seeds/apt/$f")" "$f"
    done
} >"$seeds/apt/Release"

# --- definitions -----------------------------------------------------------------------
# The shipped workspace's definitions, the hostile-definition and hive corpora of the
# integration tests (one file each), and `w4b.yaml`.
cp "$repo/w4b.yaml" "$seeds/defs/w4b.yaml"
find "$repo/defs" -name '*.yaml' | sort | while read -r f; do
    rel=${f#"$repo/defs/"}
    cp "$f" "$seeds/defs/${rel//\//-}"
done
find "$repo/tests/defs-corpus" -name '*.yaml' | sort | while read -r f; do
    rel=${f#"$repo/tests/defs-corpus/"}
    cp "$f" "$seeds/defs/corpus-${rel//\//-}"
done
for f in "$repo"/tests/hive-corpus/*.yaml; do
    cp "$f" "$seeds/defs/hive-$(basename "$f")"
done

# --- chunk indexes ---------------------------------------------------------------------
# Written from the format in docs/cache-format.md (the digests need not name real chunks:
# the decoder checks structure, the store checks names): a fixed-size index with a short
# last chunk and a flat BLAKE3, a variable-length frame list with a trailer and both flat
# digests, and an empty output.
python3 - "$seeds/chunks" <<'EOF'
import struct, sys
out = sys.argv[1]
def index(flags, chunk_size, lens, flats=()):
    b = b"W4BIDX\0\x01" + struct.pack("<IIQQ", flags, chunk_size, sum(lens), len(lens))
    for f in flats:
        b += f
    for i, n in enumerate(lens):
        b += bytes([i + 1]) * 32 + struct.pack("<I", n)
    return b
seeds = {
    "fixed.idx": index(1, 1 << 20, [1 << 20, 1 << 20, 4096], [b"\xaa" * 32]),
    "frames.idx": index(7, 0, [4000, 123, 9000, 77], [b"\xbb" * 32, b"\xcc" * 32]),
    "empty.idx": index(0, 1 << 20, []),
}
for name, b in seeds.items():
    open(f"{out}/{name}", "wb").write(b)
EOF

# --- placement -------------------------------------------------------------------------
# Structured (`arbitrary`) inputs: any bytes decode to bins and items, so the seeds are a
# few fixed pseudo-random byte strings of growing length (SHA-256 in counter mode).
python3 - "$seeds/placement" <<'EOF'
import hashlib, sys
for n in (64, 512, 2048, 8192):
    out = b''.join(hashlib.sha256(b'w4b placement seed %d %d' % (n, i)).digest() for i in range(n // 32))
    open('%s/random-%d' % (sys.argv[1], n), 'wb').write(out)
EOF

du -sh "$seeds"/* | sed 's|'"$seeds"'/||'
