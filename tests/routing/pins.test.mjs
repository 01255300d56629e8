// Pinned names (`provider/model`, docs/routing.md "Names that are not a logical model") through
// the real programs: a pin of a logical model goes to that provider only and is admitted and
// billed as the logical model (its price, the key's model list); a pin of a provider that does
// not exist, of a model that is not a logical one, or of a model the key may not use is refused
// in the client's format, and nothing reaches an upstream.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, chat, explainUntil, ok, seen, setup, usageRow } from './lib.mjs';

let ctx;
let client;

before(async () => {
  ctx = await setup({ mocks: [['--models', 'pm-up'], ['--models', 'pm-up']] });
  client = await addClient(ctx, 'pins');
  await addProvider(ctx, 'pa', ctx.mocks[0].url, { priority: 10 });
  await addProvider(ctx, 'pb', ctx.mocks[1].url);
  await ok(ctx, 'POST', '/admin/models', { name: 'pm', price_in: '3', price_out: '7',
    routes: [{ provider: 'pa', upstream_model: 'pm-up' }, { provider: 'pb', upstream_model: 'pm-up' }] });
  await ok(ctx, 'POST', '/admin/models', { name: 'other-model', price_in: '1', price_out: '1',
    routes: [{ provider: 'pa', upstream_model: 'pm-up' }] });
  await explainUntil(ctx, { model: 'pb/pm', key: client.keyId }, (e) => e.candidates[0]?.provider === 'pb');
});

after(async () => { await ctx?.stop(); });

test('a pinned logical model is served by its provider and billed at the model\'s price', async () => {
  const [aMock, bMock] = ctx.mocks;
  const plain = await chat(ctx, client.key, { model: 'pm' });
  assert.equal(plain.status, 200, plain.text);
  const plainRow = await usageRow(ctx, plain.id);
  assert.equal(plainRow.provider_id, String((await ok(ctx, 'GET', '/admin/providers/pa')).id), 'unpinned: priority 10 wins');

  const before = { a: await seen(aMock, 'pm-up'), b: await seen(bMock, 'pm-up') };
  for (let i = 0; i < 3; i++) {
    const pinned = await chat(ctx, client.key, { model: 'pb/pm' });
    assert.equal(pinned.status, 200, pinned.text);
    const row = await usageRow(ctx, pinned.id);
    assert.equal(row.model, 'pb/pm');
    assert.equal(row.provider_id, String((await ok(ctx, 'GET', '/admin/providers/pb')).id));
    assert.equal(row.tokens_in, plainRow.tokens_in);
    assert.equal(row.tokens_out, plainRow.tokens_out);
    assert.equal(row.cost_micros, plainRow.cost_micros, 'the logical model\'s price');
    assert.ok(Number(row.cost_micros) > 0);
  }
  assert.equal(await seen(bMock, 'pm-up'), before.b + 3);
  assert.equal(await seen(aMock, 'pm-up'), before.a, 'the pin held against the higher priority');
});

test('pins of unknown providers or models, or of a model the key may not use, are refused', async () => {
  const [aMock, bMock] = ctx.mocks;
  const before = (await seen(aMock, 'pm-up')) + (await seen(bMock, 'pm-up'));
  for (const model of ['nosuch/pm', 'pb/pm-up', 'pb/nosuch']) {
    const answer = await chat(ctx, client.key, { model });
    assert.equal(answer.status, 404, `${model}: ${answer.text}`);
    assert.equal(answer.json.error.code, 'model_not_found', model);
  }
  const limited = await ok(ctx, 'POST', '/admin/keys', { account: 'pins', models: ['other-model'] });
  // The new key is usable once the gateway's catalog has it.
  const allowed = await waitFor(async () => {
    const answer = await chat(ctx, limited.key, { model: 'pa/other-model' });
    return answer.status === 401 ? null : answer;
  }, { timeout: 8000, message: 'the gateway to know the new key' });
  assert.equal(allowed.status, 200, allowed.text);
  const refused = await chat(ctx, limited.key, { model: 'pb/pm' });
  assert.equal(refused.status, 403, refused.text);
  assert.equal(refused.json.error.code, 'model_not_allowed');
  assert.equal((await seen(aMock, 'pm-up')) + (await seen(bMock, 'pm-up')), before + 1, 'only the allowed pin reached an upstream');
});
