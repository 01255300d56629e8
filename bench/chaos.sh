#!/usr/bin/env bash
# The chaos benchmark: three mock upstreams as three providers of one model, one failing a
# third of its requests (500), one hanging about 5% of them, and the client-visible success
# rate and latency through Tollgate compared with the healthy provider alone. Target: every
# request succeeds while one healthy candidate exists, and p99 stays under twice the healthy
# provider's. Writes docs/benchmarks-chaos.md (bench/run.sh rewrites docs/benchmarks.md, so
# this has its own file; docs/routing.md links it).
#
#   bench/chaos.sh [--duration SECONDS]     (a build in build/, or TOLLGATE_BIN=folder)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
duration=15
while [ $# -gt 0 ]; do
    case "$1" in
    --duration) duration="$2"; shift 2 ;;
    *) echo "usage: bench/chaos.sh [--duration SECONDS]" >&2; exit 2 ;;
    esac
done
bin="${TOLLGATE_BIN:-$root/build/bin}"
[ -x "$bin/tollgate" ] || { echo "build first: ./setup.sh or cmake --build build" >&2; exit 1; }
# The programs reject TOLLGATE_* variables they do not know; TOLLGATE_BIN is ours.
unset TOLLGATE_BIN

# A hung upstream costs the first-byte timeout before dispatch moves on.
first_byte_ms=250
export TOLLGATE_DISPATCH_FIRST_BYTE_TIMEOUT_MS=$first_byte_ms
export TOLLGATE_LOG_LEVEL=warn

work=$(mktemp -d /tmp/tollgate-chaos.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    "$bin/tollgate" down --dir "$work/cluster" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
log() { printf '==> %s\n' "$*" >&2; }

# Starts a mock upstream; prints its URL.
start_mock() {
    local name=$1
    shift
    "$bin/tollgate-mock-upstream" --port 0 --threads 2 --models chaos-up "$@" >"$work/$name.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do grep -q '^port=' "$work/$name.out" && break; sleep 0.1; done
    echo "http://127.0.0.1:$(sed -n 's/^port=//p' "$work/$name.out")"
}
healthy=$(start_mock healthy)
flaky=$(start_mock flaky --fault 'chaos-up=flap:3')
hanging=$(start_mock hanging)
log "mocks: healthy $healthy, flaky $flaky (flap:3), hanging $hanging"

gw_port=$(free_port)
admin_port=$(free_port)
"$bin/tollgate" up --dir "$work/cluster" --port "$gw_port" --admin-port "$admin_port" >"$work/up.out"
export TOLLGATE_DIR="$work/cluster"
admin="http://127.0.0.1:$admin_port"
token=$(cat "$work/cluster/admin_token")
call() { curl -sf -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@" >/dev/null; }
for p in healthy flaky hanging; do
    url_var=$p
    call "$admin/admin/providers" -d "{\"name\":\"$p\",\"protocol\":\"openai\",\"base_url\":\"${!url_var}\"}"
    call "$admin/admin/providers/$p/keys" -d "{\"secret\":\"sk-chaos-$p-0000\"}"
done
call "$admin/admin/models" -d '{"name":"baseline","routes":[{"provider":"healthy","upstream_model":"chaos-up"}]}'
call "$admin/admin/models" -d '{"name":"chaos","routes":[{"provider":"healthy","upstream_model":"chaos-up"},{"provider":"flaky","upstream_model":"chaos-up"},{"provider":"hanging","upstream_model":"chaos-up"}]}'
call "$admin/admin/accounts" -d '{"name":"chaos","balance":"1000000"}'
log "cluster up; $duration s per run, 16 clients, plain and streamed completions alternating"

node "$root/bench/chaos.mjs" "$admin" "$token" "http://127.0.0.1:$gw_port" "$healthy" "$flaky" "$hanging" "$duration" \
    | tee "$work/results.txt" >&2

cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
python3 - "$work/results.txt" "$root/docs/benchmarks-chaos.md" "$duration" "$first_byte_ms" "$cpu" <<'PY'
import json, sys, datetime
results, out, duration, first_byte, cpu = sys.argv[1:6]
runs, breakers = [], {}
for line in open(results):
    if line.startswith('RESULT '):
        runs.append(json.loads(line[7:]))
    elif line.startswith('BREAKERS '):
        _, mode, rest = line.split(' ', 2)
        breakers[mode] = json.loads(rest)
base = next(r for r in runs if r['run'] == 'baseline')
rows = []
for r in runs:
    ratio = r['p99'] / base['p99'] if base['p99'] else 0
    verdict = '' if r['run'] == 'baseline' else (
        'met' if r['success'] == 100 and ratio < 2 else
        'success met, p99 not' if r['success'] == 100 else 'not met')
    rows.append(f"| {r['run']} | {r['mode']} | {r['requests']} | {r['success']:.3f}% | {r['p50']} | {r['p90']} | {r['p99']} "
                f"| {ratio:.2f}x | {r['max']} | {r['failed_over']} | {verdict} |")
with open(out, 'w') as f:
    f.write(f"""# Chaos benchmark

Written by `bench/chaos.sh --duration {duration}` on {datetime.date.today()} ({cpu}); rerun it to
refresh. Three mock upstreams are three providers of the model `chaos`: `healthy`; `flaky`,
failing every third request with a 500 (the mock's `flap:3`, 33%); `hanging`, made to hang for
50 ms of every second (about 5% of its requests never answer; dispatch gives up after
`dispatch.first_byte_timeout_ms` = {first_byte} ms and fails over). 16 clients send plain and
streamed completions back to back for {duration} s per run. `baseline` is the model routed to
`healthy` alone, through the same gateway. A request counts as a success when it is a 200 and,
for a stream, ends with `[DONE]` and no error event. Latencies are client-side, in ms.

Target: 100% success while one healthy candidate exists, and p99 under 2x the healthy
provider's (the baseline row).

| run | scheduling | requests | success | p50 | p90 | p99 | p99 / baseline | max | failed over | target |
|---|---|---|---|---|---|---|---|---|---|---|
""" + '\n'.join(rows) + "\n\n")
    f.write("Breakers not closed at the end of each run (provider:layer:state:reason): " +
            "; ".join(f"{m}: {', '.join(b) or 'none'}" for m, b in breakers.items()) + ".\n\n")
    f.write("""How to read it: a 500 from `flaky` costs one extra round trip to the next candidate; a hang
costs the first-byte timeout, so every request that meets a hang lands above it, and p99 stays
under twice the baseline only when fewer than 1% of requests meet one. In `weighted` mode each
provider leads a third of the decisions, whatever its health; in `latency` mode the router ranks
by the EWMA time to first byte that tollgate-health folds from outcomes (a timeout counts as a
slow answer), so `hanging` moves to the back once health has seen its stalls. The requests
that meet one hang window time out together, and three timeouts in a row open `hanging`'s
key breaker for `router.cooldown_network_ms` (10 s), so after the first window few requests
meet a hang in either mode (the breakers line above shows it). The flapping
provider never fails three times in a row, so its breaker stays closed and failover alone hides
its failures. The chaos runs can beat the baseline: the baseline puts all 16 clients on one
mock process (2 threads), the chaos model spreads them over three.
""")
print(open(out).read())
PY
log "wrote docs/benchmarks-chaos.md"
