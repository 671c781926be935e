# The guest side of `w4b test` (src/vmtest/payload.rs appends the calls for one spec).
#
# Runs inside the booted image as a transient service (`systemd-run --no-block`), started
# from the kernel command line after the boot transaction, so it never holds the boot
# up. It waits for the system to settle, runs the checks and writes one record per
# check to the virtio-serial port `org.w4b.test.results`, never to the console:
#
#   hello <uptime>
#   result <id> <exit status> <start uptime> <end uptime> <stdout, base64> <stderr, base64>
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

finish() {
    printf 'done\n' >&3
}

# --- the calls for this spec ---------------------------------------------------------
