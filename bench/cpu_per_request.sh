#!/usr/bin/env bash
# CPU time each Tollgate program spends per request, from /proc/PID/stat
# (utime+stime) before and after a fixed wrk run through the gateway.
#   bench/cpu_per_request.sh DIR KEY [CONNECTIONS] [SECONDS] [MODEL]
set -euo pipefail
dir=$1 key=$2 connections=${3:-32} seconds=${4:-5} model=${5:-demo-model}
cd "$(dirname "$0")/.."
gateway=$(sed -n 's/^ingress.listen = //p' "$dir/tollgate.conf")
ticks=$(getconf CLK_TCK)
declare -A before
programs=(ingress router dispatch health billing ledger)
pid_of() { jq -r ".programs[] | select(.name==\"$1\") | .pid" "$dir/run/status.json"; }
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# PostgreSQL: the postmaster of the cluster's data folder and its children
# (backends, walwriter, checkpointer: their titles do not name the folder),
# plus what its children that ended have used (the postmaster's cutime and
# cstime): an autovacuum worker that starts and ends within the run is in
# no list taken before or after it.
postmaster=$(head -n 1 "$dir/pg/postmaster.pid" 2>/dev/null || echo 0)
pg_cpu() {
    local total=0 p
    for p in $postmaster $(pgrep -P "$postmaster" 2>/dev/null); do
        total=$((total + $(cpu_of "$p" 2>/dev/null || echo 0)))
    done
    total=$((total + $(awk '{print $16 + $17}' "/proc/$postmaster/stat" 2>/dev/null || echo 0)))
    echo $total
}
for p in "${programs[@]}"; do before[$p]=$(cpu_of "$(pid_of "$p")"); done
pg_before=$(pg_cpu)
out=$(BENCH_KEY="$key" BENCH_MODEL="$model" wrk -t2 -c"$connections" -d"${seconds}s" -s bench/chat.lua "http://$gateway/v1/chat/completions")
requests=$(sed -n 's/^RESULT .*requests=\([0-9]*\).*/\1/p' <<<"$out")
echo "$(grep ^RESULT <<<"$out")"
for p in "${programs[@]}"; do
    after=$(cpu_of "$(pid_of "$p")")
    awk -v p="$p" -v t=$((after - ${before[$p]})) -v hz="$ticks" -v n="$requests" \
        'BEGIN { printf "%-9s %8.1f us/request\n", p, t * 1e6 / hz / n }'
done
awk -v t=$(( $(pg_cpu) - pg_before )) -v hz="$ticks" -v n="$requests" \
    'BEGIN { printf "%-9s %8.1f us/request\n", "postgres", t * 1e6 / hz / n }'
