// Helpers shared by the routing tests (tests/routing/*.test.mjs): the admin API, client
// requests through the gateway, the mock upstreams' counters and runtime faults, and the
// usual setup of several providers pointing at several mock upstreams.
import assert from 'node:assert/strict';

import { startCluster, startMock, waitFor } from '../lib/harness.mjs';

// A cluster, the mocks behind it and a client key. `mocks` is a list of mock argument lists
// (one mock each); `env` goes to every program of the cluster.
export async function setup({ mocks = [[]], env = {} } = {}) {
  const started = await Promise.all(mocks.map((args) => startMock(args)));
  const cluster = await startCluster({ env });
  const ctx = { cluster, mocks: started, env };
  ctx.api = (method, path, body, token = cluster.token) => api(cluster, method, path, body, token);
  ctx.stop = async () => {
    await cluster.stop();
    await Promise.all(started.map((mock) => mock.stop()));
  };
  return ctx;
}

// One admin call. Resolves { status, body } (body parsed when JSON).
export async function api(cluster, method, path, body, token = cluster.token) {
  const headers = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(cluster.admin + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: response.status, body: json ?? text };
}

// An admin call that must succeed with `status` (default 2xx). Resolves the body.
export async function ok(ctx, method, path, body, status) {
  const answer = await ctx.api(method, path, body);
  if (status ? answer.status !== status : (answer.status < 200 || answer.status > 299)) {
    assert.fail(`${method} ${path} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  }
  return answer.body;
}

// Adds a provider (one key) pointing at base_url. Resolves { id, keyId }.
export async function addProvider(ctx, name, baseUrl, { priority = 0, weight = 1, protocol = 'openai', key = {} } = {}) {
  const provider = await ok(ctx, 'POST', '/admin/providers', { name, protocol, base_url: baseUrl, priority, weight });
  const made = await ok(ctx, 'POST', `/admin/providers/${name}/keys`, { secret: `sk-${name}-secret-0000`, ...key });
  return { id: provider.id, keyId: made.id };
}

// An account with a balance and a client key for it. Resolves { key, keyId, accountId }.
export async function addClient(ctx, account, balance = '1000') {
  const made = await ok(ctx, 'POST', '/admin/accounts', { name: account, balance });
  const key = await ok(ctx, 'POST', '/admin/keys', { account });
  return { key: key.key, keyId: key.id, accountId: made.id };
}

// A client request through the gateway (OpenAI chat). Resolves { status, headers, text, json }.
export async function chat(ctx, key, body, { headers = {}, signal } = {}) {
  const response = await fetch(`${ctx.cluster.gateway}/v1/chat/completions`, {
    method: 'POST', signal,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, ...headers },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'Say hello' }], ...body }),
  });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* streams */ }
  return { status: response.status, headers: response.headers, text, json, id: response.headers.get('x-request-id') };
}

// Parses an OpenAI SSE body: { events (parsed data objects), done (saw [DONE]), error }.
export function sse(text) {
  const events = [];
  let done = false;
  let error = null;
  for (const block of text.split('\n\n')) {
    const data = block.split('\n').filter((line) => line.startsWith('data:')).map((line) => line.slice(5).trim()).join('\n');
    if (!data) continue;
    if (data === '[DONE]') { done = true; continue; }
    let parsed;
    try { parsed = JSON.parse(data); } catch { parsed = { unparsable: data }; }
    if (parsed.error) error = parsed.error;
    events.push(parsed);
  }
  return { events, done, error };
}

export async function mockStats(mock) {
  return (await fetch(`${mock.url}/mock/stats`)).json();
}

// Requests the mock saw for a model so far.
export async function seen(mock, model) {
  return (await mockStats(mock)).models[model] ?? 0;
}

// Sets (or with '' clears) a runtime fault on a mock for a model.
export async function fault(mock, model, spec) {
  const response = await fetch(`${mock.url}/mock/faults`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, fault: spec }),
  });
  assert.equal(response.status, 200, await response.text());
}

// Waits until the router explains `model` with candidates satisfying `check(explain)`:
// the catalog (and mappings) reach the routers a few ms after a change.
// Every router is asked (?router=N), since ingress spreads ROUTEs over all of them.
export async function explainUntil(ctx, body, check, message = 'the routers to see the change', timeout = 8000) {
  return waitFor(async () => {
    const first = await ctx.api('POST', '/admin/routing/decide', body);
    if (first.status !== 200 || !check(first.body)) return null;
    const count = (await ctx.api('GET', '/admin/breakers')).body.routers?.length ?? 1;
    for (let i = 0; i < count; i++) {
      const answer = await ctx.api('POST', `/admin/routing/decide?router=${i}`, body);
      if (answer.status !== 200 || !check(answer.body)) return null;
    }
    return first.body;
  }, { timeout, interval: 50, message });
}

// Dispatch decides from its own copy of the catalog, which reloads a moment after the routers'
// explanation shows a change: waits until requests are routed as `check(counts)` wants, a few
// at a time, so that a distribution measured next starts from the new catalog everywhere.
export async function routedUntil(ctx, key, model, check, message = 'dispatch to route by the change') {
  await waitFor(async () => check((await distribution(ctx, key, model, 4, { concurrency: 4 })).counts),
    { timeout: 10000, interval: 100, message });
}

// The usage row of a request, once the ledger wrote it.
export async function usageRow(ctx, requestId, timeout = 8000) {
  return waitFor(async () => {
    const rows = await ctx.cluster.psql(`SELECT * FROM usage WHERE request_id = '${requestId}'`);
    return rows[0] ?? null;
  }, { timeout, message: `the usage row of ${requestId}` });
}

// Counts, per provider id, which provider answered each of `n` requests (from the usage
// rows, so nothing depends on response headers). Resolves { counts, rows }.
export async function distribution(ctx, key, model, n, { concurrency = 20, body = {}, headers = {} } = {}) {
  const ids = [];
  let next = 0;
  async function worker() {
    while (next < n) {
      next++;
      const response = await chat(ctx, key, { model, ...body }, { headers });
      assert.equal(response.status, 200, response.text);
      ids.push(response.id);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  const list = ids.map((id) => `'${id}'`).join(',');
  const rows = await waitFor(async () => {
    const found = await ctx.cluster.psql(`SELECT request_id, provider_id, attempts FROM usage WHERE request_id IN (${list})`);
    return found.length === ids.length ? found : null;
  }, { timeout: 15000, message: `${n} usage rows` });
  const counts = {};
  for (const row of rows) counts[row.provider_id] = (counts[row.provider_id] ?? 0) + 1;
  return { counts, rows };
}
