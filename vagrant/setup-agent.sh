#!/bin/sh
# Sets up and starts the migrate agent of one host: the part of the
# provisioning that every host runs (Vagrant's VMs, the QEMU test's guests).
#
#   setup-agent.sh NAME ADDR PEER=PEER_ADDR...
#
# NAME is this host's name, ADDR its address on the private network (the
# agent listens on ADDR:7070), each PEER=PEER_ADDR another host. The
# cluster's credentials are taken from $MIGRATE_CREDS (a directory made by
# `migrate-agent keygen DIR --hosts host1,host2`: cluster.key, hosts and
# NAME.key). Binaries are expected in $MIGRATE_BIN (default
# /usr/local/bin). Writes $MIGRATE_ETC/agent.toml (default /etc/migrate)
# and $MIGRATE_ETC/cluster/, then starts the agent: as the systemd service
# if systemd runs this machine, else in the background (log in
# /var/log/migrate-agent.log).
set -eu
[ $# -ge 2 ] || { echo "usage: $0 NAME ADDR [PEER=ADDR]..." >&2; exit 2; }
name=$1 addr=$2
shift 2
bin=${MIGRATE_BIN:-/usr/local/bin}
etc=${MIGRATE_ETC:-/etc/migrate}
creds=${MIGRATE_CREDS:?set MIGRATE_CREDS to the cluster credentials directory}
port=7070

for f in cluster.key hosts "$name.key"; do
    [ -f "$creds/$f" ] || { echo "$0: $creds/$f is missing" >&2; exit 2; }
done
[ -x "$bin/migrate-agent" ] || { echo "$0: no $bin/migrate-agent" >&2; exit 2; }

umask 077
mkdir -p "$etc/cluster"
cp "$creds/cluster.key" "$creds/hosts" "$creds/$name.key" "$etc/cluster/"
chmod 600 "$etc/cluster/"*

{
    echo "# Written by setup-agent.sh; every key is described in agent.toml.example."
    echo "name = \"$name\""
    echo "listen = \"$addr:$port\""
    echo "auth = \"$etc/cluster\""
    echo
    echo "[peers]"
    for p in "$@"; do
        echo "${p%%=*} = \"${p#*=}:$port\""
    done
} > "$etc/agent.toml"
chmod 644 "$etc/agent.toml"

if [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    here=$(dirname "$0")
    install -m 644 "$here/migrate-agent.service" /etc/systemd/system/migrate-agent.service
    systemctl daemon-reload
    systemctl enable migrate-agent.service
    # restart, not start: a second provisioning brings new settings in.
    systemctl restart migrate-agent.service
else
    mkdir -p /run/migrate /var/lib/migrate
    nohup "$bin/migrate-agent" --config "$etc/agent.toml" \
        >/var/log/migrate-agent.log 2>&1 </dev/null &
fi

# Ready when the control socket answers.
i=0
while ! [ -S /run/migrate/agent.sock ]; do
    i=$((i + 1))
    if [ $i -gt 100 ]; then
        echo "$0: the agent did not start" >&2
        tail -n 20 /var/log/migrate-agent.log 2>/dev/null >&2 || journalctl -u migrate-agent -n 20 >&2 || true
        exit 1
    fi
    sleep 0.1
done
echo "migrate-agent $name listening on $addr:$port"
