// The chaos benchmark's load and its faults (bench/chaos.sh starts the processes).
//
//   node bench/chaos.mjs ADMIN_URL ADMIN_TOKEN GATEWAY_URL HEALTHY_MOCK FLAKY_MOCK HANGING_MOCK SECONDS
//
// Three providers serve one upstream model, "chaos-up": `healthy`; `flaky`, whose mock fails
// every third request with a 500 (flap:3, 33%); `hanging`, whose mock is made to hang for
// 50 ms of every second (its runtime fault is switched on and off from here), so about 5% of
// the requests it gets never answer and dispatch gives up at the first-byte timeout. The
// mock has no per-request probability, so these are the nearest it offers.
//
// For each scheduling mode, WORKERS clients send plain and streamed completions back to back
// for SECONDS; first the baseline, a model routed to `healthy` only, then the chaos model
// routed to all three. Prints one JSON line per run (RESULT {...}): requests, client-visible
// successes, latency percentiles, and how many requests needed more than one attempt.
import http from 'node:http';

const [admin, token, gateway, healthyMock, flakyMock, hangingMock, seconds = '15'] = process.argv.slice(2);
const WORKERS = 16;
const duration = Number(seconds) * 1000;

async function api(method, path, body) {
  const response = await fetch(admin + path, {
    method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (response.status >= 300) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

async function setFault(mock, spec) {
  await fetch(`${mock}/mock/faults`, { method: 'POST', body: JSON.stringify({ model: 'chaos-up', fault: spec }) });
}

const agent = new http.Agent({ keepAlive: true, maxSockets: WORKERS * 2 });
const target = new URL(gateway);

// One completion; resolves { ok, ms }. ok: 200 and, for a stream, [DONE] with no error event.
function request(key, model, stream) {
  const body = JSON.stringify({ model, stream, messages: [{ role: 'user', content: 'chaos' }] });
  const started = process.hrtime.bigint();
  return new Promise((resolve) => {
    const req = http.request({
      host: target.hostname, port: target.port, path: '/v1/chat/completions', method: 'POST', agent,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'content-length': Buffer.byteLength(body) },
    }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => { text += chunk; });
      response.on('end', () => {
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        let ok = response.statusCode === 200;
        if (ok && stream) ok = text.includes('data: [DONE]') && !/"error"\s*:/.test(text);
        if (ok && !stream) ok = text.includes('"choices"');
        resolve({ ok, ms, status: response.statusCode, id: response.headers['x-request-id'] });
      });
    });
    req.on('error', () => resolve({ ok: false, ms: Number(process.hrtime.bigint() - started) / 1e6, status: 0 }));
    req.end(body);
  });
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : 0;
}

async function load(key, model) {
  const results = [];
  const end = Date.now() + duration;
  let turn = 0;
  await Promise.all(Array.from({ length: WORKERS }, async () => {
    while (Date.now() < end) results.push(await request(key, model, (turn++ % 2) === 1));
  }));
  return results;
}

// Switches the hanging mock's fault on for 50 ms of every second until stopped.
function hangFor5Percent() {
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      await setFault(hangingMock, 'hang');
      await new Promise((resolve) => setTimeout(resolve, 50));
      await setFault(hangingMock, '');
      await new Promise((resolve) => setTimeout(resolve, 950));
    }
  })();
  return async () => { stopped = true; await loop; await setFault(hangingMock, ''); };
}

// How many of a run's requests took more than one attempt, from their usage rows (the
// admin API's request list, paged by next_before), read a moment after the run.
async function attempts(ids) {
  await new Promise((resolve) => setTimeout(resolve, 1500));
  let multi = 0;
  let seen = 0;
  let before = null;
  do {
    const page = await api('GET', `/admin/requests?limit=1000${before ? `&before=${encodeURIComponent(before)}` : ''}`);
    for (const row of page.data) {
      if (!ids.has(row.request_id)) continue;
      seen++;
      if (row.attempts > 1) multi++;
    }
    before = page.next_before;
  } while (before && seen < ids.size);
  return { multi, seen };
}

const { key } = await api('POST', '/admin/keys', { account: 'chaos' });
const report = async (label, mode, results) => {
  const ok = results.filter((r) => r.ok).length;
  const sorted = results.map((r) => r.ms).sort((a, b) => a - b);
  const { multi, seen } = await attempts(new Set(results.map((r) => r.id).filter(Boolean)));
  const statuses = {};
  for (const r of results.filter((x) => !x.ok)) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
  const line = {
    run: label, mode, requests: results.length, ok, success: Number((100 * ok / results.length).toFixed(3)),
    p50: Number(percentile(sorted, 50).toFixed(1)), p90: Number(percentile(sorted, 90).toFixed(1)),
    p99: Number(percentile(sorted, 99).toFixed(1)), max: Number(sorted.at(-1).toFixed(1)),
    failed_over: multi, rows: seen, failures: statuses,
  };
  console.log(`RESULT ${JSON.stringify(line)}`);
  return line;
};

// Warm the keys and catalog, then the baseline: the healthy provider alone.
for (let i = 0; i < 20; i++) await request(key, 'baseline', false);
await report('baseline', 'priority', await load(key, 'baseline'));

for (const mode of ['weighted', 'latency']) {
  await api('PATCH', '/admin/models/chaos', { scheduling: mode });
  await api('POST', '/admin/breakers/reset', { provider: 'hanging', upstream_model: 'chaos-up' }).catch(() => {});
  const stop = hangFor5Percent();
  const results = await load(key, 'chaos');
  await stop();
  await report('chaos', mode, results);
  const breakers = await api('GET', '/admin/breakers');
  console.log(`BREAKERS ${mode} ${JSON.stringify(breakers.data.map((b) => `${b.provider ?? b.provider_key_id}:${b.layer}:${b.state}:${b.reason}`))}`);
}
agent.destroy();
