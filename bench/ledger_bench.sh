#!/usr/bin/env bash
#  Ledger throughput alone: records/s from ENTRY messages to committed usage rows, rollups,
#  journal entries and balances in PostgreSQL (a throwaway server, fsync off like the tests;
#  see docs/billing.md for what that means for the numbers).
#
#  usage: bench/ledger_bench.sh [BIN_DIR] [COUNT] [RUNS]
#  Prints one markdown table row per run and the median, ready for docs/billing.md.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../build/bin}
COUNT=${2:-200000}
RUNS=${3:-3}
rates=()
echo "| run | records | seconds | records/s |"
echo "|---|---|---|---|"
for run in $(seq 1 "$RUNS"); do
    line=$(BENCH_COUNT=$COUNT "$HERE/../ledger/ledger_test.sh" "$BIN" bench | grep 'ledger bench:')
    seconds=$(echo "$line" | sed -E 's/.* in ([0-9.]+) s.*/\1/')
    rate=$(echo "$line" | sed -E 's/.*: ([0-9]+) entries\/s/\1/')
    rates+=("$rate")
    echo "| $run | $COUNT | $seconds | $rate |"
done
median=$(printf '%s\n' "${rates[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
echo
echo "median: $median records/s (target: at least 20000)"
[ "$median" -ge 20000 ]
