// The fault catalogue through the real processes: each fault of an upstream, for plain and
// streamed requests, with a primary provider (mock A) that fails and a secondary (mock B)
// that is healthy. A fault before the first byte reaches the client fails over to the next
// candidate and the client sees a clean answer; a fault after it ends the stream with a
// protocol-correct error event (never a clean-looking [DONE]) and the next candidate is not
// tried. A failed attempt is never billed: one usage row per request, for the attempt that
// answered.
//
// Breakers would hide the primary after a few failures and turn failover tests into
// breaker tests, so this cluster's breaker threshold is high and each case has its own
// upstream model (429 opens its (provider, model) breaker at once, whatever the threshold).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { freePort, waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, chat, fault, mockStats, ok, seen, setup, sse, usageRow } from './lib.mjs';

const FIRST_BYTE_MS = 800;

// name, mock fault SPEC, and what the client sees for a plain and a streamed request:
// 'failover' (the secondary answers) or 'broken' (the primary's bytes went out; the stream
// ends with an error). null: the fault does not exist for that kind of request.
const CASES = [
  { name: '429-retry-after', spec: '429:2', plain: 'failover', stream: 'failover' },
  // The mock always sends Retry-After; 0 is "no wait asked", the router's own cooldown applies.
  { name: '429-no-retry-after', spec: '429:0', plain: 'failover', stream: 'failover' },
  { name: '500', spec: '500', plain: 'failover', stream: 'failover' },
  { name: '502', spec: '502', plain: 'failover', stream: 'failover' },
  { name: '503', spec: '503', plain: 'failover', stream: 'failover' },
  { name: 'stall-before-headers', spec: 'delay-headers:5000', plain: 'failover', stream: 'failover' },
  { name: 'hang', spec: 'hang', plain: 'failover', stream: 'failover' },
  // Streams: the gap between events makes sure the first ones went out before the fault.
  { name: 'cut', spec: 'cut:3', streamSpec: 'cut:3,delay-chunks:100', plain: 'failover', stream: 'broken' },
  { name: 'malformed', spec: 'malformed', streamSpec: 'malformed,delay-chunks:100', plain: 'failover', stream: 'broken' },
  // Without the gap, whether a byte went out first is a race: either outcome is right, a
  // clean-looking end of the primary's stream is not.
  { name: 'malformed-at-once', spec: 'malformed', plain: null, stream: 'either' },
  { name: 'cut-at-once', spec: 'cut:2', plain: null, stream: 'either' },
  { name: 'no-terminator', spec: 'no-terminator', plain: null, stream: 'broken' },
  { name: 'stall-mid-stream', spec: 'delay-chunks:5000', plain: null, stream: 'broken' },
];

const modelOf = (name, variant) => `f-${name}-${variant}`;

let ctx;
let client;
let primary;
let secondary;

before(async () => {
  const faults = [];
  const models = ['f-connect-p', 'f-connect-s', 'f-flap', 'f-billed'];
  for (const c of CASES) {
    for (const variant of ['p', 's']) {
      models.push(modelOf(c.name, variant));
      faults.push('--fault', `${modelOf(c.name, variant)}=${variant === 's' && c.streamSpec ? c.streamSpec : c.spec}`);
    }
  }
  faults.push('--fault', 'f-flap=flap:2');
  ctx = await setup({
    mocks: [['--models', models.join(','), ...faults], ['--models', models.join(',')]],
    env: {
      TOLLGATE_DISPATCH_FIRST_BYTE_TIMEOUT_MS: String(FIRST_BYTE_MS),
      TOLLGATE_DISPATCH_IDLE_TIMEOUT_MS: String(FIRST_BYTE_MS),
      TOLLGATE_ROUTER_BREAKER_THRESHOLD: '1000',
    },
  });
  primary = await addProvider(ctx, 'prim', ctx.mocks[0].url, { priority: 10 });
  secondary = await addProvider(ctx, 'sec', ctx.mocks[1].url);
  // A provider nobody listens for: every connection is refused.
  await addProvider(ctx, 'dead', `http://127.0.0.1:${await freePort()}`, { priority: 20 });
  for (const model of models) {
    const routes = [{ provider: 'prim' }, { provider: 'sec' }];
    if (model.startsWith('f-connect')) routes[0] = { provider: 'dead' };
    await ok(ctx, 'POST', '/admin/models', { name: model, price_in: '1', price_out: '2', routes });
  }
  client = await addClient(ctx, 'faults');
  // The catalog reaches every program within a moment; the first request shows it did.
  await waitFor(async () => (await chat(ctx, client.key, { model: 'f-billed' })).status === 200,
    { timeout: 5000, message: 'the first request' });
});

after(async () => { await ctx?.stop(); });

// Sends one request and checks what the client saw and who was asked.
async function check(model, stream, expect, primaryMock = ctx.mocks[0]) {
  const [firstBefore, secondBefore] = [await seen(primaryMock, model), await seen(ctx.mocks[1], model)];
  const started = Date.now();
  const response = await chat(ctx, client.key, { model, stream, ...(stream ? { stream_options: { include_usage: true } } : {}) });
  const elapsed = Date.now() - started;
  const firstAsked = (await seen(primaryMock, model)) - firstBefore;
  const secondAsked = (await seen(ctx.mocks[1], model)) - secondBefore;
  if (primaryMock === ctx.mocks[0]) assert.equal(firstAsked, 1, `${model}: the primary was tried once`);
  if (expect === 'either') expect = secondAsked ? 'failover' : 'broken';
  if (expect === 'failover') {
    assert.equal(response.status, 200, `${model}: ${response.text}`);
    assert.equal(secondAsked, 1, `${model}: the secondary answered`);
    if (stream) {
      const parsed = sse(response.text);
      assert.equal(parsed.error, null, `${model}: ${response.text}`);
      assert.ok(parsed.done, `${model}: the stream ends with [DONE]`);
      assert.ok(parsed.events.some((e) => e.choices?.[0]?.delta?.content), `${model}: content arrived`);
    } else {
      assert.ok(response.json?.choices?.[0]?.message?.content, `${model}: ${response.text}`);
    }
    const row = await usageRow(ctx, response.id);
    assert.equal(Number(row.provider_id), secondary.id, `${model}: billed to the attempt that answered`);
    assert.equal(Number(row.attempts), 2, `${model}: two attempts`);
    assert.equal(Number(row.status), 200);
  } else {
    // The first byte had gone out: no failover, and an error event ends the stream.
    assert.equal(response.status, 200, `${model}: headers were sent before the fault`);
    const parsed = sse(response.text);
    assert.ok(!parsed.done, `${model}: no clean [DONE] after a broken stream:\n${response.text}`);
    assert.ok(parsed.error, `${model}: an error event ends the stream:\n${response.text}`);
    assert.ok(parsed.error.message && parsed.error.type, `${model}: OpenAI error shape ${JSON.stringify(parsed.error)}`);
    assert.equal(secondAsked, 0, `${model}: no failover after the first byte`);
  }
  return { response, elapsed };
}

describe('plain requests', () => {
  for (const c of CASES.filter((x) => x.plain)) {
    test(`${c.name} (${c.spec}): ${c.plain}`, async () => {
      const { elapsed } = await check(modelOf(c.name, 'p'), false, c.plain);
      if (/delay-headers|hang/.test(c.spec)) {
        assert.ok(elapsed >= FIRST_BYTE_MS - 50 && elapsed < FIRST_BYTE_MS + 2000, `failed over after ${elapsed} ms`);
      }
    });
  }
  test('connect refused: failover', async () => {
    const response = await chat(ctx, client.key, { model: 'f-connect-p' });
    assert.equal(response.status, 200, response.text);
    const row = await usageRow(ctx, response.id);
    assert.equal(Number(row.provider_id), secondary.id);
    assert.equal(Number(row.attempts), 2);
  });
});

describe('streamed requests', () => {
  for (const c of CASES.filter((x) => x.stream)) {
    test(`${c.name} (${c.spec}): ${c.stream}`, async () => {
      await check(modelOf(c.name, 's'), true, c.stream);
    });
  }
  test('connect refused: failover', async () => {
    const response = await chat(ctx, client.key, { model: 'f-connect-s', stream: true });
    assert.equal(response.status, 200);
    const parsed = sse(response.text);
    assert.ok(parsed.done && !parsed.error, response.text);
    assert.equal(Number((await usageRow(ctx, response.id)).provider_id), secondary.id);
  });
});

test('a primary that flaps between healthy and failing: every request succeeds', async () => {
  const results = [];
  for (let i = 0; i < 10; i++) {
    const response = await chat(ctx, client.key, { model: 'f-flap', stream: i % 2 === 1 });
    assert.equal(response.status, 200, response.text);
    if (i % 2 === 1) assert.ok(sse(response.text).done && !sse(response.text).error, response.text);
    results.push(response.id);
  }
  const rows = await Promise.all(results.map((id) => usageRow(ctx, id)));
  const byPrimary = rows.filter((r) => Number(r.provider_id) === primary.id).length;
  const failedOver = rows.filter((r) => Number(r.provider_id) === secondary.id && Number(r.attempts) === 2).length;
  assert.equal(byPrimary + failedOver, 10);
  assert.ok(byPrimary >= 4 && failedOver >= 4, `primary ${byPrimary}, failed over ${failedOver}`);
  const stats = await mockStats(ctx.mocks[0]);
  assert.ok(stats.statuses['500'] >= 4, JSON.stringify(stats.statuses));
});

test('a failed attempt is never billed: one row, the final attempt\'s tokens, its cost only', async () => {
  const payer = await addClient(ctx, 'billed', '100');
  // The primary fails every request for this model from now on.
  await fault(ctx.mocks[0], 'f-billed', '500');
  await waitFor(async () => (await chat(ctx, payer.key, { model: 'f-billed' })).status === 200,
    { timeout: 5000, message: 'the new key works' });
  const ids = [];
  const answers = [];
  for (let i = 0; i < 6; i++) {
    const response = await chat(ctx, payer.key, { model: 'f-billed', stream: i % 2 === 1, stream_options: i % 2 ? { include_usage: true } : undefined });
    assert.equal(response.status, 200, response.text);
    ids.push(response.id);
    answers.push(i % 2 ? sse(response.text).events.find((e) => e.usage)?.usage : response.json.usage);
  }
  const rows = await Promise.all(ids.map((id) => usageRow(ctx, id)));
  let total = 0;
  rows.forEach((row, i) => {
    assert.equal(Number(row.provider_id), secondary.id, 'the row is the answering attempt\'s');
    assert.equal(Number(row.attempts), 2);
    assert.equal(Number(row.tokens_in), answers[i].prompt_tokens, 'tokens of the final attempt only');
    assert.equal(Number(row.tokens_out), answers[i].completion_tokens);
    // 1 and 2 per million tokens: one micro-unit per input token, two per output token.
    assert.equal(Number(row.cost_micros), answers[i].prompt_tokens + 2 * answers[i].completion_tokens);
    total += Number(row.cost_micros);
  });
  const count = await ctx.cluster.psql(`SELECT count(*) AS n FROM usage WHERE request_id IN (${ids.map((id) => `'${id}'`).join(',')})`);
  assert.equal(Number(count[0].n), 6, 'one usage row per request, none per failed attempt');
  // The account started with 100 and paid for these six and the first request only.
  const first = await waitFor(async () => {
    const found = await ctx.cluster.psql(`SELECT cost_micros FROM usage WHERE account_id = ${payer.accountId} AND request_id NOT IN (${ids.map((id) => `'${id}'`).join(',')})`);
    return found.length === 1 ? found[0] : null;
  }, { timeout: 5000, message: 'the first request\'s usage row' });
  const expected = 100000000 - total - Number(first.cost_micros);
  const balance = async () => Number((await ctx.cluster.psql(`SELECT balance_micros FROM accounts WHERE id = ${payer.accountId}`))[0].balance_micros);
  await waitFor(async () => (await balance()) === expected,
    { timeout: 5000, message: `the balance to be ${expected}: only the final attempts were charged` });
});
