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
  test('every name the key may use, and each of them answers', async () => {
    const names = await ids();
    assert.deepEqual(names, ['listed-model', 'routed', 'ruled', 'to-anthropic']);
    for (const model of names) {
      const response = model === 'to-anthropic' ? null : await chat(model);
      if (response) assert.equal(response.status, 200, `${model}: ${await response.text()}`);
    }
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
