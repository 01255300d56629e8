// Metrics and traces through the real programs.
//
// Every program serves /metrics on its own NAME.metrics_listen; each exposition must pass a
// strict Prometheus text parser (./prom.mjs) and carry the families docs/observability.md
// lists. A request that fails over twice (two mock providers answering 500, a third
// healthy) shows both failed attempts, and the one that answered, in its timeline at
// GET /admin/requests/{id}, under the client's W3C trace id. `tollgate top` reads the same
// metrics and shows attempts, errors and an open breaker per provider; the Grafana dashboard
// in ops/grafana uses only families the programs really serve.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';

import { freePort, programs, tollgate, waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, chat, ok, setup, sse, usageRow } from '../routing/lib.mjs';
import { parsePrometheus, scrape } from './prom.mjs';

let ctx;
let client;
const metrics = {};

before(async () => {
  // No sampled share, and slow from 400 ms: which requests keep their spans is
  // then up to the failure, failover and slowness rules alone.
  const env = {
    TOLLGATE_ROUTER_BREAKER_THRESHOLD: '1000', TOLLGATE_LEDGER_PRUNE_INTERVAL_MS: '300',
    TOLLGATE_TRACE_SAMPLE_PPM: '0', TOLLGATE_TRACE_SLOW_MS: '400',
  };
  for (const program of programs) {
    metrics[program] = `127.0.0.1:${await freePort()}`;
    env[`TOLLGATE_${program.toUpperCase()}_METRICS_LISTEN`] = metrics[program];
  }
  const models = 'obs-ok,obs-failover,obs-429,obs-long,obs-wait';
  // obs-long streams for ~0.6 s after an immediate first event; obs-wait
  // answers after 0.6 s.
  const timing = ['--fault', 'obs-long=delay-chunks:150', '--fault', 'obs-wait=delay-headers:600'];
  ctx = await setup({
    mocks: [
      ['--models', models, '--fault', 'obs-failover=500', '--fault', 'obs-429=429:30', ...timing],
      ['--models', models, '--fault', 'obs-failover=500', ...timing],
      ['--models', models, ...timing],
    ],
    env,
  });
  await addProvider(ctx, 'first', ctx.mocks[0].url, { priority: 30 });
  await addProvider(ctx, 'second', ctx.mocks[1].url, { priority: 20 });
  await addProvider(ctx, 'third', ctx.mocks[2].url, { priority: 10 });
  for (const name of ['obs-ok', 'obs-failover', 'obs-429', 'obs-long', 'obs-wait']) {
    await ok(ctx, 'POST', '/admin/models', {
      name, price_in: '1', price_out: '2',
      routes: [{ provider: 'first' }, { provider: 'second' }, { provider: 'third' }],
    });
  }
  client = await addClient(ctx, 'observed');
  await waitFor(async () => (await chat(ctx, client.key, { model: 'obs-ok' })).status === 200,
    { timeout: 5000, message: 'the first request' });
});

after(async () => { await ctx?.stop(); });

test('the parser is strict', () => {
  const good = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="q\\"\\\\\\n"} 1\n'
    + '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2\n';
  const parsed = parsePrometheus(good);
  assert.equal(parsed.get('a_total').samples[0].labels.x, 'q"\\\n');
  for (const bad of [
    'a 1\n', // no TYPE
    '# TYPE a counter\na{x="1"} 1\na{x="1"} 2\n', // twice
    '# TYPE a counter\na{x="\\t"} 1\n', // bad escape
    '# TYPE a counter\na one\n',
    '# TYPE a counter\na 1', // no final newline
    '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
    '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n', // no +Inf
  ]) assert.throws(() => parsePrometheus(bad), undefined, JSON.stringify(bad));
});

test('every program serves parseable metrics with its families', async () => {
  // Some traffic first: a plain and a streamed request.
  assert.equal((await chat(ctx, client.key, { model: 'obs-ok', stream: true })).status, 200);
  const expected = {
    all: ['tollgate_process_resident_memory_bytes', 'tollgate_process_uptime_seconds', 'tollgate_info',
      'tollgate_log_level', 'tollgate_messages_total', 'tollgate_messages_malformed_total',
      'tollgate_spans_sent_total', 'tollgate_spans_dropped_total', 'tollgate_metrics_scrapes_total'],
    ingress: ['tollgate_ingress_requests_total', 'tollgate_ingress_request_seconds',
      'tollgate_ingress_ttft_seconds', 'tollgate_ingress_in_flight', 'tollgate_ingress_key_cache_size',
      'tollgate_ingress_sched_batch', 'tollgate_ingress_sched_switches_total'],
    dispatch: ['tollgate_upstream_attempts_total', 'tollgate_upstream_seconds', 'tollgate_upstream_ttfb_seconds',
      'tollgate_dispatch_failovers_total', 'tollgate_dispatch_in_flight', 'tollgate_dispatch_outbox',
      'tollgate_dispatch_sched_batch', 'tollgate_dispatch_sched_switches_total'],
    router: ['tollgate_router_breakers', 'tollgate_router_tables_total'],
    billing: ['tollgate_billing_outbox', 'tollgate_billing_settles_total'],
    ledger: ['tollgate_ledger_lag_seconds', 'tollgate_ledger_queue_depth', 'tollgate_ledger_spans_inserted_total'],
    health: ['tollgate_health_probes_total'],
    admin: [],
  };
  for (const program of programs) {
    const families = await waitFor(async () => {
      const found = await scrape(metrics[program]);
      return [...expected.all, ...expected[program]].every((name) => found.has(name)) ? found : null;
    }, { timeout: 5000, message: `${program}'s families` }).catch(async (error) => {
      const found = await scrape(metrics[program]);
      const missing = [...expected.all, ...expected[program]].filter((name) => !found.has(name));
      throw new Error(`${program} lacks ${missing.join(', ')}: ${error.message}`);
    });
    const info = families.get('tollgate_info').samples[0].labels;
    assert.equal(info.program, program);
    assert.ok(families.get('tollgate_process_resident_memory_bytes').samples[0].value > 1e6, `${program} RSS`);
    assert.equal(families.get('tollgate_log_level').samples.find((s) => s.labels.level === 'info').value, 1);
  }
  const ingress = await scrape(metrics.ingress);
  const ok200 = ingress.get('tollgate_ingress_requests_total').samples
    .find((s) => s.labels.model === 'obs-ok' && s.labels.status === '200');
  assert.ok(ok200.value >= 2, 'requests by route, model and status');
  assert.ok(ingress.get('tollgate_ingress_ttft_seconds').samples.find((s) => s.name.endsWith('_count')).value >= 1);
  const dispatch = await scrape(metrics.dispatch);
  assert.ok(dispatch.get('tollgate_upstream_attempts_total').samples
    .some((s) => s.labels.provider === 'first' && s.labels.model === 'obs-ok' && s.labels.status === '200'));
  const count = (families, type, direction) => families.get('tollgate_messages_total').samples
    .find((s) => s.labels.type === type && s.labels.direction === direction)?.value ?? 0;
  assert.ok(count(dispatch, 'DISPATCH', 'in') >= 2, 'dispatch counts the DISPATCHes it received');
  assert.ok(count(dispatch, 'OUTCOME', 'out') >= 2, 'dispatch counts the OUTCOMEs it published');
  // Admin's workers ask the routers from threads of their own: still admin's messages.
  assert.equal((await ctx.api('GET', '/admin/breakers')).status, 200);
  const admin = await scrape(metrics.admin);
  assert.ok(count(admin, 'BREAKERS', 'out') >= 1, 'admin counts the BREAKERS its workers sent');
  assert.ok(count(admin, 'BREAKERS_REPLY', 'in') >= 1, 'admin counts the answers its workers read');
  // Only /metrics is served.
  assert.equal((await fetch(`http://${metrics.ingress}/other`)).status, 404);
});

test('a request that failed over twice shows both failed attempts in its timeline', async () => {
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
  const response = await chat(ctx, client.key, { model: 'obs-failover' },
    { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } });
  assert.equal(response.status, 200, response.text);
  const row = await usageRow(ctx, response.id);
  assert.equal(Number(row.attempts), 3);
  // A failed-over request keeps its spans whatever the sampling says.
  const wanted = ['ingress.request', 'ingress.admission', 'dispatch.route',
    'dispatch.attempt', 'billing.settle', 'ledger.commit'];
  const request = await waitFor(async () => {
    const answer = await ctx.api('GET', `/admin/requests/${response.id}`);
    if (answer.status !== 200) return null;
    const names = new Set(answer.body.spans.map((s) => s.name));
    const attempts = answer.body.spans.filter((s) => s.name === 'dispatch.attempt');
    return wanted.every((name) => names.has(name)) && attempts.length === 3 ? answer.body : null;
  }, { timeout: 5000, message: 'the whole timeline' });
  const attempts = request.spans.filter((s) => s.name === 'dispatch.attempt');
  assert.deepEqual(attempts.map((s) => [s.attempt, s.provider, s.status]),
    [[1, 'first', 500], [2, 'second', 500], [3, 'third', 200]]);
  for (const span of request.spans) {
    assert.equal(span.trace_id, traceId, `${span.name} under the client's trace`);
    assert.ok(span.program && span.instance && span.started_at, JSON.stringify(span));
  }
  // In time order, from several processes.
  const times = request.spans.map((s) => Date.parse(s.started_at));
  assert.deepEqual(times, [...times].sort((a, b) => a - b));
  assert.ok(new Set(request.spans.map((s) => s.program)).size >= 4);
  const decide = request.spans.find((s) => s.name === 'dispatch.route');
  assert.equal(decide.attributes.count, 3);
  // And in the CLI, one line per span.
  const shown = await tollgate(['requests', 'show', response.id], { env: { TOLLGATE_DIR: ctx.cluster.dir } });
  assert.equal(shown.code, 0, shown.stderr);
  const lines = shown.stdout.split('\n').filter((line) => line.includes('dispatch.attempt'));
  assert.equal(lines.length, 3, shown.stdout);
  assert.match(lines[0], /status=500 attempt=1 provider=first/);
  assert.match(lines[1], /status=500 attempt=2 provider=second/);
  assert.match(lines[2], /status=200 attempt=3 provider=third/);
  // The failovers show in dispatch's metrics too.
  const dispatch = await scrape(metrics.dispatch);
  assert.ok(dispatch.get('tollgate_dispatch_failovers_total').samples[0].value >= 2);
  assert.ok(dispatch.get('tollgate_upstream_attempts_total').samples
    .some((s) => s.labels.provider === 'second' && s.labels.status === '500'));
});

test('a slow request keeps its spans, a long stream with a quick first byte does not', async () => {
  // Slow is a wait (trace.slow_ms): a stream by its first byte, a whole
  // answer by its duration. A generation that streams for long is not slow.
  const spansOf = async (id) => {
    const answer = await ctx.api('GET', `/admin/requests/${id}`);
    return answer.status === 200 ? answer.body.spans : [];
  };
  const long = await chat(ctx, client.key, { model: 'obs-long', stream: true });
  assert.equal(long.status, 200, long.text);
  assert.equal(sse(long.text).events.filter((e) => e.choices?.[0]?.delta?.content).length, 5);
  const waitedStream = await chat(ctx, client.key, { model: 'obs-wait', stream: true });
  assert.equal(waitedStream.status, 200, waitedStream.text);
  const waitedWhole = await chat(ctx, client.key, { model: 'obs-wait' });
  assert.equal(waitedWhole.status, 200, waitedWhole.text);
  const wanted = ['ingress.request', 'ingress.admission', 'dispatch.route', 'dispatch.attempt',
    'billing.settle', 'ledger.commit'];
  for (const id of [waitedStream.id, waitedWhole.id]) {
    await waitFor(async () => {
      const names = new Set((await spansOf(id)).map((s) => s.name));
      return wanted.every((name) => names.has(name));
    }, { timeout: 5000, message: `the whole timeline of slow request ${id}` });
  }
  // The long stream's spans would have gone before the later requests' did.
  await usageRow(ctx, long.id);
  assert.deepEqual((await spansOf(long.id)).map((s) => s.name), []);
});

test('spans older than the retention are pruned in the background', async () => {
  await ctx.cluster.psql("INSERT INTO spans (request_id, name, program, instance, started_at) "
    + "VALUES ('old-one', 'ingress.request', 'ingress', 'x', now() - interval '30 days')");
  await waitFor(async () => (await ctx.cluster.psql("SELECT count(*) AS n FROM spans WHERE request_id = 'old-one'"))[0].n === '0',
    { timeout: 5000, message: 'the old span to be pruned' });
  // Recent ones stay.
  const recent = await ctx.cluster.psql("SELECT count(*) AS n FROM spans WHERE started_at > now() - interval '1 hour'");
  assert.ok(Number(recent[0].n) > 0);
});

test('tollgate top shows attempts, errors and breakers per provider', async () => {
  // A 429 opens the (provider, model) breaker at once.
  assert.equal((await chat(ctx, client.key, { model: 'obs-429' })).status, 200);
  const addresses = ['ingress', 'dispatch', 'router'].map((program) => metrics[program]).join(',');
  const frame = await waitFor(async () => {
    const result = await tollgate(['top', '--once', '--json', '--interval', '200', '--metrics', addresses]);
    assert.equal(result.code, 0, result.stderr);
    const parsed = JSON.parse(result.stdout);
    const first = parsed.providers.find((p) => p.provider === 'first');
    return first?.breaker === 'open' ? parsed : null;
  }, { timeout: 5000, message: "top to show first's open breaker" });
  assert.equal(frame.sources, 3);
  const byName = Object.fromEntries(frame.providers.map((p) => [p.provider, p]));
  assert.deepEqual(Object.keys(byName).sort(), ['first', 'second', 'third']);
  assert.ok(byName.first.errors_total >= 2, 'the 500 and the 429');
  assert.ok(byName.second.errors_total >= 1);
  assert.ok(byName.third.attempts_total >= 1);
  assert.ok(byName.first.latency_p50_ms > 0);
  assert.deepEqual(byName.first.breakers, [{ layer: 'model', target: 'obs-429', state: 'open' }]);
  assert.equal(byName.third.breaker, 'closed');
  assert.ok(frame.gateway.requests_total >= 4);
  // The same with the addresses from the environment, as a table.
  const env = Object.fromEntries(['ingress', 'dispatch', 'router']
    .map((program) => [`TOLLGATE_${program.toUpperCase()}_METRICS_LISTEN`, metrics[program]]));
  const table = await tollgate(['top', '--once', '--interval', '200', '--dir', ctx.cluster.dir], { env });
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^first\s.*open \(model obs-429 open\)$/m);
  assert.match(table.stdout, /^third\s.*closed$/m);
  // Nothing to read: a clear refusal.
  const none = await tollgate(['top', '--once', '--metrics', `127.0.0.1:${await freePort()}`]);
  assert.equal(none.code, 1);
});

test('the Grafana dashboard queries only families the programs serve', async () => {
  const dashboard = JSON.parse(fs.readFileSync(new URL('../../ops/grafana/tollgate.json', import.meta.url), 'utf8'));
  const served = new Set();
  for (const program of programs) for (const name of (await scrape(metrics[program])).keys()) served.add(name);
  const ids = new Set();
  let queries = 0;
  for (const panel of dashboard.panels) {
    assert.ok(!ids.has(panel.id), `panel id ${panel.id} twice`);
    ids.add(panel.id);
    if (panel.type === 'row') continue;
    assert.ok(panel.title && panel.gridPos && panel.targets.length, panel.title);
    for (const target of panel.targets) {
      queries++;
      for (const name of target.expr.match(/\btollgate_[a-z_]+/g)) {
        const family = name.replace(/_(bucket|sum|count)$/, '');
        assert.ok(served.has(family) || served.has(name), `${panel.title}: ${name} is not served`);
      }
    }
  }
  assert.ok(queries >= 20);
});
