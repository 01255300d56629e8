// What clients send, through the real programs and the official SDKs:
// the model lists (every name a key may use, however it is routed: a
// route, a mapping rule, zero-config on the model's own name; the key's
// and account's allowed_models; kept for a TTL but rebuilt when the
// configuration changes), one model by its path, and streaming asked for
// by `Accept: text/event-stream` alone.
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { startCluster, startMock, waitFor } from '../lib/harness.mjs';

let cluster;
let mock;
let key;
let narrow;

async function cli(...args) {
  const result = await cluster.tollgate(args, { env: { TOLLGATE_DIR: cluster.dir } });
  if (result.code !== 0) throw new Error(`tollgate ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

async function chat(model, apiKey = key) {
  return fetch(`${cluster.gateway}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'echo: hi' }] }),
  });
}

async function ids(apiKey = key, path = '/v1/models') {
  const response = await fetch(`${cluster.gateway}${path}`, { headers: { authorization: `Bearer ${apiKey}` } });
  assert.equal(response.status, 200);
  return (await response.json()).data.map((m) => m.id).sort();
}

before(async () => {
  mock = await startMock(['--models', 'gpt-4o-mini,listed-model,claude-3-5-haiku-latest']);
  cluster = await startCluster();
  await cli('provider', 'add', 'up', '--protocol', 'openai', '--base-url', mock.url);
  await cli('provider', 'key', 'add', 'up', '--secret', 'sk-up-secret');
  await cli('provider', 'add', 'up-anthropic', '--protocol', 'anthropic', '--base-url', mock.url);
  await cli('provider', 'key', 'add', 'up-anthropic', '--secret', 'sk-up-anthropic');
  // Three ways to reach an upstream: a route, an include rule, and
  // zero-config (a logical model named as the provider lists it).
  await cli('model', 'add', 'routed', '--route', 'up:gpt-4o-mini', '--price-in', '1', '--price-out', '2');
  await cli('model', 'add', 'ruled', '--price-in', '1', '--price-out', '2');
  await cli('model', 'rule', 'add', 'ruled', '--kind', 'include', '--provider', 'up', '--pattern', 'gpt-4o-mini');
  await cli('model', 'add', 'listed-model', '--price-in', '1', '--price-out', '2');
  await cli('model', 'add', 'to-anthropic', '--route', 'up-anthropic:claude-3-5-haiku-latest', '--price-in', '1', '--price-out', '2');
  await cli('account', 'add', 'clients', '--balance', '100');
  key = (await cli('key', 'create', 'clients', '--name', 'all')).trim().split('\n').pop();
  narrow = (await cli('key', 'create', 'clients', '--name', 'narrow', '--models', 'routed,ruled')).trim().split('\n').pop();
  // zero-config needs the provider's fetched list: wait until it routes.
  await waitFor(async () => (await chat('listed-model')).status === 200,
    { timeout: 20000, message: 'listed-model served through zero-config' });
  await waitFor(async () => (await chat('routed', narrow)).status === 200, { timeout: 10000, message: 'narrow key works' });
});

after(async () => { await cluster?.stop(); await mock?.stop(); });

describe('model lists', () => {
  test('every name the key may use, and each of them answers; what is not listed does not', async () => {
    const names = await ids();
    assert.deepEqual(names, ['listed-model', 'routed', 'ruled', 'to-anthropic']);
    for (const model of names) {
      const response = await chat(model);
      assert.equal(response.status, 200, `${model}: ${await response.text()}`);
    }
    // A name a provider lists that is no logical model: the gateway refuses it (billing
    // admits logical models only), so the list leaves it out.
    const unlisted = await chat('gpt-4o-mini');
    assert.equal(unlisted.status, 404);
    assert.ok(!names.includes('gpt-4o-mini'));
  });

  test('the key\'s allowed models narrow the list; a model left out is a 404 in OpenAI shape', async () => {
    assert.deepEqual(await ids(narrow), ['routed', 'ruled']);
    const response = await fetch(`${cluster.gateway}/v1/models/listed-model`, { headers: { authorization: `Bearer ${narrow}` } });
    assert.equal(response.status, 404);
    const body = await response.json();
    assert.equal(body.error.code, 'model_not_found');
    assert.match(body.error.message, /listed-model/);
  });

  test('GET /models (a base URL without /v1) is the same list', async () => {
    assert.deepEqual(await ids(key, '/models'), await ids(key, '/v1/models'));
  });

  test('a private Cache-Control with the TTL, and no key no list', async () => {
    const response = await fetch(`${cluster.gateway}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
    assert.equal(response.headers.get('cache-control'), 'private, max-age=10');
    const anonymous = await fetch(`${cluster.gateway}/v1/models`);
    assert.equal(anonymous.status, 401);
    assert.equal((await anonymous.json()).error.code, 'invalid_api_key');
  });

  test('openai SDK: models.list and models.retrieve', async () => {
    const client = new OpenAI({ apiKey: key, baseURL: `${cluster.gateway}/v1`, maxRetries: 0 });
    const listed = [];
    for await (const model of client.models.list()) listed.push(model.id);
    assert.ok(listed.includes('ruled') && listed.includes('listed-model'), listed.join(','));
    const model = await client.models.retrieve('ruled');
    assert.equal(model.id, 'ruled');
    assert.equal(model.object, 'model');
    await assert.rejects(client.models.retrieve('nope'), (error) => error instanceof OpenAI.NotFoundError);
  });

  test('anthropic SDK: models.list and models.retrieve', async () => {
    const client = new Anthropic({ apiKey: narrow, baseURL: cluster.gateway, maxRetries: 0 });
    const page = await client.models.list();
    assert.deepEqual(page.data.map((m) => m.id).sort(), ['routed', 'ruled']);
    assert.equal(page.data[0].type, 'model');
    const one = await client.models.retrieve('routed');
    assert.equal(one.id, 'routed');
    await assert.rejects(client.models.retrieve('listed-model'),
      (error) => error instanceof Anthropic.NotFoundError && error.error?.error?.type === 'not_found_error');
  });

  test('genai SDK: models.list and models.get', async () => {
    const ai = new GoogleGenAI({ apiKey: key, httpOptions: { baseUrl: cluster.gateway } });
    const names = [];
    for await (const model of await ai.models.list()) names.push(model.name);
    assert.deepEqual(names.sort(), ['models/listed-model', 'models/routed', 'models/ruled', 'models/to-anthropic']);
    const one = await ai.models.get({ model: 'ruled' });
    assert.equal(one.name, 'models/ruled');
    await assert.rejects(ai.models.get({ model: 'nope' }), (error) => error.status === 404);
  });

  test('a new model shows at once (the cache is dropped with the old configuration)', async () => {
    assert.ok(!(await ids()).includes('later'));
    await cli('model', 'add', 'later', '--route', 'up:gpt-4o-mini');
    await waitFor(async () => (await ids()).includes('later'), { timeout: 3000, message: 'later in the list' });
    await cli('model', 'set', 'later', '--status', 'disabled');
    await waitFor(async () => !(await ids()).includes('later'), { timeout: 3000, message: 'later gone from the list' });
  });
});

describe('Accept: text/event-stream', () => {
  const post = (path, body, headers = {}) => fetch(`${cluster.gateway}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'x-api-key': key, ...headers },
    body: JSON.stringify(body),
  });

  test('OpenAI chat without "stream": streamed', async () => {
    const response = await post('/v1/chat/completions',
      { model: 'routed', messages: [{ role: 'user', content: 'echo: one two' }] }, { accept: 'text/event-stream' });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /text\/event-stream/);
    const text = await response.text();
    assert.match(text, /"object":"chat.completion.chunk"/);
    assert.match(text, /data: \[DONE\]/);
  });

  test('"stream": false in the body wins over the header', async () => {
    const response = await post('/v1/chat/completions',
      { model: 'routed', stream: false, messages: [{ role: 'user', content: 'echo: one two' }] }, { accept: 'text/event-stream' });
    assert.match(response.headers.get('content-type'), /application\/json/);
    assert.equal((await response.json()).object, 'chat.completion');
  });

  test('a plain Accept: not streamed', async () => {
    const response = await post('/v1/chat/completions',
      { model: 'routed', messages: [{ role: 'user', content: 'echo: x' }] }, { accept: 'application/json' });
    assert.match(response.headers.get('content-type'), /application\/json/);
  });

  test('Anthropic messages, converted to an OpenAI upstream and passed through to an Anthropic one', async () => {
    for (const model of ['routed', 'to-anthropic']) {
      const response = await post('/v1/messages',
        { model, max_tokens: 50, messages: [{ role: 'user', content: 'echo: streamed please' }] },
        { accept: 'text/event-stream', 'anthropic-version': '2023-06-01' });
      assert.equal(response.status, 200, model);
      assert.match(response.headers.get('content-type'), /text\/event-stream/);
      const text = await response.text();
      assert.match(text, /event: message_start/, model);
      assert.match(text, /event: message_stop/, model);
    }
  });

  test('Responses without "stream": streamed', async () => {
    const response = await post('/v1/responses', { model: 'routed', input: 'echo: resp' }, { accept: 'text/event-stream' });
    assert.equal(response.status, 200);
    assert.match(await response.text(), /response\.completed/);
  });

  test('Gemini streamGenerateContent without alt=sse: SSE instead of a JSON array', async () => {
    const response = await fetch(`${cluster.gateway}/v1beta/models/routed:streamGenerateContent`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-goog-api-key': key, accept: 'text/event-stream' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'echo: gem' }] }] }),
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /text\/event-stream/);
    assert.match(await response.text(), /^data: \{/m);
  });

  test('an invalid "stream" is still a 400 naming the field', async () => {
    const response = await post('/v1/chat/completions',
      { model: 'routed', stream: 'yes', messages: [{ role: 'user', content: 'x' }] }, { accept: 'text/event-stream' });
    assert.equal(response.status, 400);
    assert.match((await response.json()).error.message, /'stream'/);
  });
});

describe('GET /v1/usage and the dashboard routes: a key reads its own money and limits', () => {
  const get = (path, apiKey = key) => fetch(`${cluster.gateway}${path}`, { headers: { authorization: `Bearer ${apiKey}` } });

  test('balance, spend and limits; the same balance as tollgate account show', async () => {
    await cluster.psql("UPDATE accounts SET daily_spend_micros = 50000000, rpm_limit = 6000 WHERE name = 'clients'");
    const before = await (await get('/v1/usage')).json();
    assert.equal((await chat('routed')).status, 200);
    const usage = await waitFor(async () => {
      const body = await (await get('/v1/usage')).json();
      return body.account.spend.day_micros > before.account.spend.day_micros
        && body.account.limits.daily_spend_micros === 50000000 && body;
    }, { timeout: 5000, message: 'spend and the new limit in /v1/usage' });
    assert.equal(usage.object, 'usage');
    assert.equal(usage.currency, 'USD');
    assert.ok(usage.balance_micros < 100000000 && usage.balance_micros > 99000000, JSON.stringify(usage));
    assert.equal(usage.balance, (usage.balance_micros / 1e6).toString());
    assert.equal(usage.account.name, 'clients');
    assert.equal(usage.account.limits.rpm, 6000);
    assert.equal(usage.account.limits.tpm, null);
    assert.equal(usage.key.name, 'all');
    assert.equal(usage.key.models, null);
    assert.ok(usage.key.spend.month_micros >= usage.key.spend.day_micros && usage.key.spend.day_micros > 0);
    assert.equal(usage.key.expires_at, null);
    assert.ok(key.startsWith(usage.key.prefix));
    const response = await get('/v1/usage');
    assert.equal(response.headers.get('cache-control'), 'no-store');
    // Once the ledger has committed, the admin API and the CLI show the same balance.
    await waitFor(async () => {
      const shown = JSON.parse((await cli('account', 'show', 'clients', '--json')));
      const mine = await (await get('/v1/usage')).json();
      return shown.balance_micros === mine.balance_micros;
    }, { timeout: 10000, message: 'account show and /v1/usage agree' });
  });

  test('the key\'s own models and limits', async () => {
    const usage = await (await get('/v1/usage', narrow)).json();
    assert.deepEqual(usage.key.models, ['routed', 'ruled']);
    assert.equal(usage.key.name, 'narrow');
  });

  test('the OpenAI dashboard routes: hard limit less usage is the balance', async () => {
    const usage = await (await get('/v1/usage')).json();
    const subscription = await (await get('/v1/dashboard/billing/subscription')).json();
    assert.equal(subscription.object, 'billing_subscription');
    const now = new Date();
    const start = `${now.getUTCFullYear()}-${String(now.getUTCMonth() + 1).padStart(2, '0')}-01`;
    const spent = await (await get(`/dashboard/billing/usage?start_date=${start}&end_date=2099-01-01`)).json();
    assert.equal(spent.object, 'list');
    const remaining = subscription.hard_limit_usd - spent.total_usage / 100;
    assert.ok(Math.abs(remaining - usage.balance_micros / 1e6) < 1e-6, `${remaining} vs ${usage.balance}`);
  });

  test('bad input is a 400 naming the parameter; no key or a revoked key is a 401', async () => {
    const bad = await get('/v1/dashboard/billing/usage?start_date=2026-02-30');
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).error.message, /'start_date'/);
    const none = await fetch(`${cluster.gateway}/v1/usage`);
    assert.equal(none.status, 401);
    assert.equal((await none.json()).error.code, 'invalid_api_key');
    const post = await fetch(`${cluster.gateway}/v1/usage`, { method: 'POST', headers: { authorization: `Bearer ${key}` } });
    assert.equal(post.status, 405);
    const gone = (await cli('key', 'create', 'clients', '--name', 'gone')).trim().split('\n').pop();
    await waitFor(async () => (await get('/v1/usage', gone)).status === 200, { timeout: 5000, message: 'new key works' });
    await cli('key', 'revoke', gone);
    await waitFor(async () => (await get('/v1/usage', gone)).status === 401, { timeout: 5000, message: 'revoked key refused' });
  });
});

describe('the client key prefix is a setting', () => {
  test('key-prefix set: new keys carry it, old keys keep working, ingress and revoke honour it', async () => {
    assert.equal(JSON.parse(await cli('key-prefix', '--json')).prefix, 'tg-');
    assert.match(await cli('key-prefix', 'set', 'acme_'), /prefix acme_ from now on/);
    const api = await fetch(`${cluster.admin}/admin/settings/client-keys`, { headers: { authorization: `Bearer ${cluster.token}` } });
    assert.deepEqual(await api.json(), { prefix: 'acme_' });
    const fresh = (await cli('key', 'create', 'clients', '--name', 'acme')).trim().split('\n').pop();
    assert.match(fresh, /^acme_[0-9a-f]{48}$/);
    await waitFor(async () => (await chat('routed', fresh)).status === 200, { timeout: 5000, message: 'the acme_ key works' });
    assert.equal((await chat('routed', key)).status, 200, 'a tg- key made before still works');
    const listed = JSON.parse(await cli('key', 'list', '--account', 'clients', '--json')).data.find((k) => k.name === 'acme');
    assert.equal(listed.prefix, fresh.slice(0, 12));
    // A client that sends someone else's bearer token beside our key: ingress takes the one
    // with our prefix (once every program has seen the setting).
    await waitFor(async () => {
      const response = await fetch(`${cluster.gateway}/v1/usage`, { headers: { authorization: 'Bearer proxy-credential', 'x-api-key': fresh } });
      return response.status === 200 && (await response.json()).key.name === 'acme';
    }, { timeout: 5000, message: 'ingress prefers the acme_ credential' });
    await cli('key', 'revoke', fresh);
    await waitFor(async () => (await chat('routed', fresh)).status === 401, { timeout: 5000, message: 'revoked by the full acme_ key' });
  });

  test('a bad prefix is refused, naming the field, and changes nothing', async () => {
    for (const bad of ['', '12345', 'has space', 'tgt_admin', 'waaaaaaaaaaaaaaay-too-long']) {
      const result = await cluster.tollgate(['key-prefix', 'set', bad], { env: { TOLLGATE_DIR: cluster.dir } });
      assert.notEqual(result.code, 0, bad);
      assert.match(result.stderr, /'prefix'/, bad);
    }
    const extra = await fetch(`${cluster.admin}/admin/settings/client-keys`, {
      method: 'PATCH', headers: { authorization: `Bearer ${cluster.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ prefix: 'ok-', other: 1 }),
    });
    assert.equal(extra.status, 400);
    assert.match((await extra.json()).error.message, /'other'/);
    assert.equal(JSON.parse(await cli('key-prefix', '--json')).prefix, 'acme_');
    await cli('key-prefix', 'set', 'tg-');
  });
});

describe('times in CLI tables: UTC unless --tz or TZ says otherwise', () => {
  // Tokyo has no summer time: always UTC+9, abbreviated JST.
  const tokyo = (iso) => {
    const shifted = new Date(Date.parse(iso) + 9 * 3600 * 1000).toISOString();
    return `${shifted.slice(0, 10)} ${shifted.slice(11, 19)} JST`;
  };

  test('tollgate usage and ledger usage in UTC, in --tz, in TZ; --json stays UTC', async () => {
    const env = { TOLLGATE_DIR: cluster.dir };
    const rows = await waitFor(async () => {
      const json = JSON.parse((await cluster.tollgate(['usage', '--limit', '1', '--json'], { env })).stdout);
      return json.data?.length && json.data;
    }, { timeout: 5000, message: 'a usage row' });
    const iso = rows[0].started_at;
    assert.match(iso, /(Z|\+00:00)$/);
    const utc = `${new Date(iso).toISOString().slice(0, 10)} ${new Date(iso).toISOString().slice(11, 19)}`;
    const plain = await cluster.tollgate(['usage', '--limit', '1'], { env: { ...env, TZ: '' } });
    assert.equal(plain.code, 0, plain.stderr);
    assert.ok(plain.stdout.includes(utc), plain.stdout);
    const option = await cluster.tollgate(['usage', '--limit', '1', '--tz', 'Asia/Tokyo'], { env });
    assert.ok(option.stdout.includes(tokyo(iso)), option.stdout);
    const variable = await cluster.tollgate(['usage', '--limit', '1'], { env: { ...env, TZ: 'Asia/Tokyo' } });
    assert.ok(variable.stdout.includes(tokyo(iso)), variable.stdout);
    const json = await cluster.tollgate(['usage', '--limit', '1', '--json', '--tz', 'Asia/Tokyo'], { env });
    assert.equal(JSON.parse(json.stdout).data[0].started_at, iso);
    const ledger = await cluster.tollgate(['ledger', 'usage', '--limit', '1', '--tz', 'Asia/Tokyo'], { env });
    assert.equal(ledger.code, 0, ledger.stderr);
    assert.match(ledger.stdout, / JST /);
  });

  test('an unknown --tz is an error naming it; an unknown TZ is said and UTC is used', async () => {
    const env = { TOLLGATE_DIR: cluster.dir };
    const option = await cluster.tollgate(['usage', '--tz', 'Mars/Olympus'], { env });
    assert.equal(option.code, 2);
    assert.match(option.stderr, /--tz: unknown time zone 'Mars\/Olympus'/);
    const variable = await cluster.tollgate(['usage', '--limit', '1'], { env: { ...env, TZ: 'Nowhere/City' } });
    assert.equal(variable.code, 0);
    assert.match(variable.stderr, /TZ: unknown time zone 'Nowhere\/City'.*; times in UTC/);
    const path = await cluster.tollgate(['usage', '--limit', '1'], { env: { ...env, TZ: ':/usr/share/zoneinfo/Asia/Tokyo' } });
    assert.match(path.stdout, / JST/);
    const ledger = await cluster.tollgate(['ledger', 'usage', '--tz', 'Mars/Olympus'], { env });
    assert.equal(ledger.code, 2);
  });
});
