#!/usr/bin/env bash
# Multi-host test: three "hosts" made of network namespaces on one bridge,
# PostgreSQL on one, two instances of every program on the other two, the
# mock upstream and the load generator on hosts of their own. The work is in
# multihost.test.mjs; this wrapper decides whether it can run at all (root
# and `ip netns`, else exit 77 = skipped) and removes every namespace and
# process of the run afterwards, whatever happened.
#   tests/cluster/multihost.sh        (TOLLGATE_BIN: the programs, default build/bin)
set -uo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" -ne 0 ]; then
    echo "multihost: skipped: needs root for network namespaces (ip netns)"
    exit 77
fi
if ! command -v ip >/dev/null 2>&1; then
    echo "multihost: skipped: ip (iproute2) is not installed"
    exit 77
fi
tag="tg$$"
if ! ip netns add "${tag}probe" 2>/dev/null; then
    echo "multihost: skipped: cannot create a network namespace (no CAP_SYS_ADMIN here?)"
    exit 77
fi
ip netns del "${tag}probe"

cleanup() {
    local ns pid
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${tag}"); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    done
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${tag}"); do
        ip netns del "$ns" 2>/dev/null
    done
    # veth ends left in the root namespace by a run that died half-way.
    for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^${tag}"); do
        ip link del "$link" 2>/dev/null
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TG_CLUSTER_TAG="$tag" node --test --test-reporter=spec tests/cluster/multihost.test.mjs
