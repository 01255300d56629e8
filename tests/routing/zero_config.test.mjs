// Names no logical model has (docs/billing.md "Names no logical model has"), through the real
// programs: a model a provider lists is served under its own name when the provider has default
// prices, listed by GET /v1/models, admitted at the highest default price among the providers
// listing it and charged at the serving provider's; a name only unpriced providers list, or one
// its only lister blocks, stays 404 and unlisted; the admin API and the CLI set the prices and
// refuse half a price.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';

import { clusterCli, waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, chat, ok, seen, setup, usageRow } from './lib.mjs';

let ctx;
let client;
let openai;
let providers;
const { json: cliJson, run: cliRun } = clusterCli(() => ctx.cluster);

// What /v1/models lists for a key, by name.
async function listed(key) {
  const answer = await fetch(`${ctx.cluster.gateway}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
  assert.equal(answer.status, 200);
  return (await answer.json()).data.map((m) => m.id);
}

before(async () => {
  ctx = await setup({ mocks: [['--models', 'zc-shared,zc-only-a,zc-blocked'], ['--models', 'zc-shared'],
    ['--models', 'zc-unpriced']] });
  client = await addClient(ctx, 'zero-config');
  providers = {
    pa: await addProvider(ctx, 'pa', ctx.mocks[0].url, { priority: 10 }),
    pb: await addProvider(ctx, 'pb', ctx.mocks[1].url),
    pc: await addProvider(ctx, 'pc', ctx.mocks[2].url),
  };
  // $2 / $4 per million at pa (which blocks zc-blocked), $1 / $8 and $0.001 a request at pb.
  await ok(ctx, 'PATCH', '/admin/providers/pa', { default_price_in: '2', default_price_out: '4', blocked_models: ['zc-blocked'] });
  await ok(ctx, 'PATCH', '/admin/providers/pb', { default_price_in: '1', default_price_out: '8', default_price_request: '0.001' });
  await ok(ctx, 'POST', '/admin/models', { name: 'logical', price_in: '3', price_out: '3',
    routes: [{ provider: 'pa', upstream_model: 'zc-only-a' }] });
  openai = new OpenAI({ apiKey: client.key, baseURL: `${ctx.cluster.gateway}/v1`, maxRetries: 0 });
  // Health fetches the lists; every program's catalog then has the names (and the logical
  // model, which may reach the gateway's catalog a few ms after them or before them).
  await waitFor(async () => {
    const names = await listed(client.key);
    return ['zc-shared', 'logical'].every((n) => names.includes(n)) || null;
  },
    { timeout: 15000, message: 'the providers\' model lists to reach the gateway' });
});

after(async () => { await ctx?.stop(); });

test('GET /v1/models lists the priced providers\' names after the logical models', async () => {
  const names = [];
  for await (const model of openai.models.list()) names.push(model.id);
  assert.deepEqual(names, ['logical', 'zc-only-a', 'zc-shared']);
  const one = await openai.models.retrieve('zc-shared');
  assert.equal(one.id, 'zc-shared');
  const anthropic = await fetch(`${ctx.cluster.gateway}/v1/models`, {
    headers: { 'x-api-key': client.key, 'anthropic-version': '2023-06-01' } });
  assert.deepEqual((await anthropic.json()).data.map((m) => m.id), names);
});

test('a listed name is served and charged at the serving provider\'s default prices', async () => {
  const completion = await openai.chat.completions.create({ model: 'zc-only-a',
    messages: [{ role: 'user', content: 'Say hello' }] }).withResponse();
  assert.equal(completion.data.model.length > 0, true);
  const row = await usageRow(ctx, completion.response.headers.get('x-request-id'));
  assert.equal(row.model, 'zc-only-a');
  assert.equal(row.provider_id, String(providers.pa.id));
  const { tokens_in: tin, tokens_out: tout } = row;
  assert.ok(Number(tin) > 0 && Number(tout) > 0);
  assert.equal(Number(row.cost_micros), Number(tin) * 2 + Number(tout) * 4, 'pa: $2 in, $4 out');

  // Pinned to each provider that lists it: each one's own prices.
  for (const [pin, provider, cost] of [
    ['pb/zc-shared', providers.pb, (i, o) => i * 1 + o * 8 + 1000],
    ['pa/zc-shared', providers.pa, (i, o) => i * 2 + o * 4]]) {
    const answer = await chat(ctx, client.key, { model: pin });
    assert.equal(answer.status, 200, answer.text);
    const pinned = await usageRow(ctx, answer.id);
    assert.equal(pinned.model, pin);
    assert.equal(pinned.provider_id, String(provider.id), pin);
    assert.equal(Number(pinned.cost_micros), cost(Number(pinned.tokens_in), Number(pinned.tokens_out)), pin);
  }
});

test('names no priced provider may serve stay unknown, and nothing reaches an upstream', async () => {
  const before = await seen(ctx.mocks[2], 'zc-unpriced') + await seen(ctx.mocks[0], 'zc-blocked');
  for (const model of ['zc-unpriced', 'zc-blocked', 'pc/zc-unpriced', 'zc-nowhere']) {
    const answer = await chat(ctx, client.key, { model });
    assert.equal(answer.status, 404, `${model}: ${answer.text}`);
    assert.equal(answer.json.error.code, 'model_not_found', model);
  }
  assert.equal(await seen(ctx.mocks[2], 'zc-unpriced') + await seen(ctx.mocks[0], 'zc-blocked'), before);
  const names = await listed(client.key);
  assert.ok(!names.includes('zc-unpriced') && !names.includes('zc-blocked'), names.join(','));
});

test('a listed name makes no images, even admitted from the key\'s lease', async () => {
  // The key has made requests before (tests above), so ingress admits from its lease.
  const before = await seen(ctx.mocks[0], 'zc-only-a');
  for (let i = 0; i < 3; i++) {
    const response = await fetch(`${ctx.cluster.gateway}/v1/images/generations`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${client.key}` },
      body: JSON.stringify({ model: 'zc-only-a', prompt: 'a cat', n: 3 }) });
    const text = await response.text();
    assert.equal(response.status, 400, text);
    assert.match(JSON.parse(text).error.message, /model/);
  }
  assert.equal(await seen(ctx.mocks[0], 'zc-only-a'), before, 'nothing reached the upstream');
});

test('admission reserves at the highest default price among the listing providers', async () => {
  // zc-shared: $2 in (pa) and $8 out (pb) and $0.001 a request: 100,000 output tokens reserve
  // $0.80 and more, above a $0.50 balance; 1,000 reserve under a cent.
  const poor = await addClient(ctx, 'zero-config-poor', '0.5');
  await waitFor(async () => (await chat(ctx, poor.key, { model: 'zc-shared', max_tokens: 1000 })).status === 200 || null,
    { timeout: 8000, message: 'the gateway to know the new key' });
  const refused = await chat(ctx, poor.key, { model: 'zc-shared', max_tokens: 100000 });
  assert.equal(refused.status, 402, refused.text);
  // At pa's $4 out alone, 100,000 tokens would be $0.40 and pass: the pin reserves the same
  // highest price, since admission does not know where the name will be served.
  const pinned = await chat(ctx, poor.key, { model: 'pa/zc-shared', max_tokens: 100000 });
  assert.equal(pinned.status, 402, pinned.text);
});

test('the admin API and the CLI set default prices, and refuse half a price', async () => {
  let answer = await ctx.api('PATCH', '/admin/providers/pc', { default_price_in: '1' });
  assert.equal(answer.status, 400, JSON.stringify(answer.body));
  assert.match(answer.body.error.message, /default_price_out/);
  answer = await ctx.api('PATCH', '/admin/providers/pa', { default_price_out: null });
  assert.equal(answer.status, 400, JSON.stringify(answer.body));
  answer = await ctx.api('POST', '/admin/providers', { name: 'half', protocol: 'openai',
    base_url: 'http://127.0.0.1:9', default_price_out: '1' });
  assert.equal(answer.status, 400, JSON.stringify(answer.body));
  assert.match(answer.body.error.message, /default_price_in/);
  assert.equal((await ctx.api('GET', '/admin/providers/half')).status, 404, 'nothing was created');
  const pa = await ok(ctx, 'GET', '/admin/providers/pa');
  assert.equal(pa.default_price_in_micros, 2000000);
  assert.equal(pa.default_price_out_micros, 4000000);
  assert.equal(pa.default_price_cache_read_micros, null);

  const bad = await cliRun('provider', 'set', 'pc', '--default-price-in', 'lots');
  assert.notEqual(bad.code, 0);
  const set = await cliJson('provider', 'set', 'pc', '--default-price-in', '0.5', '--default-price-out', '1');
  assert.equal(set.default_price_in_micros, 500000);
  assert.equal(set.default_price_out_micros, 1000000);
  const shown = await cliJson('provider', 'show', 'pc');
  assert.equal(shown.default_price_out_micros, 1000000);
  // Now pc's name is served, at pc's prices.
  const served = await waitFor(async () => {
    const reply = await chat(ctx, client.key, { model: 'zc-unpriced' });
    return reply.status === 404 ? null : reply;
  }, { timeout: 8000, message: 'the gateway to price zc-unpriced' });
  assert.equal(served.status, 200, served.text);
  const row = await usageRow(ctx, served.id);
  assert.equal(row.provider_id, String(providers.pc.id));
  assert.equal(Number(row.cost_micros), Math.ceil(Number(row.tokens_in) * 0.5) + Number(row.tokens_out));
  // And unset again: 404.
  await cliJson('provider', 'set', 'pc', '--default-price-in', 'none', '--default-price-out', 'none');
  await waitFor(async () => (await chat(ctx, client.key, { model: 'zc-unpriced' })).status === 404 || null,
    { timeout: 8000, message: 'the gateway to forget zc-unpriced' });
});
