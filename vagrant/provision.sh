#!/bin/sh
# Provisioning of one VM (run by Vagrant as root): build or take the
# binaries, install them, make or take the cluster's credentials, set up
# and start the agent (setup-agent.sh), install the demo.
#   provision.sh NAME ADDR PEER=ADDR...
set -eu
name=$1 addr=$2
repo=/vagrant
shared=$repo/vagrant/.lab          # credentials and binaries, shared by the VMs
mkdir -p "$shared"

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq build-essential curl python3 iproute2 procps >/dev/null

# Binaries: the first VM builds them (rustup, release build), the others
# take them from the shared folder.
if [ ! -x "$shared/bin/migrate-agent" ]; then
    if ! command -v cargo >/dev/null; then
        curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    fi
    . "$HOME/.cargo/env"
    CARGO_TARGET_DIR=/var/tmp/migrate-target cargo build --release --workspace \
        --manifest-path "$repo/Cargo.toml"
    mkdir -p "$shared/bin"
    for f in migrate-agent migrate libmigrate_shim.so workload; do
        cp "/var/tmp/migrate-target/release/$f" "$shared/bin/"
    done
    "$shared/bin/migrate" __man "$shared/man"
    "$shared/bin/migrate-agent" __man "$shared/man"
fi
install -m 755 "$shared/bin/migrate-agent" "$shared/bin/migrate" /usr/local/bin/
install -m 644 "$shared/bin/libmigrate_shim.so" /usr/local/bin/
install -m 755 "$shared/bin/workload" /usr/local/bin/migrate-demo-workload
mkdir -p /usr/local/share/man/man1 /usr/local/share/man/man8 /etc/bash_completion.d
cp "$shared/man/"*.1 /usr/local/share/man/man1/
cp "$shared/man/"*.8 /usr/local/share/man/man8/
/usr/local/bin/migrate completions bash > /etc/bash_completion.d/migrate
/usr/local/bin/migrate-agent completions bash > /etc/bash_completion.d/migrate-agent

# Credentials: made once, for every host of the Vagrantfile.
if [ ! -f "$shared/cluster/cluster.key" ]; then
    hosts=$name
    for p in "$@"; do
        case $p in *=*) hosts="$hosts,${p%%=*}" ;; esac
    done
    rm -rf "$shared/cluster"
    /usr/local/bin/migrate-agent keygen "$shared/cluster" --hosts "$hosts"
fi

shift 2
MIGRATE_CREDS=$shared/cluster "$repo/vagrant/setup-agent.sh" "$name" "$addr" "$@"
install -m 755 "$repo/vagrant/demo.sh" /usr/local/bin/migrate-demo
