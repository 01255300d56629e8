// Money that can be set (issue 13), through the real programs and the CLI: per-key limits and
// expiry with `tollgate key set`, account limits with `tollgate account set`, the long-context tier and the per-request price with
// `tollgate model add/set` (and bad values of --max-output-tokens), 1-hour cache writes priced apart (Anthropic's cache_creation),
// multipliers on accounts and provider keys (0 = free tier), forced capabilities per model.
// Every bad value is refused with the field named and changes nothing.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { clusterCli, startCluster, startMock, waitFor } from '../lib/harness.mjs';

let cluster;
let mock;
const keys = {};

const { run, cli, json } = clusterCli(() => cluster);

async function chat(key, model, { content = 'Say hello', protocol = 'openai', stream = false } = {}) {
  const anthropic = protocol === 'anthropic';
  const response = await fetch(`${cluster.gateway}${anthropic ? '/v1/messages' : '/v1/chat/completions'}`, {
    method: 'POST',
    headers: anthropic
      ? { 'content-type': 'application/json', 'x-api-key': key, 'anthropic-version': '2023-06-01' }
      : { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model, max_tokens: 100, stream, messages: [{ role: 'user', content }] }),
  });
  const text = await response.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  return { status: response.status, body, text, id: response.headers.get('x-request-id') };
}

// The usage row of a request, once the ledger has it.
async function usageOf(requestId) {
  assert.ok(requestId, 'the answer names its request id');
  return waitFor(async () => (await cluster.psql(
    `SELECT * FROM usage WHERE request_id = '${requestId}'`))[0], { timeout: 10000, message: `usage of ${requestId}` });
}

// Waits for a new model or key to reach every program (catalog reloads on NOTIFY).
async function ready(key, model, protocol = 'openai') {
  let answer;
  await waitFor(async () => ![401, 404].includes((answer = await chat(key, model, { protocol })).status),
    { timeout: 10000, message: `${model} and the key in the catalog` });
  return answer;
}

async function newKey(account, name) {
  const created = await json('key', 'create', account, '--name', name);
  assert.match(created.key, /^tg-/);
  return { id: String(created.id), key: created.key };
}

before(async () => {
  mock = await startMock(['--models', 'fast,cachey', '--fault', 'cachey=cache-write-5m:100,cache-write-1h:1000']);
  cluster = await startCluster();
  await cli('provider', 'add', 'mock', '--protocol', 'openai', '--base-url', mock.url);
  await cli('provider', 'key', 'add', 'mock', '--secret', 'sk-mock');
  await cli('provider', 'add', 'anth', '--protocol', 'anthropic', '--base-url', mock.url);
  await cli('provider', 'key', 'add', 'anth', '--secret', 'sk-anth');
  await cli('model', 'add', 'fast', '--route', 'mock:fast', '--price-in', '1', '--price-out', '2');
  await cli('account', 'add', 'team', '--balance', '100');
  keys.limited = await newKey('team', 'limited');
  keys.plain = await newKey('team', 'plain');
});

after(async () => {
  await cluster?.stop();
  await mock?.stop();
});

describe('per-key limits with tollgate key set', () => {
  test('rpm: set, enforced, lifted with none; --json answers the API object', async () => {
    const set = await json('key', 'set', keys.limited.id, '--rpm-limit', '2');
    assert.equal(set.rpm_limit, 2);
    assert.equal(set.tpm_limit, null);
    // The lease the key had was granted under no limit: billing revokes it on the change.
    await waitFor(async () => {
      const results = [];
      for (let i = 0; i < 3; i++) results.push((await chat(keys.limited.key, 'fast')).status);
      return results.includes(429);
    }, { timeout: 15000, message: 'the rpm limit set with key set applies' });
    const denied = await chat(keys.limited.key, 'fast');
    assert.equal(denied.status, 429);
    assert.equal(denied.body.error.code, 'rate_limit_exceeded');
    assert.match(denied.body.error.message, /2 requests per minute/);
    const text = await cli('key', 'set', keys.limited.id, '--rpm-limit', 'none');
    assert.match(text, /rpm none/);
    await waitFor(async () => (await chat(keys.limited.key, 'fast')).status === 200,
      { timeout: 10000, message: 'the lifted limit' });
  });

  test('spend cap, concurrency and tpm are set and shown', async () => {
    const set = await json('key', 'set', keys.limited.id, '--daily-spend', '0.000001',
      '--concurrency-limit', '3', '--tpm-limit', '100000', '--monthly-spend', '50');
    assert.equal(set.daily_spend_micros, 1);
    assert.equal(set.monthly_spend_micros, 50000000);
    assert.equal(set.concurrency_limit, 3);
    assert.equal(set.tpm_limit, 100000);
    await waitFor(async () => {
      const r = await chat(keys.limited.key, 'fast');
      return r.status === 429 && r.body.error.code === 'spend_limit_exceeded';
    }, { timeout: 10000, message: 'the daily cap' });
    const shown = await cli('key', 'set', keys.limited.id, '--daily-spend', 'none');
    assert.match(shown, /daily spend none, monthly spend 50\.00/);
    await waitFor(async () => (await chat(keys.limited.key, 'fast')).status === 200,
      { timeout: 10000, message: 'the lifted cap' });
  });

  test('expiry: a past time refuses the key, none brings it back', async () => {
    await cli('key', 'set', keys.limited.id, '--expires-at', '2020-01-01T00:00:00Z');
    await waitFor(async () => (await chat(keys.limited.key, 'fast')).status === 401,
      { timeout: 10000, message: 'the expired key' });
    await cli('key', 'set', keys.limited.id, '--expires-at', 'none');
    await waitFor(async () => (await chat(keys.limited.key, 'fast')).status === 200,
      { timeout: 10000, message: 'the key without expiry' });
  });

  test('bad values are refused naming the field, and change nothing', async () => {
    const keyRow = async () => (await json('key', 'list', '--account', 'team')).data
      .find((k) => String(k.id) === keys.limited.id);
    const before = await keyRow();
    for (const [option, value, field] of [['--rpm-limit', '0', 'rpm_limit'],
      ['--tpm-limit', '-5', 'tpm_limit'], ['--daily-spend', '1.0000001', 'daily_spend'],
      ['--monthly-spend', 'lots', 'monthly_spend'], ['--expires-at', '', 'expires_at'],
      ['--status', 'asleep', 'status']]) {
      const result = await run('key', 'set', keys.limited.id, option, value);
      assert.equal(result.code, 1, `${option} ${value}: ${result.stdout}`);
      assert.match(result.stderr, new RegExp(`'${field}'`), `${option} ${value}`);
    }
    const cli2 = await run('key', 'set', keys.limited.id, '--rpm-limit', 'many');
    assert.equal(cli2.code, 2);
    assert.match(cli2.stderr, /--rpm-limit takes a whole number, or none/);
    const full = await run('key', 'set', keys.limited.key, '--rpm-limit', '5');
    assert.equal(full.code, 2);
    assert.match(full.stderr, /takes the key's id/);
    const after = await keyRow();
    delete before.updated_at;
    delete after.updated_at;
    assert.deepEqual(after, before);
  });
});

describe('account limits with tollgate account set', () => {
  test('a daily cap set on the account applies to its keys; none lifts it; bad values change nothing', async () => {
    await cli('account', 'add', 'capped', '--balance', '10');
    const key = await newKey('capped', 'capped');
    assert.equal((await ready(key.key, 'fast')).status, 200);
    const set = await json('account', 'set', 'capped', '--daily-spend', '0.000001', '--rpm-limit', '100',
      '--force-capabilities', 'none');
    assert.equal(set.daily_spend_micros, 1);
    assert.equal(set.rpm_limit, 100);
    await waitFor(async () => {
      const r = await chat(key.key, 'fast');
      return r.status === 429 && r.body.error.code === 'spend_limit_exceeded';
    }, { timeout: 10000, message: 'the account cap' });
    const before = await json('account', 'show', 'capped');
    for (const [option, value, field] of [['--rpm-limit', '0', 'rpm_limit'],
      ['--daily-spend', '-1', 'daily_spend'], ['--status', 'asleep', 'status'],
      ['--concurrency-limit', '99999999999', 'concurrency_limit']]) {
      const result = await run('account', 'set', 'capped', option, value);
      assert.equal(result.code, 1, `${option} ${value}`);
      assert.match(result.stderr, new RegExp(`'${field}'`));
    }
    const after = await json('account', 'show', 'capped');
    assert.deepEqual(after, before);
    const text = await cli('account', 'set', 'capped', '--daily-spend', 'none', '--rpm-limit', 'none');
    assert.match(text, /^account capped: active, multiplier 1\.00, rpm none, tpm none, concurrency none, daily spend none/);
    await waitFor(async () => (await chat(key.key, 'fast')).status === 200,
      { timeout: 10000, message: 'the lifted account cap' });
  });
});

describe('model prices with tollgate model add/set', () => {
  test('the long-context tier and the per-request price are charged as set', async () => {
    // $1 in, $2 out per million; above 60 prompt tokens $100 in and $200 out; $0.01 a request.
    const model = await json('model', 'add', 'longy', '--route', 'mock:fast', '--price-in', '1',
      '--price-out', '2', '--long-context-threshold', '60', '--long-price-in', '100',
      '--long-price-out', '200', '--price-request', '0.01');
    assert.equal(model.long_context_threshold, 60);
    assert.equal(model.long_price_in_micros, 100000000);
    assert.equal(model.price_request_micros, 10000);
    await ready(keys.plain.key, 'longy');
    const short = await chat(keys.plain.key, 'longy', { content: 'hi' });
    assert.equal(short.status, 200, short.text);
    const long = await chat(keys.plain.key, 'longy', { content: 'word '.repeat(100) });
    assert.equal(long.status, 200, long.text);
    for (const [answer, inPrice, outPrice] of [[short, 1, 2], [long, 100, 200]]) {
      const row = await usageOf(answer.id);
      const tokens = Number(row.tokens_in) + Number(row.tokens_cache_read) + Number(row.tokens_cache_write);
      assert.equal(tokens > 60, inPrice === 100, `prompt of ${tokens} tokens`);
      const expected = Math.ceil(Number(row.tokens_in) * inPrice + Number(row.tokens_out) * outPrice) + 10000;
      assert.equal(Number(row.cost_micros), expected, JSON.stringify(row));
    }
  });

  test('model set changes prices; lifting the threshold lifts the tier', async () => {
    const set = await json('model', 'set', 'longy', '--price-in', '3', '--long-context-threshold', 'none');
    assert.equal(set.price_in_micros, 3000000);
    assert.equal(set.long_context_threshold, null);
    assert.equal(set.long_price_in_micros, null);
    assert.equal(set.long_price_out_micros, null);
    const listed = await json('model', 'show', 'longy');
    assert.equal(listed.long_price_out_micros, null);
  });

  test('long prices without a threshold, and bad prices, are refused and change nothing', async () => {
    const before = await json('model', 'show', 'longy');
    for (const [args, field] of [[['--long-price-in', '5'], 'long_price_in'],
      [['--price-out', '-1'], 'price_out'], [['--long-context-threshold', '0'], 'long_context_threshold'],
      [['--force-capabilities', 'Bad Tag'], 'force_capabilities'],
      [['--price-in', '5', '--long-price-out', '5'], 'long_price_out'],
      [['--max-output-tokens', '0'], 'max_output_tokens'],
      [['--max-output-tokens', '-5'], 'max_output_tokens'],
      [['--max-output-tokens', '1000000000001'], 'max_output_tokens']]) {
      const result = await run('model', 'set', 'longy', ...args);
      assert.equal(result.code, 1, `${args.join(' ')}: ${result.stdout}`);
      assert.match(result.stderr, new RegExp(`'${field}'`), result.stderr);
    }
    // max_output_tokens is a whole number of tokens: the CLI refuses anything else before the
    // API, and the API refuses it from any client.
    for (const value of ['1.5', 'lots', '']) {
      const result = await run('model', 'set', 'longy', '--max-output-tokens', value);
      assert.equal(result.code, 2, `${value}: ${result.stdout}`);
      assert.match(result.stderr, /--max-output-tokens takes a whole number, or none/, result.stderr);
    }
    for (const value of [1.5, '1000', true, 0, -1]) {
      const response = await fetch(`${cluster.admin}/admin/models/longy`, {
        method: 'PATCH',
        headers: { authorization: `Bearer ${cluster.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ max_output_tokens: value }),
      });
      const body = await response.json();
      assert.equal(response.status, 400, `${JSON.stringify(value)}: ${JSON.stringify(body)}`);
      assert.match(body.error.message, /'max_output_tokens' must be an integer from 1 to/,
        JSON.stringify(body));
    }
    const badMax = await run('model', 'add', 'badmax', '--route', 'mock:fast', '--max-output-tokens', '0');
    assert.equal(badMax.code, 1);
    assert.match(badMax.stderr, /'max_output_tokens'/);
    assert.equal((await run('model', 'show', 'badmax')).code, 1);
    const add = await run('model', 'add', 'tierless', '--route', 'mock:fast', '--long-price-in', '5');
    assert.equal(add.code, 1);
    assert.match(add.stderr, /'long_price_in' needs 'long_context_threshold'/);
    assert.equal((await run('model', 'show', 'tierless')).code, 1);
    const after = await json('model', 'show', 'longy');
    delete before.updated_at;
    delete after.updated_at;
    assert.deepEqual(after, before);
  });

  test('1-hour cache writes are carried apart, stored, and priced at their own price', async () => {
    // Writes at $1 per million for 5 minutes, $2 for 1 hour; the mock reports 100 and 1000.
    await cli('model', 'add', 'cachey', '--route', 'anth:cachey', '--price-in', '0',
      '--price-out', '0', '--price-cache-write', '1', '--price-cache-write-1h', '2');
    await ready(keys.plain.key, 'cachey', 'anthropic');
    for (const [protocol, stream] of [['anthropic', false], ['openai', false], ['anthropic', true],
      ['openai', true]]) {
      const answer = await chat(keys.plain.key, 'cachey', { protocol, stream });
      assert.equal(answer.status, 200, answer.text);
      const row = await usageOf(answer.id);
      assert.equal(Number(row.tokens_cache_write), 1100);
      assert.equal(Number(row.tokens_cache_write_1h), 1000);
      assert.equal(Number(row.cost_micros), 100 + 2000);
    }
    // The client sees Anthropic's own total when it speaks Anthropic.
    const seen = await chat(keys.plain.key, 'cachey', { protocol: 'anthropic' });
    assert.equal(seen.body.usage.cache_creation_input_tokens, 1100);
    // Without a 1-hour price (none), 1-hour writes cost the 5-minute price.
    const set = await json('model', 'set', 'cachey', '--price-cache-write-1h', 'none');
    assert.equal(set.price_cache_write_1h_micros, null);
    await waitFor(async () => {
      const answer = await chat(keys.plain.key, 'cachey', { protocol: 'anthropic' });
      return Number((await usageOf(answer.id)).cost_micros) === 1100;
    }, { timeout: 10000, message: '1-hour writes at the 5-minute price' });
  });
});

describe('multipliers', () => {
  test('an account at 0 is a free tier: admitted with no balance, charged nothing', async () => {
    await cli('account', 'add', 'free', '--balance', '0');
    const key = await newKey('free', 'free');
    assert.equal((await ready(key.key, 'fast')).status, 402);
    const set = await json('account', 'set', 'free', '--multiplier', '0');
    assert.equal(set.multiplier_ppm, 0);
    let answer;
    await waitFor(async () => (answer = await chat(key.key, 'fast')).status === 200,
      { timeout: 10000, message: 'the free tier admitted' });
    const row = await usageOf(answer.id);
    assert.ok(Number(row.tokens_in) > 0);
    assert.equal(Number(row.cost_micros), 0);
    assert.equal((await json('account', 'show', 'free')).balance_micros, 0);
  });

  test('a provider key at 0.5 and an account at 3 multiply', async () => {
    await cli('provider', 'add', 'half', '--protocol', 'anthropic', '--base-url', mock.url);
    await cli('provider', 'key', 'add', 'half', '--secret', 'sk-half');
    await cli('model', 'add', 'halfy', '--route', 'half:fast', '--price-in', '10', '--price-out', '10');
    const providerKeys = await json('provider', 'key', 'list', 'half');
    const set = await json('provider', 'key', 'set', String(providerKeys.data[0].id), '--multiplier', '0.5');
    assert.equal(set.multiplier_ppm, 500000);
    await cli('account', 'add', 'triple', '--balance', '10', '--multiplier', '3');
    const key = await newKey('triple', 'triple');
    await ready(key.key, 'halfy');
    const answer = await chat(key.key, 'halfy');
    assert.equal(answer.status, 200, answer.text);
    const row = await usageOf(answer.id);
    const base = Math.ceil((Number(row.tokens_in) + Number(row.tokens_out)) * 10);
    assert.equal(Number(row.cost_micros), Math.ceil(base * 1.5));
  });

  test('bad multipliers are refused', async () => {
    const cliError = await run('account', 'set', 'free', '--multiplier', '-1');
    assert.equal(cliError.code, 2);
    assert.match(cliError.stderr, /--multiplier takes a decimal multiplier/);
    const tooPrecise = await run('account', 'set', 'free', '--multiplier', '0.1234567');
    assert.equal(tooPrecise.code, 2);
    assert.equal((await json('account', 'show', 'free')).multiplier_ppm, 0);
  });
});

describe('forced capabilities per model', () => {
  test('a model that forces a capability routes only to keys that have it', async () => {
    await cli('provider', 'key', 'add', 'mock', '--secret', 'sk-wide', '--name', 'wide');
    const list = await json('provider', 'key', 'list', 'mock');
    const wide = list.data.find((k) => k.name === 'wide');
    await cli('provider', 'key', 'set', String(wide.id), '--capabilities', 'context-1m');
    const model = await json('model', 'add', 'widey', '--route', 'mock:fast', '--force-capabilities', 'context-1m');
    assert.deepEqual(model.force_capabilities, ['context-1m']);
    await ready(keys.plain.key, 'widey');
    for (let i = 0; i < 6; i++) {
      const answer = await chat(keys.plain.key, 'widey');
      assert.equal(answer.status, 200, answer.text);
      assert.equal(Number((await usageOf(answer.id)).provider_key_id), wide.id);
    }
    const lifted = await json('model', 'set', 'widey', '--force-capabilities', 'none');
    assert.deepEqual(lifted.force_capabilities, []);
  });
});
