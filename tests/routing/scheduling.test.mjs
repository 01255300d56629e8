// Routing decisions through the gateway, with three mock upstreams as three providers and
// two routers (the cluster's, and a second tollgate-router on the same configuration; dispatch
// decides from the routing tables both publish): each scheduling mode's distribution over many
// requests, breaker transitions as GET /admin/breakers shows them in both routers, the
// last-resort path, session stickiness by rendezvous hashing, and capability filtering.
//
// Tolerances: n requests split with probability p land within p +- 4 * sqrt(p(1-p)/n), about
// four standard deviations, so a correct router fails this about once in 15 000 runs.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { freePort, startProgram, waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, chat, distribution, explainUntil, fault, ok, routedUntil, setup, usageRow } from './lib.mjs';

const COOLDOWN_MS = 1500;

let ctx;
let client;
let router2;
const providers = [];

function within(count, n, p, what) {
  const share = count / n;
  const tolerance = 4 * Math.sqrt((p * (1 - p)) / n);
  assert.ok(Math.abs(share - p) <= tolerance, `${what}: ${count}/${n} = ${share.toFixed(3)}, expected ${p} +- ${tolerance.toFixed(3)}`);
}

before(async () => {
  const [one, two, tableOne, tableTwo] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const env = {
    TOLLGATE_ROUTER_BIND: `tcp://127.0.0.1:${one}`,
    TOLLGATE_ROUTER_ENDPOINTS: `tcp://127.0.0.1:${one},tcp://127.0.0.1:${two}`,
    TOLLGATE_ROUTER_TABLE_BIND: `tcp://127.0.0.1:${tableOne}`,
    TOLLGATE_ROUTER_TABLE_ENDPOINTS: `tcp://127.0.0.1:${tableOne},tcp://127.0.0.1:${tableTwo}`,
    TOLLGATE_ROUTER_COOLDOWN_5XX_MS: String(COOLDOWN_MS),
  };
  const models = 'w-up,t-up,c-up,k-up,b-up,lr-up,s-up,cap-up';
  ctx = await setup({ mocks: [['--models', models], ['--models', models], ['--models', models]], env });
  router2 = startProgram('tollgate-router', ['--config', path.join(ctx.cluster.dir, 'tollgate.conf'),
    '--set', `router.bind=tcp://127.0.0.1:${two}`,
    '--set', `router.table.bind=tcp://127.0.0.1:${tableTwo}`,
    '--set', `router.control_bind=ipc://${ctx.cluster.dir}/run/router2-control.sock`], { env });
  for (let i = 0; i < 3; i++) providers.push(await addProvider(ctx, `p${i + 1}`, ctx.mocks[i].url));
  const route = (i, extra = {}) => ({ provider: `p${i + 1}`, ...extra });
  await ok(ctx, 'POST', '/admin/models', { name: 'w', routes: [route(0, { upstream_model: 'w-up', weight: 1 }), route(1, { upstream_model: 'w-up', weight: 3 })] });
  await ok(ctx, 'PATCH', '/admin/models/w', { scheduling: 'weighted' });
  await ok(ctx, 'POST', '/admin/models', { name: 't', routes: [route(0, { upstream_model: 't-up' }), route(1, { upstream_model: 't-up' }), route(2, { upstream_model: 't-up', priority: -1 })] });
  await ok(ctx, 'POST', '/admin/models', { name: 'c', routes: [0, 1, 2].map((i) => route(i, { upstream_model: 'c-up' })) });
  await ok(ctx, 'PATCH', '/admin/models/c', { scheduling: 'cost' });
  await ok(ctx, 'POST', '/admin/models', { name: 'k', routes: [0, 1, 2].map((i) => route(i, { upstream_model: 'k-up' })) });
  await ok(ctx, 'PATCH', '/admin/models/k', { scheduling: 'key_priority' });
  await ok(ctx, 'POST', '/admin/models', { name: 'b', routes: [route(0, { upstream_model: 'b-up', priority: 5 }), route(1, { upstream_model: 'b-up' })] });
  await ok(ctx, 'POST', '/admin/models', { name: 'lr', routes: [route(0, { upstream_model: 'lr-up', priority: 5 }), route(1, { upstream_model: 'lr-up' })] });
  await ok(ctx, 'POST', '/admin/models', { name: 's', routes: [0, 1, 2].map((i) => route(i, { upstream_model: 's-up' })) });
  await ok(ctx, 'PATCH', '/admin/models/s', { scheduling: 'weighted' });
  await ok(ctx, 'POST', '/admin/models', { name: 'cap', routes: [0, 1].map((i) => route(i, { upstream_model: 'cap-up' })) });
  client = await addClient(ctx, 'sched');
  // Both routers answer (the second one's catalog is loaded).
  await waitFor(async () => {
    const answer = await ctx.api('GET', '/admin/breakers');
    return answer.status === 200 && answer.body.routers.every((r) => r.answered);
  }, { timeout: 8000, message: 'both routers answer' });
  await waitFor(async () => (await chat(ctx, client.key, { model: 'w' })).status === 200, { timeout: 5000 });
});

after(async () => {
  if (process.env.ROUTING_DEBUG) console.error(router2?.output());
  await router2?.stop();
  await ctx?.stop();
});

describe('scheduling modes through the gateway', () => {
  test('weighted: route weights 1:3 lead 25/75', async () => {
    const n = 400;
    const { counts } = await distribution(ctx, client.key, 'w', n);
    within(counts[providers[1].id] ?? 0, n, 0.75, 'p2 (weight 3)');
    assert.equal((counts[providers[0].id] ?? 0) + (counts[providers[1].id] ?? 0), n);
  });

  test('priority: equal priorities split evenly, a lower one gets nothing', async () => {
    const n = 300;
    const { counts } = await distribution(ctx, client.key, 't', n);
    within(counts[providers[0].id] ?? 0, n, 0.5, 'p1 of two equal');
    assert.equal(counts[providers[2].id] ?? 0, 0, 'the lower priority is not chosen');
  });

  test('cost: the cheapest key leads; two equally cheap split evenly', async () => {
    await ok(ctx, 'PATCH', `/admin/provider-keys/${providers[2].keyId}`, { multiplier_ppm: 500000 });
    await explainUntil(ctx, { model: 'c' }, (e) => e.candidates[0]?.provider === 'p3');
    await routedUntil(ctx, client.key, 'c', (c) => c[providers[2].id] === 4);
    let { counts, rows } = await distribution(ctx, client.key, 'c', 60);
    if (process.env.ROUTING_DEBUG && counts[providers[2].id] !== 60) {
      console.error('attempts', JSON.stringify(rows.map((r) => `${r.provider_id}/${r.attempts}`)));
      for (const r of [0, 1]) console.error(JSON.stringify((await ok(ctx, 'POST', `/admin/routing/decide?router=${r}`, { model: 'c', key: client.keyId }))));
    }
    assert.equal(counts[providers[2].id], 60, JSON.stringify(counts));
    await ok(ctx, 'PATCH', `/admin/provider-keys/${providers[1].keyId}`, { multiplier_ppm: 500000 });
    await explainUntil(ctx, { model: 'c' }, (e) => e.candidates[1]?.score?.multiplier_ppm === 500000);
    await routedUntil(ctx, client.key, 'c', (c) => (c[providers[1].id] ?? 0) > 0 && !c[providers[0].id]);
    const n = 300;
    ({ counts } = await distribution(ctx, client.key, 'c', n));
    within(counts[providers[1].id] ?? 0, n, 0.5, 'p2 of two equally cheap');
    assert.equal(counts[providers[0].id] ?? 0, 0, 'the dearer key is not chosen');
    for (const p of providers) await ok(ctx, 'PATCH', `/admin/provider-keys/${p.keyId}`, { multiplier_ppm: 1000000 });
  });

  test('key_priority: the highest key priority across providers leads', async () => {
    await ok(ctx, 'PATCH', `/admin/provider-keys/${providers[1].keyId}`, { priority: 5 });
    await explainUntil(ctx, { model: 'k' }, (e) => e.candidates[0]?.provider === 'p2');
    await routedUntil(ctx, client.key, 'k', (c) => c[providers[1].id] === 4);
    const { counts, rows } = await distribution(ctx, client.key, 'k', 60);
    if (process.env.ROUTING_DEBUG && counts[providers[1].id] !== 60) {
      console.error('attempts', JSON.stringify(rows.map((r) => `${r.provider_id}/${r.attempts}`)));
      for (const r of [0, 1]) console.error(JSON.stringify((await ok(ctx, 'POST', `/admin/routing/decide?router=${r}`, { model: 'k', key: client.keyId }))));
    }
    assert.equal(counts[providers[1].id], 60, JSON.stringify(counts));
    await ok(ctx, 'PATCH', `/admin/provider-keys/${providers[1].keyId}`, { priority: 0 });
  });
});

describe('breakers, in both routers', () => {
  const breakerIn = async (router, upstream) => {
    const answer = await ok(ctx, 'GET', `/admin/breakers?router=${router}`);
    return answer.data.find((b) => b.layer === 'model' && b.provider_id === providers[0].id && b.upstream_model === upstream) ?? null;
  };

  test('closed -> open -> half_open -> closed, and a failed trial re-opens with a doubled cooldown', async () => {
    await fault(ctx.mocks[0], 'b-up', '500');
    for (let i = 0; i < 3; i++) assert.equal((await chat(ctx, client.key, { model: 'b' })).status, 200, 'failover');
    // Outcomes reach both routers: the same breaker opens in each.
    // Outcomes travel in batches: wait for the state, not for the entry.
    const openIn = async (router) => { const b = await breakerIn(router, 'b-up'); return b?.state === 'open' ? b : null; };
    const open = [await waitFor(() => openIn(0), { timeout: 5000, message: 'open in router 0' }),
      await waitFor(() => openIn(1), { timeout: 5000, message: 'open in router 1' })];
    for (const b of open) {
      assert.equal(b.state, 'open');
      assert.equal(b.reason, '5xx');
      assert.ok(b.reopens_at_ms - b.opened_at_ms >= COOLDOWN_MS - 50 && b.reopens_at_ms - b.opened_at_ms <= COOLDOWN_MS + 50,
        `cooldown ${b.reopens_at_ms - b.opened_at_ms}`);
    }
    assert.ok(Math.abs(open[0].reopens_at_ms - open[1].reopens_at_ms) < 1000, 'the routers agree on the reopening time');
    const merged = await ok(ctx, 'GET', '/admin/breakers');
    assert.deepEqual(merged.data.find((b) => b.upstream_model === 'b-up').routers, [0, 1]);
    // Half-open after the cooldown; the trial fails (still 500): open again, for twice as long.
    await waitFor(async () => (await breakerIn(0, 'b-up'))?.state === 'half_open', { timeout: COOLDOWN_MS + 3000, message: 'half_open' });
    let reopened = null;
    for (let i = 0; i < 6 && !reopened; i++) {
      assert.equal((await chat(ctx, client.key, { model: 'b' })).status, 200);
      reopened = await waitFor(async () => {
        const b = await breakerIn(0, 'b-up');
        return b && b.state === 'open' && b.reopens_at_ms - b.opened_at_ms > COOLDOWN_MS * 1.5 ? b : null;
      }, { timeout: 500, message: 'reopened' }).catch(() => null);
    }
    assert.ok(reopened, 'a failed trial re-opens the breaker');
    assert.ok(Math.abs(reopened.reopens_at_ms - reopened.opened_at_ms - 2 * COOLDOWN_MS) <= 100, `doubled: ${reopened.reopens_at_ms - reopened.opened_at_ms}`);
    // Healthy again: the next trial succeeds and closes it in both routers.
    await fault(ctx.mocks[0], 'b-up', '');
    await waitFor(async () => {
      await chat(ctx, client.key, { model: 'b' });
      return !(await breakerIn(0, 'b-up')) && !(await breakerIn(1, 'b-up'));
    }, { timeout: 3 * COOLDOWN_MS + 5000, interval: 200, message: 'closed in both routers' });
    const explained = await ok(ctx, 'POST', '/admin/routing/decide', { model: 'b' });
    assert.equal(explained.candidates[0].provider, 'p1');
    assert.equal(explained.candidates[0].breaker, 'closed');
  });

  test('last resort: every candidate open, the best one goes alone and its success closes it', async () => {
    await fault(ctx.mocks[0], 'lr-up', '503');
    await fault(ctx.mocks[1], 'lr-up', '503');
    for (let i = 0; i < 3; i++) await chat(ctx, client.key, { model: 'lr' });
    await waitFor(async () => (await ok(ctx, 'GET', '/admin/breakers?router=0')).data.filter((b) => b.upstream_model === 'lr-up').length === 2
      && (await ok(ctx, 'GET', '/admin/breakers?router=1')).data.filter((b) => b.upstream_model === 'lr-up').length === 2,
    { timeout: 5000, message: 'both breakers open in both routers' });
    const explained = await ok(ctx, 'POST', '/admin/routing/decide', { model: 'lr' });
    assert.equal(explained.last_resort, true, JSON.stringify(explained));
    assert.equal(explained.candidates.length, 1);
    assert.equal(explained.candidates[0].provider, 'p1', 'the best by the model\'s order');
    await fault(ctx.mocks[0], 'lr-up', '');
    const response = await chat(ctx, client.key, { model: 'lr' });
    assert.equal(response.status, 200, response.text);
    await waitFor(async () => !(await breakerIn(0, 'lr-up')) && !(await breakerIn(1, 'lr-up')),
      { timeout: 3000, message: 'the last resort\'s success closes its breaker' });
    await fault(ctx.mocks[1], 'lr-up', '');
  });
});

describe('stickiness', () => {
  const providerOf = async (id) => Number((await usageRow(ctx, id)).provider_id);
  const session = (id) => ({ headers: { 'x-session-id': id } });

  test('X-Session-Id keeps a conversation on one candidate everywhere; accounts are placed apart', async () => {
    const ids = [];
    for (let i = 0; i < 20; i++) {
      const response = await chat(ctx, client.key, { model: 's' }, session('conv-1'));
      assert.equal(response.status, 200);
      ids.push(response.id);
    }
    const rows = await ctx.cluster.psql(`SELECT DISTINCT provider_id FROM usage WHERE request_id IN (${ids.map((id) => `'${id}'`).join(',')})`);
    assert.equal(rows.length, 1, `one provider for the whole conversation: ${JSON.stringify(rows)}`);
    // Both routers explain the same first choice for the session: dispatch
    // and routers run the same hash, with no binding stored anywhere.
    for (const router of [0, 1]) {
      const explained = await ok(ctx, 'POST', `/admin/routing/decide?router=${router}`, { model: 's', key: client.key, session: 'conv-1' });
      assert.equal(explained.candidates[0].provider_id, Number(rows[0].provider_id), `router ${router}`);
      assert.equal(explained.session.placement, 'rendezvous');
    }
    assert.deepEqual((await ok(ctx, 'GET', '/admin/sticky?session=conv-1')).data, []);
    // Other sessions spread over the three providers; the same session
    // strings under another account are placed on their own.
    const other = await addClient(ctx, 'sched-other');
    const spread = new Set();
    let same = 0;
    for (let i = 0; i < 30; i++) {
      const mine = await providerOf((await chat(ctx, client.key, { model: 's' }, session(`other-${i}`))).id);
      const theirs = await providerOf((await chat(ctx, other.key, { model: 's' }, session(`other-${i}`))).id);
      spread.add(mine);
      same += mine === theirs;
    }
    assert.ok(spread.size >= 2, 'different sessions are not all placed on one provider');
    assert.ok(same < 30, 'two accounts sending the same session strings share no placement');
  });

  test('a failing candidate moves the session to its own next choice, the same for each request', async () => {
    const first = await chat(ctx, client.key, { model: 's' }, session('conv-3'));
    const bound = await providerOf(first.id);
    const index = providers.findIndex((p) => p.id === bound);
    await fault(ctx.mocks[index], 's-up', '500');
    try {
      const moved = new Set();
      for (let i = 0; i < 4; i++) {
        const response = await chat(ctx, client.key, { model: 's' }, session('conv-3'));
        assert.equal(response.status, 200, 'failover');
        moved.add(await providerOf(response.id));
      }
      assert.equal(moved.size, 1, `one next choice: ${[...moved]}`);
      assert.ok(!moved.has(bound));
    } finally {
      await fault(ctx.mocks[index], 's-up', '');
    }
  });
});

test('capabilities: a request that needs tools goes only to keys that have them', async () => {
  await ok(ctx, 'PATCH', `/admin/provider-keys/${providers[1].keyId}`, { capabilities: ['tools'] });
  await explainUntil(ctx, { model: 'cap', capabilities: ['tools'] }, (e) => e.candidates.length === 1);
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: {} } } }];
  const n = 30;
  const { counts } = await distribution(ctx, client.key, 'cap', n, { body: { tools } });
  assert.equal(counts[providers[1].id] ?? 0, n, `every request with tools went to the key that has them: ${JSON.stringify(counts)}`);
  // Without tools, both keys serve.
  const plain = await distribution(ctx, client.key, 'cap', 100);
  if (process.env.ROUTING_DEBUG && !plain.counts[providers[0].id]) {
    console.error('attempts', JSON.stringify(plain.rows.map((r) => `${r.provider_id}/${r.attempts}`)));
    for (const r of [0, 1]) console.error(JSON.stringify((await ok(ctx, 'POST', `/admin/routing/decide?router=${r}`, { model: 'cap', key: client.keyId }))));
    console.error(JSON.stringify(await ok(ctx, 'GET', '/admin/breakers')));
  }
  assert.ok((plain.counts[providers[0].id] ?? 0) > 0 && (plain.counts[providers[1].id] ?? 0) > 0, JSON.stringify(plain.counts));
});
