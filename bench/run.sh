#!/usr/bin/env bash
# The request-path benchmark, in one run on this machine:
#   the mock upstream directly, through nginx as a plain keep-alive reverse
#   proxy, and through Tollgate; small non-streamed completions with wrk
#   (32 connections, and 1 connection for added latency), streamed ones of 50
#   chunks (time to first byte), 1,000 concurrent open streams, and the peak
#   RSS of every Tollgate process. Writes docs/benchmarks.md.
#
#   bench/run.sh [--duration SECONDS] [--rounds N] [--streams-only]
#   (needs ./setup.sh's packages and a build in build/). --rounds (default 2)
#   repeats each of the first three measurements on the three targets and
#   reports their means. --streams-only runs only the open-streams phases and
#   prints their results (docs untouched).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
duration=10
rounds=2
streams_only=0
while [ $# -gt 0 ]; do
    case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --streams-only) streams_only=1; shift ;;
    *) echo "usage: bench/run.sh [--duration SECONDS] [--rounds N] [--streams-only]" >&2; exit 2 ;;
    esac
done
bin="$root/build/bin"
[ -x "$bin/tollgate" ] || { echo "build first: ./setup.sh or cmake --build build" >&2; exit 1; }

work=$(mktemp -d /tmp/tollgate-bench.XXXXXX)
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

# 1. The mock upstream. "mock-slow" streams slowly, for the open-streams test.
"$bin/tollgate-mock-upstream" --port 0 --threads 2 \
    --models mock-model,mock-50,mock-slow --fault 'mock-slow=delay-chunks:500' >"$work/mock.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q '^port=' "$work/mock.out" && break; sleep 0.1; done
mock_port=$(sed -n 's/^port=//p' "$work/mock.out")
mock="http://127.0.0.1:$mock_port"
log "mock upstream on $mock"

# 2. nginx as a plain keep-alive reverse proxy in front of the mock.
nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    upstream mock { server 127.0.0.1:$mock_port; keepalive 64; }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx"
pids+=($(cat "$work/nginx/nginx.pid"))
log "nginx on 127.0.0.1:$nginx_port"

# 3. Tollgate, with the mock as its provider.
gw_port=$(free_port)
admin_port=$(free_port)
"$bin/tollgate" up --dir "$work/cluster" --port "$gw_port" --admin-port "$admin_port" >"$work/up.out"
gateway="http://127.0.0.1:$gw_port"
export TOLLGATE_DIR="$work/cluster"
"$bin/tollgate" provider add mock --protocol openai --base-url "$mock" >/dev/null
"$bin/tollgate" provider key add mock --secret sk-bench >/dev/null
for model in mock-model mock-50 mock-slow; do
    "$bin/tollgate" model add "$model" --route "mock:$model" --price-in 0.15 --price-out 0.60 >/dev/null
done
"$bin/tollgate" account add bench --balance 1000000 >/dev/null
key=$("$bin/tollgate" key create bench --name bench | tail -n 1)
# Wait until the gateway knows the key (configuration reaches it within a second).
for _ in $(seq 50); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "$gateway/v1/models")
    [ "$code" = 200 ] && break
    sleep 0.1
done
log "tollgate on $gateway"

wrk_run() { # NAME URL CONNECTIONS MODEL STREAM
    local out
    out=$(BENCH_KEY="$key" BENCH_MODEL="$4" BENCH_STREAM="$5" \
        wrk -t "$(( $3 < 2 ? 1 : 2 ))" -c "$3" -d "${duration}s" --latency -s bench/chat.lua "$2/v1/chat/completions" 2>&1)
    local line
    line=$(grep '^RESULT' <<<"$out" || true)
    [ -n "$line" ] || { echo "$out" >&2; line="RESULT rps=0 p50_ms=0 p99_ms=0 requests=0 errors=-1 http_errors=-1"; }
    echo "$1 $line"
}

results="$work/results.txt"
: >"$results"
if [ "$streams_only" = 0 ]; then
    # One measurement on the three targets back to back, then the next: a
    # ratio compares runs seconds apart, not the first target's run with the
    # last's 40 s later (this shared machine's speed drifts by 30 % over
    # minutes, the same way for every program). Each is done `rounds` times
    # (lines NAME-rN) and reported as the rounds' mean (line NAME).
    targets=("direct $mock" "nginx http://127.0.0.1:$nginx_port" "tollgate $gateway")
    measure() { # FIGURE NAME URL ROUND: one figure of one target, as a results line
        case "$1" in
        c32)
            log "wrk: $2, 32 connections, non-streamed (round $4)"
            wrk_run "$2-c32-r$4" "$3" 32 mock-model 0 ;;
        c1)
            log "wrk: $2, 1 connection, non-streamed (round $4)"
            wrk_run "$2-c1-r$4" "$3" 1 mock-model 0 ;;
        stream)
            log "streamed (50 chunks): $2, 32 connections (round $4)"
            echo "$2-stream-r$4 $(node bench/ttfb.mjs "$3/v1/chat/completions" "$key" mock-50 32 $((duration * 300)))" ;;
        esac
    }
    for figure in c32 c1 stream; do
        for round in $(seq "$rounds"); do
            for target in "${targets[@]}"; do
                measure "$figure" $target "$round" | tee -a "$results"
            done
        done
    done
    # The rounds' mean of each figure (requests and errors: their sum).
    for name in {direct,nginx,tollgate}-{c32,c1,stream}; do
        awk -v name="$name" '$1 ~ "^" name "-r[0-9]+$" {
            n++
            for (i = 3; i <= NF; i++) { split($i, kv, "="); key[i] = kv[1]; sum[i] += kv[2] }
        }
        END {
            if (!n) exit
            line = name " RESULT"
            for (i = 3; i in key; i++) {
                k = key[i]
                if (k ~ /_ms$/) v = sprintf("%.3f", sum[i] / n)
                else if (k == "rps") v = sprintf("%.1f", sum[i] / n)
                else v = sprintf("%d", sum[i])
                line = line " " k "=" v
            }
            print line
        }' "$results" >>"$results"
    done

    # What each program (billing and ledger included) costs per request.
    log "CPU per request, 32 connections"
    cpu_costs=$(bash bench/cpu_per_request.sh "$work/cluster" "$key" 32 "$duration" mock-model)
    echo "$cpu_costs" | tee -a "$results"
fi

# 4. Peak RSS of the Tollgate programs while 1,000, then 10,000 streams are
#    open at once (VmHWM only grows: read after each).
peak_rss() { # prints "total_kib" and fills rss_lines
    local total=0 program pid hwm
    rss_lines=""
    for program in ingress router dispatch health billing ledger; do
        pid=$(jq -r ".programs[] | select(.name==\"$program\") | .pid" "$work/cluster/run/status.json" 2>/dev/null || true)
        [ -n "$pid" ] && [ -r "/proc/$pid/status" ] || continue
        hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
        total=$((total + hwm))
        rss_lines+="| tollgate-$program | $((hwm / 1024)) MiB |"$'\n'
    done
    rss_total=$total
}
# Each stream sends its first event, then waits at the mock until all N wait
# (gather:N, at most 60 s), so N are open at the same moment: without it the
# first ones ended (7 events, 500 ms apart) while the last ones connected.
# The programs peak at different moments (dispatch while all are open,
# ingress and the ledger as they finish): the sum of their VmHWM is more
# than they ever held at once, so the largest sum of VmRSS is sampled too.
# Both count the shared library pages (~10.8 MiB of each program's ~13 MiB
# at rest) once per program; the sum of Pss (smaps_rollup: a page shared by
# k processes counts 1/k in each) at the same moments counts them once.
# Read with bash's own `read`, no process started per sample.
sum_field() { # FILE FIELD: adds the value of the line "FIELD: N kB" of FILE to $sum
    local name value rest
    while read -r name value rest; do
        [ "$name" = "$2:" ] && { sum=$((sum + value)); return; }
    done 2>/dev/null <"$1" || true
}
rss_sampler() { # RSS_FILE PSS_FILE: writes the largest sums of the programs' VmRSS and Pss (KiB), every 0.25 s
    local pids rss_max=0 pss_max=0 sum rss pid
    pids=$(jq -r '.programs[] | select(.name | test("^(ingress|router|dispatch|health|billing|ledger)$")) | .pid' \
        "$work/cluster/run/status.json")
    while true; do
        sum=0
        for pid in $pids; do sum_field "/proc/$pid/status" VmRSS; done
        rss=$sum
        sum=0
        for pid in $pids; do sum_field "/proc/$pid/smaps_rollup" Pss; done
        if [ "$rss" -gt "$rss_max" ]; then
            rss_max=$rss
            echo "$rss_max" >"$1"
        fi
        if [ "$sum" -gt "$pss_max" ]; then
            pss_max=$sum
            echo "$pss_max" >"$2"
        fi
        sleep 0.25
    done
}
streams_run() { # NAME COUNT: one streams phase; the mock's own peak of open streams too
    curl -s -X POST "$mock/mock/reset" >/dev/null
    curl -s "$mock/mock/faults" -d "{\"model\":\"mock-slow\",\"fault\":\"delay-chunks:500,gather:$2\"}" >/dev/null
    local line sampler
    echo 0 >"$work/rss_sum"
    echo 0 >"$work/pss_sum"
    rss_sampler "$work/rss_sum" "$work/pss_sum" &
    sampler=$!
    line=$(node bench/streams.mjs "$gateway/v1/chat/completions" "$key" mock-slow "$2")
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    echo "$1 $line upstream_peak_open=$(curl -s "$mock/mock/stats" | jq .max_open_streams)" \
        "rss_sum_peak_mib=$(($(cat "$work/rss_sum") / 1024))" \
        "pss_sum_peak_mib=$(($(cat "$work/pss_sum") / 1024))"
}
log "1000 concurrent open streams through tollgate"
streams_run streams 1000 | tee -a "$results"
peak_rss
rss_1k=$rss_total
rss_1k_lines=$rss_lines
# 10,000 descriptors on each side of every hop: raise the soft limit to
# the hard one (the programs raise their own at start).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "10000 concurrent open streams through tollgate (fd limit $(ulimit -n))"
streams_run streams10k 10000 | tee -a "$results"
peak_rss
rss_10k=$rss_total
if [ "$streams_only" = 1 ]; then
    printf '1,000 streams:\n%s| all | %s MiB |\n' "$rss_1k_lines" $((rss_1k / 1024))
    echo "memory the programs occupy together (PSS: each shared page counted once): $(sed -n 's/^streams .*pss_sum_peak_mib=\([0-9]*\).*/\1/p' "$results") MiB at the peak"
    printf '10,000 streams:\n%s| all | %s MiB |\n' "$rss_lines" $((rss_10k / 1024))
    echo "memory the programs occupy together (PSS: each shared page counted once): $(sed -n 's/^streams10k .*pss_sum_peak_mib=\([0-9]*\).*/\1/p' "$results") MiB at the peak"
    exit 0
fi

# 5. Write the results down. What follows the notes marker in the old file
#    (the profile and its reading, written by hand) is kept.
notes=$(sed -n '/^<!-- notes: kept by bench\/run.sh -->$/,$p' "$root/docs/benchmarks.md" 2>/dev/null || true)
field() { sed -n "s/^$1 .*$2=\([^ ]*\).*/\1/p" "$results"; }
# One decimal: a throughput of 34.9 % is not "35%" against a target of 35 %.
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f%%", 100 * a / b; else print "n/a" }'; }
added=$(awk -v t="$(field tollgate-c1 p50_ms)" -v d="$(field direct-c1 p50_ms)" 'BEGIN { printf "%.3f", t - d }')
per_round() { # FIGURE KEY ACROSS: the figure (pct, diff or ratio of tollgate's KEY to ACROSS's) in each round
    local list="" round t a
    for round in $(seq "$rounds"); do
        t=$(field "tollgate-$1-r$round" "$2")
        a=$(field "$3-$1-r$round" "$2")
        list+="${list:+, }$(awk -v t="$t" -v a="$a" -v how="$4" 'BEGIN {
            if (how == "diff") printf "%.3f ms", t - a
            else if (a <= 0) printf "n/a"
            else if (how == "pct") printf "%.1f%%", 100 * t / a
            else printf "%.2fx", t / a }')"
    done
    echo "$list"
}
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
{
    echo "# Benchmarks"
    echo
    echo "Written by \`bench/run.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores, $cpu; mock upstream, nginx,"
    echo "Tollgate and the load generator all share the machine). ${duration} s per wrk run; each figure"
    echo "of the first three tables is the mean of ${rounds} rounds, a round measuring the three targets back to back."
    echo
    echo "## Small non-streamed completion, 32 connections"
    echo
    echo "| target | requests/s | p50 ms | p99 ms | errors |"
    echo "|---|---|---|---|---|"
    for t in direct nginx tollgate; do
        echo "| $t | $(field $t-c32 rps) | $(field $t-c32 p50_ms) | $(field $t-c32 p99_ms) | $(field $t-c32 errors) |"
    done
    echo
    echo "Tollgate throughput is $(pct "$(field tollgate-c32 rps)" "$(field nginx-c32 rps)") of nginx's (target: at least 35%; by round: $(per_round c32 rps nginx pct))."
    echo
    echo "## One connection (added latency)"
    echo
    echo "| target | requests/s | p50 ms | p99 ms |"
    echo "|---|---|---|---|"
    for t in direct nginx tollgate; do
        echo "| $t | $(field $t-c1 rps) | $(field $t-c1 p50_ms) | $(field $t-c1 p99_ms) |"
    done
    echo
    echo "p50 added by Tollgate over direct: ${added} ms (target: at most 0.35 ms; by round: $(per_round c1 p50_ms direct diff)); p99 added: $(awk -v t="$(field tollgate-c1 p99_ms)" -v d="$(field direct-c1 p99_ms)" 'BEGIN { printf "%.3f", t - d }') ms (target: at most 1.5 ms; by round: $(per_round c1 p99_ms direct diff))."
    echo
    echo "## Streamed completion of 50 chunks, 32 connections"
    echo
    echo "First byte p50 is $(awk -v t="$(field tollgate-stream ttfb_p50_ms)" -v n="$(field nginx-stream ttfb_p50_ms)" 'BEGIN { if (n > 0) printf "%.2fx", t / n; else print "n/a" }') nginx's (target: at most 1.5x; by round: $(per_round stream ttfb_p50_ms nginx ratio))."
    echo
    echo "| target | streams/s | first byte p50 ms | first byte p99 ms | whole p50 ms | whole p99 ms |"
    echo "|---|---|---|---|---|---|"
    for t in direct nginx tollgate; do
        echo "| $t | $(field $t-stream rps) | $(field $t-stream ttfb_p50_ms) | $(field $t-stream ttfb_p99_ms) | $(field $t-stream p50_ms) | $(field $t-stream p99_ms) |"
    done
    echo
    echo "## CPU time per request, per program (32 connections)"
    echo
    echo "From /proc/PID/stat before and after a wrk run through the gateway"
    echo "(\`bench/cpu_per_request.sh\`). Billing and ledger are what billing costs;"
    echo "PostgreSQL's share is the ledger's batched writes (usage, journal, rollups, spans)."
    echo
    echo "| program | CPU µs per request |"
    echo "|---|---|"
    sed -n 's/^\([a-z]*\) *\([0-9.]*\) us\/request$/| \1 | \2 |/p' <<<"$cpu_costs"
    echo "| all, PostgreSQL included | $(awk '/us\/request$/ {sum += $2} END {printf "%.1f", sum}' <<<"$cpu_costs") (target: at most 120) |"
    echo
    echo "## 1,000 concurrent open streams through Tollgate"
    echo
    echo "Streams: $(field streams completed) of 1000 completed, $(field streams peak_open) open at the peak at the client ($(field streams upstream_peak_open) at the mock upstream), $(field streams errors) errors. The programs' RSS summed every 0.25 s peaked at $(field streams rss_sum_peak_mib) MiB (the table adds up each program's own peak, reached at different moments)."
    echo
    echo "| program | peak RSS (VmHWM) |"
    echo "|---|---|"
    printf '%s' "$rss_1k_lines"
    echo "| all Tollgate programs | $((rss_1k / 1024)) MiB (target: under 150 MiB) |"
    echo
    echo "Memory the programs occupy together (PSS: each shared page counted once): $(field streams pss_sum_peak_mib) MiB at the peak (the sum of Pss from /proc/PID/smaps_rollup, sampled with the summed RSS)."
    echo
    echo "## 10,000 concurrent open streams through Tollgate"
    echo
    echo "Streams: $(field streams10k completed) of 10000 completed, $(field streams10k peak_open) open at the peak at the client ($(field streams10k upstream_peak_open) at the mock upstream), $(field streams10k errors) errors. The programs' RSS summed every 0.25 s peaked at $(field streams10k rss_sum_peak_mib) MiB (the table adds up each program's own peak, reached at different moments)."
    echo
    echo "| program | peak RSS (VmHWM) |"
    echo "|---|---|"
    printf '%s' "$rss_lines"
    echo "| all Tollgate programs | $((rss_10k / 1024)) MiB (target: under 400 MiB) |"
    echo
    echo "Memory the programs occupy together (PSS: each shared page counted once): $(field streams10k pss_sum_peak_mib) MiB at the peak (the sum of Pss from /proc/PID/smaps_rollup, sampled with the summed RSS)."
    if [ -n "$notes" ]; then
        echo
        printf '%s\n' "$notes"
    fi
} >"$root/docs/benchmarks.md"
log "wrote docs/benchmarks.md"
cat "$root/docs/benchmarks.md"
