# The guest side of `w4b test` (src/vmtest/payload.rs appends the calls for one spec).
#
# Runs inside the booted image as a transient service (`systemd-run --no-block`), started
# from the kernel command line after the boot transaction, so it never holds the boot
# up. It waits for the system to settle, runs the checks and writes one record per
# check to the virtio-serial port `org.w4b.test.results`, never to the console:
#
#   hello <uptime>
#   result <id> <exit status> <start uptime> <end uptime> <stdout, base64> <stderr, base64>
#   archive <id> <exit status> <start uptime> <end uptime> <tar archive, base64> <stderr, base64>
#   done
#
# fields separated by tabs. It judges nothing: the host compares every record with the
# spec. POSIX sh and coreutils only (both in every Debian image), as root.

set -u
H=/run/w4b-test
T=$H/tmp
mkdir -p "$T"
LIMIT=65536

# The results port: its character device is named in sysfs (udev's
# /dev/virtio-ports/ link may not exist yet, or not at all on a system without udev).
port=
i=0
while [ -z "$port" ] && [ "$i" -lt 300 ]; do
    for n in /sys/class/virtio-ports/*/name; do
        [ -r "$n" ] || continue
        if [ "$(cat "$n")" = org.w4b.test.results ]; then
            port=/dev/$(basename "$(dirname "$n")")
        fi
    done
    [ -n "$port" ] && [ -c "$port" ] && break
    port=
    i=$((i + 1))
    sleep 0.1
done
if [ -z "$port" ]; then
    echo "w4b-test: the results port org.w4b.test.results did not appear" >/dev/console
    exit 1
fi
exec 3>"$port"

now() { cut -d' ' -f1 /proc/uptime; }

# emit ID STATUS START: the record of the check whose output is in $T/out and $T/err.
emit() {
    printf 'result\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(now)" \
        "$(head -c "$LIMIT" "$T/out" | base64 -w0)" \
        "$(head -c "$LIMIT" "$T/err" | base64 -w0)" >&3
}

printf 'hello\t%s\n' "$(now)" >&3

# check_boot ID_STATE ID_TARGET DEADLINE: waits until the boot transaction is over (at
# most until DEADLINE seconds of uptime), then asks whether multi-user.target is active.
check_boot() {
    s=$(now)
    up=${s%.*}
    left=$(($3 - up))
    [ "$left" -lt 10 ] && left=10
    timeout "$left" systemctl is-system-running --wait >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -eq 124 ]; then
        systemctl is-system-running >"$T/out" 2>>"$T/err"
    fi
    if [ "$rc" -ne 0 ]; then
        {
            echo "# systemctl list-jobs"
            systemctl list-jobs --no-pager --full
            echo "# systemctl --failed"
            systemctl list-units --state=failed --no-pager --full
        } >>"$T/err" 2>&1
    fi
    emit "$1" "$rc" "$s"
    s=$(now)
    systemctl is-active multi-user.target >"$T/out" 2>"$T/err"
    rc=$?
    emit "$2" "$rc" "$s"
}

# analyze ID_ANALYZE ID_BLAME: the boot-time breakdown.
analyze() {
    s=$(now)
    systemd-analyze --no-pager >"$T/out" 2>"$T/err"
    rc=$?
    # When multi-user.target became active, in the manager's monotonic microseconds,
    # beside the start of userspace: `systemd-analyze` names only the default target, and
    # under `systemd.unit=` it names none.
    printf 'w4b-target multi-user.target %s %s\n' \
        "$(systemctl show -P ActiveEnterTimestampMonotonic multi-user.target)" \
        "$(systemctl show -P UserspaceTimestampMonotonic)" >>"$T/out" 2>>"$T/err"
    emit "$1" "$rc" "$s"
    s=$(now)
    systemd-analyze blame --no-pager 2>"$T/err" | head -n 10 >"$T/out"
    emit "$2" 0 "$s"
}

# failed_units ID: every failed unit, and the status (with its last log lines) of each.
failed_units() {
    s=$(now)
    systemctl list-units --state=failed --plain --no-legend --no-pager --full >"$T/out" 2>"$T/err"
    rc=$?
    for u in $(cut -d' ' -f1 "$T/out"); do
        systemctl status --no-pager --full -n 15 "$u" >>"$T/err" 2>&1
    done
    emit "$1" "$rc" "$s"
}

# unit_active ID UNIT
unit_active() {
    s=$(now)
    systemctl is-active "$2" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        systemctl status --no-pager --full -n 15 "$2" >>"$T/err" 2>&1
    fi
    emit "$1" "$rc" "$s"
}

# run_command ID TIMEOUT: runs $H/commands/ID with `sh` from `/`.
run_command() {
    s=$(now)
    (cd / && timeout --kill-after=5 "$2" sh "$H/commands/$1") </dev/null >"$T/out" 2>"$T/err"
    emit "$1" "$?" "$s"
}

# archive_add PATH LIST: PATH into the list `flat` (the entry alone) or `deep` (with
# everything below it), and each of its parent directories into `flat`, so that every
# path the host asks about has its own entry. Nothing is followed: below a symlinked
# parent (`/lib` -> `usr/lib`) only the link itself goes in, as an ext4 image holds it.
# A path that does not exist adds nothing.
archive_add() {
    [ -e "$1" ] || [ -L "$1" ] || return 0
    rest=${1#/}
    prefix=
    while [ -n "$rest" ]; do
        c=${rest%%/*}
        case $rest in
        */*) rest=${rest#*/} ;;
        *) rest= ;;
        esac
        prefix=$prefix/$c
        [ -n "$rest" ] || break
        echo "$prefix" >>"$T/flat"
        [ -L "$prefix" ] && return
    done
    echo "$1" >>"$T/$2"
}

# hive_checklist ID: a tar archive of exactly the files the hive checklist reads
# (src/validate/hive.rs), sent whole for the host to judge; at most ARCHIVE_LIMIT bytes
# (status 3 and nothing sent above it). The host reads it with w4b's own tar reader.
ARCHIVE_LIMIT=67108864
hive_checklist() {
    s=$(now)
    : >"$T/flat"
    : >"$T/deep"
    : >"$T/err"
    for p in /etc/hostname /etc/hosts /etc/passwd /etc/group /etc/shadow /etc/machine-id \
        /etc/nftables.conf /etc/default/prometheus-node-exporter /etc/ssh; do
        archive_add "$p" flat
    done
    for p in /etc/ssh/sshd_config.d /etc/wireguard /etc/NetworkManager/system-connections \
        /etc/w4b /etc/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
        archive_add "$p" deep
    done
    # The administrator the image records, and its home as /etc/passwd has it.
    user=$(sed -n 's/^user=//p' /etc/w4b/system/admin 2>/dev/null | head -n 1)
    if [ -n "$user" ]; then
        home=$(while IFS=: read -r n _ _ _ _ h _; do
            [ "$n" = "$user" ] && echo "$h"
        done </etc/passwd | head -n 1)
        case $home in
        /?*)
            archive_add "$home" flat
            archive_add "$home/.ssh" deep
            ;;
        esac
    fi
    sort -u -o "$T/flat" "$T/flat"
    sort -u -o "$T/deep" "$T/deep"
    tar -c -f "$T/checklist.tar" --numeric-owner \
        --no-recursion -T "$T/flat" --recursion -T "$T/deep" 2>>"$T/err"
    rc=$?
    size=$(wc -c <"$T/checklist.tar" 2>/dev/null || echo 0)
    if [ "$size" -gt "$ARCHIVE_LIMIT" ]; then
        echo "the archive is $size bytes, above the bound of $ARCHIVE_LIMIT" >>"$T/err"
        rc=3
        : >"$T/checklist.tar"
    fi
    # Streamed, not held in a variable: the archive is a few MiB.
    printf 'archive\t%s\t%s\t%s\t%s\t' "$1" "$rc" "$s" "$(now)" >&3
    base64 -w0 "$T/checklist.tar" >&3
    printf '\t%s\n' "$(head -c "$LIMIT" "$T/err" | base64 -w0)" >&3
    rm -f "$T/checklist.tar"
}

finish() {
    printf 'done\n' >&3
}

# --- the calls for this spec ---------------------------------------------------------
