#!/bin/bash
# The test's part inside a QEMU guest, run by tests/qemu/init chrooted into
# the host's / (shared read-only over 9p). Environment from the init:
# MIG_ROLE (host1 or host2), MIG_ADDR, MIG_PEER, MIG_PEERNAME, MIG_SHARED
# (the writable share, the same path as on the test host), MIG_BUSYBOX (a
# static busybox, for ping).
#
# Both guests start their agent with the provisioning's
# vagrant/setup-agent.sh. host1 then starts a 16 MiB workload, waits for
# host2's agent, and runs `migrate <pid> --to host2`; host2 checks that the
# process runs there (same program, ticks going on from where they were,
# never restarted) and that every byte of its memory is intact (the
# workload's own verify, asked with SIGUSR1). They talk through files in
# the share, each written whole (by rename); every wait is bounded.
# ROLE.result gets "PASS ..." or "FAIL ..."; the exit status says the same.
set -u
role=$MIG_ROLE
peername=$MIG_PEERNAME
sh=$MIG_SHARED
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=$root/target/debug
mib=16
pages=$((mib * 256))

up() { cut -d' ' -f1 /proc/uptime; }
log() { echo "[$role $(up)] $*"; }
# put NAME TEXT: writes $sh/NAME whole.
put() { printf '%s\n' "$2" > "$sh/.$1.tmp" && mv "$sh/.$1.tmp" "$sh/$1"; }
fail() {
    log "FAIL: $*"
    put "$role.result" "FAIL $role: $*"
    exit 1
}
# wait_for SECS COMMAND...: runs COMMAND every 0.2 s until it succeeds,
# at most SECS seconds; fails the test if another side failed first.
wait_for() {
    local secs=$1 i=0
    shift
    while ! "$@"; do
        i=$((i + 1))
        [ $i -le $((secs * 5)) ] || return 1
        local other
        for other in host1 host2; do
            [ "$other" != "$role" ] || continue
            if [ -f "$sh/$other.result" ] && grep -q '^FAIL' "$sh/$other.result"; then
                fail "stopped: $(cat "$sh/$other.result")"
            fi
        done
        sleep 0.2
    done
}
has() { [ -f "$sh/$1" ]; }
out_has() { grep -q "$1" "$sh/workload.out" 2>/dev/null; }
last_tick() { awk '$1 == "tick" { n = $2 } END { print n + 0 }' "$sh/workload.out"; }

log "kernel $(uname -r), chrooted into the host's /, binaries from $bin"
put "$role.booted" "$(up)"

# The provisioning's agent set-up, as on any host of the cluster.
if ! MIGRATE_CREDS=$sh/cluster MIGRATE_BIN=$bin \
    "$root/vagrant/setup-agent.sh" "$role" "$MIG_ADDR" "$peername=$MIG_PEER"; then
    fail "setup-agent.sh failed (agent log: $role/migrate-agent.log)"
fi
put "$role.agent-ready" "$(up)"
log "agent ready"

if [ "$role" = host1 ]; then
    "$bin/workload" --mib $mib --tick-ms 20 </dev/null >"$sh/workload.out" 2>"$sh/workload.err" &
    wpid=$!
    wait_for 120 out_has "^ready $mib" || fail "the workload did not get ready: $(tail -3 "$sh/workload.err")"
    wait_for 60 has host2.agent-ready || fail "host2's agent did not come up within 60 s"
    # The link first.
    "$MIG_BUSYBOX" ping -c 1 -w 10 "$MIG_PEER" ||
        fail "no answer to ping from $peername ($MIG_PEER) over the guests' link"
    log "workload pid $wpid ready at tick $(last_tick); pre-flight:"
    "$bin/migrate" check "$wpid" 2>&1
    start=$(date +%s.%N)
    timeout 180 "$bin/migrate" "$wpid" --to "$peername" >"$sh/migrate.out" 2>&1
    rc=$?
    end=$(date +%s.%N)
    cat "$sh/migrate.out"
    [ $rc -eq 0 ] || fail "migrate exited with $rc: $(tail -5 "$sh/migrate.out")"
    newpid=$(sed -n 's/^migrated .*(pid \([0-9]*\)).*/\1/p' "$sh/migrate.out" | head -1)
    [ -n "$newpid" ] || fail "no pid in migrate's output: $(cat "$sh/migrate.out")"
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
    put host1.migrated "$newpid $wpid $secs"
    log "migrated in $secs s (wall clock of migrate) to $peername as pid $newpid"
    # The original must be gone here (killed once the last page moved).
    gone() {
        [ ! -e /proc/$wpid ] || [ "$(awk '{ print $3 }' /proc/$wpid/stat 2>/dev/null)" = Z ] ||
            [ ! -e /proc/$wpid/stat ]
    }
    wait_for 20 gone || fail "the original (pid $wpid) still runs on host1 after the migration"
    wait $wpid 2>/dev/null
    wait_for 200 has host2.result || fail "no result from host2 within 200 s"
    put host1.result "PASS host1: migrated pid $wpid in $secs s; original gone"
    exit 0
fi

# host2: the process must arrive, run, and keep its memory.
wait_for 240 has host1.migrated || fail "host1 did not report a migration within 240 s"
read -r pid oldpid secs <"$sh/host1.migrated"
log "host1 migrated its pid $oldpid here as pid $pid in $secs s"
[ -e /proc/$pid ] || fail "pid $pid does not exist on host2"
exe=$(readlink /proc/$pid/exe)
[ "$exe" = "$bin/workload" ] || fail "pid $pid on host2 runs '$exe', not $bin/workload"
state=$(awk '{ print $3 }' /proc/$pid/stat)
case $state in
    R | S) ;;
    *) fail "pid $pid on host2 is in state $state" ;;
esac
at=$(last_tick)
ticked() { [ "$(last_tick)" -ge $((at + 5)) ]; }
wait_for 60 ticked || fail "pid $pid does not tick on host2 (stuck at tick $at)"
log "pid $pid ticks on host2: tick $at -> $(last_tick)"
before=$(grep -c '^verify' "$sh/workload.out")
kill -USR1 "$pid" || fail "cannot signal pid $pid"
answered() { [ "$(grep -c '^verify' "$sh/workload.out")" -gt "$before" ]; }
wait_for 120 answered || fail "no verification answer from pid $pid within 120 s"
verdict=$(grep '^verify' "$sh/workload.out" | sed -n "$((before + 1))p")
log "workload: $verdict"
[ "$verdict" = "verify ok $pages" ] ||
    fail "memory check of pid $pid: '$verdict' (wanted 'verify ok $pages')"
# One life: started once, ticks 1, 2, 3... with no gap and no restart.
story=$(awk '
    $1 == "pid" { starts++ }
    $1 == "ready" { readies++ }
    $1 == "tick" { if ($2 != n + 1) bad = bad " " n "->" $2; n = $2 }
    END { printf "%d %d %d %s", starts, readies, n, (bad == "" ? "ok" : "gaps" bad) }
' "$sh/workload.out")
read -r starts readies lastn gaps <<<"$story"
[ "$starts" = 1 ] && [ "$readies" = 1 ] && [ "$gaps" = ok ] ||
    fail "the workload's output is not one continuous run: $story"
put host2.result "PASS host2: pid $pid (was $oldpid on host1) runs here, ticks 1..$lastn with no gap or restart, $verdict"
log "PASS"
kill -KILL "$pid" 2>/dev/null
exit 0
