#!/usr/bin/env bash
# The soak (not CI): `tollgate up` with the mock upstream behind it, then MINUTES of mixed plain,
# streamed, failing and cancelled requests (bench/soak.mjs); every minute the RSS and open file
# descriptors of every program (and PostgreSQL's), and each program's PostgreSQL connections
# (pg_stat_activity by application_name, which every program sets to tollgate-NAME), are sampled.
# The samples go into the "Soak" section of docs/benchmarks.md (bench/run.sh keeps it: it sits
# after run.sh's notes marker); flat is the goal.
#
#   bench/soak.sh [--minutes N (30)] [--rate REQUESTS_PER_S (40)] [--workers N (16)] [--no-write]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
minutes=30
rate=40
workers=16
write=1
while [ $# -gt 0 ]; do
    case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --no-write) write=0; shift ;;
    *) echo "usage: bench/soak.sh [--minutes N] [--rate R] [--workers N] [--no-write]" >&2; exit 2 ;;
    esac
done
bin="$root/build/bin"
[ -x "$bin/tollgate" ] || { echo "build first: ./setup.sh or cmake --build build" >&2; exit 1; }
programs=(ingress dispatch router health billing ledger admin)

work=$(mktemp -d /tmp/tollgate-soak.XXXXXX)
chmod 755 "$work"
mock_pid=
load_pid=
cleanup() {
    [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
    [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null || true
    "$bin/tollgate" down --dir "$work/cluster" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
log() { printf '==> %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The mock: a 500 for fail-model, slow chunks for slow-model (the cancelled requests).
"$bin/tollgate-mock-upstream" --port 0 --threads 2 --models mock-model,mock-20,fail-model,slow-model \
    --fault 'fail-model=500' --fault 'slow-model=delay-chunks:200' >"$work/mock.out" 2>&1 &
mock_pid=$!
for _ in $(seq 50); do grep -q '^port=' "$work/mock.out" && break; sleep 0.1; done
mock="http://127.0.0.1:$(sed -n 's/^port=//p' "$work/mock.out")"

gw_port=$(free_port)
admin_port=$(free_port)
"$bin/tollgate" up --dir "$work/cluster" --port "$gw_port" --admin-port "$admin_port" >"$work/up.out"
gateway="http://127.0.0.1:$gw_port"
export TOLLGATE_DIR="$work/cluster"
"$bin/tollgate" provider add mock --protocol openai --base-url "$mock" >/dev/null
"$bin/tollgate" provider key add mock --secret sk-soak >/dev/null
for pair in soak-plain:mock-model soak-stream:mock-20 soak-fail:fail-model soak-slow:slow-model; do
    "$bin/tollgate" model add "${pair%%:*}" --route "mock:${pair#*:}" --price-in 0.15 --price-out 0.60 >/dev/null
done
"$bin/tollgate" account add soak --balance 1000000 >/dev/null
key=$("$bin/tollgate" key create soak --name soak | tail -n 1)
for _ in $(seq 50); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "$gateway/v1/models")
    [ "$code" = 200 ] && break
    sleep 0.1
done
log "tollgate on $gateway, mock on $mock; $minutes minutes at ~$rate requests/s ($workers clients)"

pg_dir="$work/cluster/run/pg"
psql_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)/psql
[ -x "$psql_bin" ] || psql_bin=psql
pid_of() { jq -r ".programs[] | select(.name==\"$1\") | .pid" "$work/cluster/run/status.json" 2>/dev/null || true; }
postgres_pid() { head -n 1 "$work/cluster/pg/data/postmaster.pid" 2>/dev/null || head -n 1 "$work/cluster/pg/postmaster.pid" 2>/dev/null || true; }

# One sample line per minute:
#   SAMPLE minute prog=rss_kib/fds/pg ... postgres=pss_kib(all its processes)/backends restarts=N
samples="$work/samples.txt"
: >"$samples"
sample() {
    local minute=$1 line="SAMPLE $1" program pid rss fds conns
    local activity
    activity=$("$psql_bin" -X -q -A -t -F' ' -h "$pg_dir" -p 5432 -U tollgate -d tollgate \
        -c "SELECT application_name, count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1" 2>/dev/null || true)
    for program in "${programs[@]}"; do
        pid=$(pid_of "$program")
        if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
            rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
            fds=$(ls "/proc/$pid/fd" | wc -l)
        else
            rss=0; fds=0
        fi
        conns=$(awk -v name="tollgate-$program" '$1 == name {print $2}' <<<"$activity")
        line+=" $program=$rss/$fds/${conns:-0}"
    done
    local master backends total=0 p
    master=$(postgres_pid)
    if [ -n "$master" ]; then
        for p in $master $(pgrep -P "$master" || true); do
            # PSS: the shared buffers counted once, not once per backend.
            [ -r "/proc/$p/smaps_rollup" ] && total=$((total + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")))
        done
    fi
    backends=$(awk '{n += $2} END {print n + 0}' <<<"$activity")
    line+=" postgres=$total/$backends"
    line+=" restarts=$(jq '[.programs[].restarts] | add' "$work/cluster/run/status.json" 2>/dev/null || echo '?')"
    echo "$line" | tee -a "$samples" >&2
}

sample 0
node bench/soak.mjs "$gateway" "$key" $((minutes * 60)) "$rate" "$workers" >"$work/load.txt" 2>"$work/load.err" &
load_pid=$!
start=$(date +%s)
for minute in $(seq 1 "$minutes"); do
    while [ $(( $(date +%s) - start )) -lt $((minute * 60)) ]; do sleep 1; done
    sample "$minute"
    grep "^MINUTE $minute " "$work/load.txt" >&2 || true
done
wait "$load_pid" || { log "load generator failed:"; cat "$work/load.err" >&2; }
load_pid=
cat "$work/load.txt" >&2
"$bin/tollgate" ledger check --dir "$work/cluster" >"$work/check.txt" 2>&1 && check="clean" || check="NOT clean: $(tail -n 3 "$work/check.txt" | tr '\n' ' ')"
log "ledger check: $check"
usage_rows=$("$psql_bin" -X -q -A -t -h "$pg_dir" -p 5432 -U tollgate -d tollgate -c "SELECT count(*) FROM usage" 2>/dev/null || echo '?')

[ "$write" = 1 ] || exit 0

# The section, then put in place of the old one (or at the end).
section="$work/section.md"
python3 - "$samples" "$work/load.txt" "$minutes" "$rate" "$workers" "$check" "$usage_rows" >"$section" <<'PY'
import sys, datetime, os
samples_path, load_path, minutes, rate, workers, check, usage_rows = sys.argv[1:8]
programs = ['ingress', 'dispatch', 'router', 'health', 'billing', 'ledger', 'admin']
rows = []
for line in open(samples_path):
    parts = line.split()
    minute = int(parts[1])
    values = dict(p.split('=', 1) for p in parts[2:])
    rows.append((minute, values))
load = {}
total = ''
unexpected = []
for line in open(load_path):
    if line.startswith('MINUTE '):
        parts = line.split()
        load[int(parts[1])] = dict(p.split('=') for p in parts[2:])
    elif line.startswith('TOTAL '):
        total = line.split(' ', 1)[1].strip()
    elif line.startswith('UNEXPECTED '):
        unexpected.append(line.split(' ', 1)[1].strip())
cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
print('## Soak (bench/soak.sh)')
print()
print(f'Written by `bench/soak.sh --minutes {minutes}` on {datetime.date.today()} ({os.cpu_count()} cores, {cpu}, '
      'shared with other work): `tollgate up` with the mock upstream, about '
      f'{rate} requests/s from {workers} clients, a mix of plain (30%), streamed (30%, 20 chunks), '
      'failing (20%: an upstream 500, a wrong key, an unknown model) and cancelled (20%: a slow '
      'stream dropped after its first bytes) requests. Each cell: minute-0 is before the load.')
print()
print(f'Requests answered as expected: {total}. Ledger check after the run: {check}; usage rows: {usage_rows}.')
for text in unexpected:
    print(f'Unexpected: {text}.')
print()
def table(title, index, unit):
    print(f'### {title}')
    print()
    print('| minute | requests | ' + ' | '.join(programs) + (' | postgres |' if index == 0 else ' |'))
    print('|---' * (len(programs) + 2 + (1 if index == 0 else 0)) + '|')
    for minute, values in rows:
        counts = load.get(minute, {})
        served = sum(int(v) for k, v in counts.items()) if counts else 0
        cells = []
        for p in programs:
            v = values.get(p, '0/0/0').split('/')[index]
            cells.append(f'{int(v) / 1024:.1f}' if index == 0 else v)
        extra = ''
        if index == 0:
            extra = f' | {int(values.get("postgres", "0/0").split("/")[0]) / 1024:.1f}'
        print(f'| {minute} | {served} | ' + ' | '.join(cells) + extra + ' |')
    print()
table('RSS (MiB; PostgreSQL: PSS of all its processes)', 0, 'MiB')
table('Open file descriptors', 1, '')
table('PostgreSQL connections (pg_stat_activity by application_name)', 2, '')
if len(rows) > 2:
    first, last = rows[1][1], rows[-1][1]
    print('### From minute 1 to the last')
    print()
    print('| program | RSS MiB | fds | PostgreSQL connections |')
    print('|---|---|---|---|')
    for p in programs:
        a = [int(x) for x in first.get(p, '0/0/0').split('/')]
        b = [int(x) for x in last.get(p, '0/0/0').split('/')]
        print(f'| {p} | {a[0] / 1024:.1f} -> {b[0] / 1024:.1f} | {a[1]} -> {b[1]} | {a[2]} -> {b[2]} |')
    print()
    print(f'Program restarts during the run: {last.get("restarts", "?")}.')
    print()
PY

python3 - "$root/docs/benchmarks.md" "$section" <<'PY'
import sys, re
doc_path, section_path = sys.argv[1:3]
doc = open(doc_path).read()
section = open(section_path).read().rstrip('\n') + '\n'
heading = '## Soak (bench/soak.sh)'
start = doc.find(heading)
if start < 0:
    doc = doc.rstrip('\n') + '\n\n' + section
else:
    rest = doc[start + len(heading):]
    match = re.search(r'^## ', rest, re.M)
    end = start + len(heading) + match.start() if match else len(doc)
    doc = doc[:start] + section + ('\n' + doc[end:] if match else '')
open(doc_path, 'w').write(doc)
PY
log "wrote the Soak section of docs/benchmarks.md"
