// Completion probes (docs/routing.md section 6) through the real programs: scheduled 1-token
// probes of every (key, model) pair stop at the day's cost cap; `tollgate health probe`
// asks for them on demand and shows the results; failed probes open the (provider, model)
// breaker with no client request at all; a passing probe leaves a breaker that is still
// cooling down alone and closes a half-open one.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, fault, ok, setup } from './lib.mjs';

const COOLDOWN_MS = 6000;
let ctx;
let provider;

// The probes a mock received for a model: 1-token requests saying "ping".
async function probesSeen(mock, model) {
  const { requests } = await (await fetch(`${mock.url}/mock/requests`)).json();
  return requests.filter((entry) => entry.model === model && entry.body?.max_tokens === 1 &&
    entry.body?.messages?.[0]?.content === 'ping');
}

async function breaker(upstream) {
  const answer = await ok(ctx, 'GET', '/admin/breakers');
  return answer.data.find((b) => b.layer === 'model' && b.provider_id === provider.id && b.upstream_model === upstream) ?? null;
}

async function probe(args) {
  const result = await ctx.cluster.tollgate(['health', 'probe', 'pp', ...args, '--json', '--dir', ctx.cluster.dir]);
  return { code: result.code, answer: result.stdout ? JSON.parse(result.stdout) : null, stderr: result.stderr };
}

before(async () => {
  ctx = await setup({
    mocks: [['--models', 'pm-up,sched-up']],
    env: {
      TOLLGATE_HEALTH_COMPLETION_PROBE_INTERVAL_MS: '400',
      // Each scheduled probe of sched-up costs 100 (its per-request price): three a day.
      TOLLGATE_HEALTH_PROBE_BUDGET_MICROS: '350',
      TOLLGATE_ROUTER_COOLDOWN_5XX_MS: String(COOLDOWN_MS),
    },
  });
  provider = await addProvider(ctx, 'pp', ctx.mocks[0].url);
  await ok(ctx, 'POST', '/admin/models', { name: 'sched', price_request: '0.0001', routes: [{ provider: 'pp', upstream_model: 'sched-up' }] });
  await addClient(ctx, 'probed');
});

after(async () => { await ctx?.stop(); });

test('scheduled probes of every pair stop at the day\'s cost cap', async () => {
  const [mock] = ctx.mocks;
  await waitFor(async () => (await probesSeen(mock, 'sched-up')).length >= 3, { timeout: 10000, message: 'three scheduled probes' });
  // The schedule runs every 400 ms; the budget allows three.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  assert.equal((await probesSeen(mock, 'sched-up')).length, 3);
  const rows = (await ok(ctx, 'GET', '/admin/providers/pp/probes')).data;
  const row = rows.find((r) => r.upstream_model === 'sched-up');
  assert.equal(row.ok, true);
  assert.equal(row.on_demand, false);
  assert.equal(row.provider_key_id, provider.keyId);
  assert.equal(row.cost_micros, 100, 'counted at its per-request price');
});

test('failed probes open the breaker with no client request; a passing one closes it only once half-open', async () => {
  const [mock] = ctx.mocks;
  // Priced like sched: over what is left of the budget, so only on-demand probes reach it.
  await ok(ctx, 'POST', '/admin/models', { name: 'pm', price_request: '0.0001', routes: [{ provider: 'pp', upstream_model: 'pm-up' }] });
  await fault(mock, 'pm-up', '500');
  // Health probes the pairs of its own copy of the catalog, which reloads a moment after the
  // change; its mappings in model_mappings say when that copy has the new model.
  await waitFor(async () => (await ctx.cluster.psql(`SELECT 1 FROM model_mappings m JOIN models ON models.id = m.model_id
    WHERE models.name = 'pm' AND m.upstream_model = 'pm-up'`)).length > 0, { timeout: 10000, message: 'health to map pm' });
  // On demand, over the budget: counted, not stopped. Three failures in a row open it.
  for (let i = 0; i < 3; i++) {
    const { code, answer } = await probe(['--model', 'pm-up']);
    assert.equal(code, 1, 'a failed probe exits 1');
    assert.equal(answer.ok, false);
    assert.equal(answer.data.length, 1);
    assert.equal(answer.data[0].status, 500);
    assert.equal(answer.data[0].on_demand, true, JSON.stringify(answer));
  }
  const opened = await waitFor(async () => { const b = await breaker('pm-up'); return b?.state === 'open' ? b : null; },
    { timeout: 5000, message: 'the breaker to open' });
  assert.equal(opened.reason, '5xx');
  const seen = await probesSeen(mock, 'pm-up');
  assert.ok(seen.length >= 3);
  assert.equal((await fetch(`${mock.url}/mock/stats`).then((r) => r.json())).models['pm-up'], seen.length, 'no client request reached it');

  // Healthy again, but still cooling down: a passing probe leaves it open.
  await fault(mock, 'pm-up', '');
  const passed = await probe(['--model', 'pm']);
  assert.equal(passed.code, 0, passed.stderr);
  assert.equal(passed.answer.data[0].upstream_model, 'pm-up', 'a logical model name probes its pairs');
  assert.equal((await breaker('pm-up'))?.state, 'open');
  // Half-open after the cooldown: the next passing probe closes it.
  await waitFor(async () => (await breaker('pm-up'))?.state === 'half_open', { timeout: COOLDOWN_MS * 3, message: 'half-open' });
  assert.equal((await probe(['--model', 'pm-up'])).code, 0);
  await waitFor(async () => (await breaker('pm-up')) === null, { timeout: 5000, message: 'the breaker to close' });
});

test('the CLI without --json prints a table; bad requests name the field', async () => {
  const result = await ctx.cluster.tollgate(['health', 'probe', 'pp', '--model', 'pm-up', '--dir', ctx.cluster.dir]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /PROVIDER\s+KEY\s+MODEL\s+OK/);
  assert.match(result.stdout, /pm-up\s+yes/);
  const bad = await ctx.api('POST', '/admin/providers/pp/probe', { model: 7 });
  assert.equal(bad.status, 400);
  assert.match(bad.body.error.message, /'model'/);
  const unknown = await ctx.api('POST', '/admin/providers/pp/probe', { models: 'x' });
  assert.equal(unknown.status, 400);
  assert.equal((await ctx.api('POST', '/admin/providers/nope/probe', {})).status, 404);
  const badWait = await ctx.cluster.tollgate(['health', 'probe', 'pp', '--wait', '0', '--dir', ctx.cluster.dir]);
  assert.equal(badWait.code, 2);
});
