// The client edge under abuse: metrics label values are escaped (a model name with a quote
// does not break a scrape), /metrics on the client port can be turned off or need a token,
// and ?key= is a credential only where a protocol defines it (Gemini).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { startCluster, startMock, waitFor } from '../lib/harness.mjs';
import { parsePrometheus } from '../observability/prom.mjs';
import { addClient, addProvider, ok } from '../routing/lib.mjs';

let mock;
let ctx;
let client;
const quoted = 'q"uo\\ted';

before(async () => {
  mock = await startMock(['--models', 'up']);
  const cluster = await startCluster({ env: { TOLLGATE_INGRESS_CLIENT_METRICS_TOKEN: 'scrape-secret' } });
  ctx = { cluster, api: (method, path, body) => apiCall(cluster, method, path, body) };
  await addProvider(ctx, 'pa', mock.url);
  await ok(ctx, 'POST', '/admin/models', { name: quoted, routes: [{ provider: 'pa', upstream_model: 'up' }] });
  client = await addClient(ctx, 'edges');
});

after(async () => {
  await ctx?.cluster.stop();
  await mock?.stop();
});

async function apiCall(cluster, method, path, body) {
  const response = await fetch(cluster.admin + path, {
    method,
    headers: { authorization: `Bearer ${cluster.token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: response.status, body: json ?? text };
}

test('a model name with a quote and a backslash: the scrape still parses, the label reads back', async () => {
  await waitFor(async () => {
    const response = await fetch(`${ctx.cluster.gateway}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${client.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: quoted, messages: [{ role: 'user', content: 'hi' }] }),
    });
    await response.text();
    return response.status === 200;
  }, { timeout: 10000, message: 'a request for the quoted model' });
  const scrape = await fetch(`${ctx.cluster.gateway}/metrics`, { headers: { authorization: 'Bearer scrape-secret' } });
  assert.equal(scrape.status, 200);
  const families = parsePrometheus(await scrape.text());
  const requests = families.get('tollgate_ingress_requests_total');
  assert.ok(requests.samples.some((s) => s.labels.model === quoted && s.labels.status === '200'),
    JSON.stringify(requests.samples.map((s) => s.labels)));
});

test('/metrics on the client port needs its token when one is set', async () => {
  assert.equal((await fetch(`${ctx.cluster.gateway}/metrics`)).status, 401);
  const wrong = await fetch(`${ctx.cluster.gateway}/metrics`, { headers: { authorization: 'Bearer scrape-secreT' } });
  assert.equal(wrong.status, 401);
  assert.equal((await fetch(`${ctx.cluster.gateway}/metrics`, { headers: { authorization: 'Bearer scrape-secret' } })).status, 200);
});

test('?key= authenticates on Gemini routes only', async () => {
  const openai = await fetch(`${ctx.cluster.gateway}/v1/chat/completions?key=${client.key}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: quoted, messages: [{ role: 'user', content: 'hi' }] }),
  });
  assert.equal(openai.status, 401, await openai.text());
  const gemini = await fetch(`${ctx.cluster.gateway}/v1beta/models/${encodeURIComponent(quoted)}:generateContent?key=${client.key}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
  });
  assert.notEqual(gemini.status, 401, await gemini.text());
});

test('a 15 MiB array of zeros is refused by counting, not parsed', async () => {
  const zeros = `{"model":"x","messages":[${'0,'.repeat(7.5 * 1024 * 1024)}0]}`;
  const response = await fetch(`${ctx.cluster.gateway}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${client.key}`, 'content-type': 'application/json' },
    body: zeros,
  });
  assert.equal(response.status, 413);
  assert.match((await response.json()).error.message, /more than 1000000 JSON values/);
});
