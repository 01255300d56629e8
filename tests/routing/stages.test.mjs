// Two-stage weighted pick and the "balanced" mode through the real programs: a provider that
// matches a model under several upstream names gets its provider's share, not one per name;
// the failover order alternates providers; balanced is set with the CLI (--json) and explained
// part by part; an unknown mode is refused naming the field.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { addClient, addProvider, distribution, explainUntil, ok, setup } from './lib.mjs';

let ctx;
let client;
let many;
let one;

function within(count, n, p, what) {
  const share = count / n;
  const tolerance = 4 * Math.sqrt((p * (1 - p)) / n);
  assert.ok(Math.abs(share - p) <= tolerance, `${what}: ${count}/${n} = ${share.toFixed(3)}, expected ${p} +- ${tolerance.toFixed(3)}`);
}

before(async () => {
  // "one" answers 40 ms late, so the latency the routers measure (from the weighted test's
  // requests) agrees with its price in the balanced test: "many" ahead on every part, however
  // loaded the machine (with both as fast, a noisy latency could outweigh the price part).
  ctx = await setup({ mocks: [['--models', 'm-1,m-2,m-3,m-4'], ['--models', 'm-1', '--fault', 'm-1=delay-headers:40']] });
  many = await addProvider(ctx, 'many', ctx.mocks[0].url);
  one = await addProvider(ctx, 'one', ctx.mocks[1].url);
  // "many" serves the model under four upstream names, "one" under one.
  const routes = ['m-1', 'm-2', 'm-3', 'm-4'].map((upstream) => ({ provider: 'many', upstream_model: upstream }));
  await ok(ctx, 'POST', '/admin/models', { name: 'st', routes: [...routes, { provider: 'one', upstream_model: 'm-1' }] });
  await ok(ctx, 'PATCH', '/admin/models/st', { scheduling: 'weighted' });
  client = await addClient(ctx, 'stages');
  await explainUntil(ctx, { model: 'st' }, (e) => e.candidates.length === 5 && e.mode === 'weighted');
});

after(async () => { await ctx?.stop(); });

test('a provider with four matching models gets half, not four fifths; the order alternates', async () => {
  const n = 300;
  const { counts } = await distribution(ctx, client.key, 'st', n);
  within(counts[many.id] ?? 0, n, 0.5, 'many (4 routes, weight 1)');
  const explained = await ok(ctx, 'POST', '/admin/routing/decide', { model: 'st' });
  const order = explained.candidates.map((c) => c.provider);
  assert.notEqual(order[0], order[1], `the second candidate is the other provider: ${order}`);
  assert.equal(explained.candidates[0].score.provider_weight, 1);
  assert.ok('weight_in_provider' in explained.candidates[0].score);
});

test('balanced: set with the CLI, explained part by part, the fast key ahead', async () => {
  const result = await ctx.cluster.tollgate(['model', 'set', 'st', '--scheduling', 'balanced', '--json', '--dir', ctx.cluster.dir]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(JSON.parse(result.stdout).scheduling, 'balanced');
  // "one" is made dearer: the price part tells them apart with no health yet.
  await ok(ctx, 'PATCH', `/admin/provider-keys/${one.keyId}`, { multiplier_ppm: 100000000 });
  const explained = await explainUntil(ctx, { model: 'st' },
    (e) => e.mode === 'balanced' && e.candidates.some((c) => c.provider === 'one' && c.score.multiplier_ppm === 100000000));
  for (const candidate of explained.candidates) {
    const { parts, score } = candidate.score;
    assert.deepEqual(Object.keys(parts).sort(), ['latency', 'price', 'reliability', 'weight']);
    const sum = Object.values(parts).reduce((total, part) => total + part.value * part.weight, 0);
    assert.ok(Math.abs(sum - score) < 1e-3, `score ${score} is the weighted sum ${sum}`);
    assert.equal(Object.values(parts).reduce((total, part) => total + part.weight, 0).toFixed(2), '1.00');
  }
  const dear = explained.candidates.find((c) => c.provider === 'one');
  assert.ok(Math.abs(dear.score.parts.price.value - 1010000 / 101010000) < 1e-3);
  assert.equal(explained.candidates[0].provider, 'many');
  // Through the gateway the better-scored provider takes the requests (health measured
  // meanwhile can move a "many" model down a bucket, hardly below "one"'s).
  const { counts } = await distribution(ctx, client.key, 'st', 40);
  assert.ok((counts[many.id] ?? 0) >= 36, JSON.stringify(counts));
});

test('an unknown scheduling mode is refused naming the field, and nothing changes', async () => {
  const answer = await ctx.api('PATCH', '/admin/models/st', { scheduling: 'fastest' });
  assert.equal(answer.status, 400);
  assert.match(answer.body.error.message, /scheduling/);
  assert.match(answer.body.error.message, /balanced/);
  assert.equal((await ok(ctx, 'GET', '/admin/models/st')).scheduling, 'balanced');
});
