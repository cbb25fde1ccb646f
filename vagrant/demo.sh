#!/bin/sh
# The demo, run as root on host1: a counter started under `migrate run`
# is migrated to host2 by `migrate`, and after a while asks, through the
# shim's API (migrate_request), to go back home. Its output is a pipe to
# `tee` here, which the agents forward wherever it runs.
#   sudo migrate-demo        (installed by provision.sh from vagrant/demo.sh)
# MIGRATE_DEMO_HOME (default: the hostname) is this host's agent name,
# MIGRATE_DEMO_DIR (default /var/tmp) where the output goes.
set -eu
here=${MIGRATE_DEMO_HOME:-$(hostname)}
other=${1:-host2}
dir=${MIGRATE_DEMO_DIR:-/var/tmp}
out=$dir/migrate-demo.out
pidfile=$dir/migrate-demo.pid
rm -f "$out" "$pidfile"

echo "== 1. a counter starts on $here, cooperating (migrate run)"
migrate run -- /usr/bin/python3 -u -c '
import ctypes, itertools, os, sys, time
os.closerange(3, 1 << 16)         # only its standard streams
shim = ctypes.CDLL(None)          # libmigrate_shim.so, preloaded by migrate run
host = ctypes.create_string_buffer(64)
open(sys.argv[1], "w").write(str(os.getpid()))
for i in itertools.count():
    shim.migrate_current_host(host, 64)
    where = host.value.decode()
    print(f"tick {i:3} on {where}, pid {os.getpid()}, moved {shim.migrate_count()} times", flush=True)
    if where != sys.argv[2] and i % 10 == 9:
        print(f"tick {i:3} asking to go home to {sys.argv[2]}", flush=True)
        shim.migrate_request(sys.argv[2].encode())
    time.sleep(0.5)
' "$pidfile" "$here" | tee "$out" &
i=0
while [ ! -s "$pidfile" ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
pid=$(cat "$pidfile")
sleep 2

echo "== 2. what can move from $here"
migrate list

echo "== 3. migrate $pid --to $other"
migrate "$pid" --to "$other"

echo "== 4. it counts on $other (its output still arrives here), then asks to come back"
i=0
until grep -q "on $here, pid $pid, moved 2 times" "$out" || [ $i -ge 60 ]; do
    sleep 1
    i=$((i + 1))
done
sleep 2

echo "== 5. the migrations, as this host's agent recorded them"
migrate list --history

# Home again, it got its pid back (free here since it left): end it if
# that pid is still the counter.
if grep -q migrate-demo.pid "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid"
else
    echo "stop the counter yourself: migrate list; kill PID"
fi
echo "== done; the whole output is in $out"
