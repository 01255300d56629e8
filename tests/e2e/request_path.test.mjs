// The request path end to end: an OpenAI client talks to a provider (the mock
// upstream) through ingress, billing, router, dispatch and ledger, against a
// real PostgreSQL. Every error path of the request-path issue has a test here.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { startCluster, startMock, waitFor } from '../lib/harness.mjs';

let cluster;
let mock;
let key;

async function cli(...args) {
  const result = await cluster.tollgate(args, { env: { TOLLGATE_DIR: cluster.dir } });
  if (result.code !== 0) throw new Error(`tollgate ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

async function chat(body, { headers = {}, token = key, path = '/v1/chat/completions' } = {}) {
  const response = await fetch(`${cluster.gateway}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* streams and non-JSON bodies */ }
  return { status: response.status, headers: response.headers, text, json };
}

async function mockStats() {
  return (await fetch(`${mock.url}/mock/stats`)).json();
}

const message = (content = 'Say hello') => [{ role: 'user', content }];

before(async () => {
  mock = await startMock(['--models', 'gpt-4o-mini,mock-50,slow-model,hang-model,cut-model',
    '--fault', 'slow-model=delay-chunks:300', '--fault', 'hang-model=hang', '--fault', 'cut-model=cut:3']);
  // A short first-byte timeout makes the 504 path quick to test; not so short that one of
  // 200 concurrent streams meets it under ASan on a loaded 2-core machine (1.5 s did).
  cluster = await startCluster({ env: { TOLLGATE_DISPATCH_FIRST_BYTE_TIMEOUT_MS: '4000' } });
  await cli('provider', 'add', 'mock', '--protocol', 'openai', '--base-url', mock.url);
  await cli('provider', 'key', 'add', 'mock', '--secret', 'sk-mock-provider-secret');
  for (const model of ['gpt-4o-mini', 'mock-50', 'slow-model', 'hang-model', 'cut-model']) {
    await cli('model', 'add', model, '--route', `mock:${model}`, '--price-in', '0.15', '--price-out', '0.60');
  }
  // A model whose only provider is disabled: no provider available.
  await cli('provider', 'add', 'gone', '--protocol', 'openai', '--base-url', 'http://127.0.0.1:9');
  await cli('model', 'add', 'orphan-model', '--route', 'gone:orphan');
  await cluster.psql("UPDATE providers SET status = 'disabled' WHERE name = 'gone'");
  await cli('account', 'add', 'acme', '--balance', '100');
  key = (await cli('key', 'create', 'acme', '--name', 'e2e')).trim().split('\n').pop();
  assert.match(key, /^tg-[0-9a-f]{48}$/);
  await waitFor(async () => (await chat({ model: 'gpt-4o-mini', messages: message() })).status === 200,
    { timeout: 5000, message: 'the new key works' });
});

after(async () => {
  await cluster?.stop();
  await mock?.stop();
});

describe('success', () => {
  test('plain completion, with request id and overhead headers', async () => {
    const response = await chat({ model: 'gpt-4o-mini', messages: message('echo: hi there') });
    assert.equal(response.status, 200);
    assert.equal(response.json.choices[0].message.content, ' hi there');
    assert.equal(response.json.model, 'gpt-4o-mini');
    assert.ok(response.json.usage.prompt_tokens > 0);
    assert.match(response.headers.get('x-request-id'), /^[0-9a-f]{32}$/);
    const overhead = Number(response.headers.get('x-tollgate-overhead-ms'));
    assert.ok(Number.isFinite(overhead) && overhead >= 0, `overhead header ${overhead}`);
    const stats = await mockStats();
    assert.equal(stats.last.api_key, 'sk-mock-provider-secret', 'the provider key went upstream');
  });

  test('streamed completion arrives chunk by chunk, usage chunk only when asked for', async () => {
    let response = await chat({ model: 'mock-50', stream: true, messages: message() });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /text\/event-stream/);
    let events = response.text.split('\n\n').filter(Boolean);
    assert.equal(events.at(-1), 'data: [DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.replace(/^data: /, '')));
    assert.ok(chunks.length >= 50, `${chunks.length} chunks`);
    assert.ok(chunks.every((c) => !c.usage), 'no usage chunk the client did not ask for');
    let stats = await mockStats();
    assert.equal(stats.last.stream_options.include_usage, true, 'usage asked from upstream');

    response = await chat({ model: 'mock-50', stream: true, stream_options: { include_usage: true }, messages: message() });
    events = response.text.split('\n\n').filter(Boolean);
    const usage = JSON.parse(events.at(-2).replace(/^data: /, ''));
    assert.equal(usage.choices.length, 0);
    assert.equal(usage.usage.completion_tokens, 50);
  });

  test('a 1 MiB request body goes through', async () => {
    const big = 'x'.repeat(1024 * 1024);
    const response = await chat({ model: 'gpt-4o-mini', messages: message(big) });
    assert.equal(response.status, 200);
    const stats = await mockStats();
    assert.ok(stats.last.body_size > 1024 * 1024);
  });

  test('200 concurrent streams all complete', async () => {
    const results = await Promise.all(Array.from({ length: 200 }, () =>
      chat({ model: 'mock-50', stream: true, messages: message() })));
    for (const result of results) {
      assert.equal(result.status, 200);
      assert.ok(result.text.endsWith('data: [DONE]\n\n'));
    }
  });

  test('GET /v1/models lists the models the key may use', async () => {
    const response = await fetch(`${cluster.gateway}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
    assert.equal(response.status, 200);
    const list = await response.json();
    assert.equal(list.object, 'list');
    assert.ok(list.data.some((m) => m.id === 'gpt-4o-mini'));
    const limited = (await cli('key', 'create', 'acme', '--models', 'mock-50')).trim().split('\n').pop();
    await waitFor(async () => (await fetch(`${cluster.gateway}/v1/models`, { headers: { authorization: `Bearer ${limited}` } })).status === 200);
    const only = await (await fetch(`${cluster.gateway}/v1/models`, { headers: { authorization: `Bearer ${limited}` } })).json();
    assert.deepEqual(only.data.map((m) => m.id), ['mock-50']);
  });

  test('healthz and metrics', async () => {
    assert.equal((await fetch(`${cluster.gateway}/healthz`)).status, 200);
    const metrics = await (await fetch(`${cluster.gateway}/metrics`)).text();
    assert.match(metrics, /^# TYPE \S+ (counter|gauge|histogram)$/m);
  });
});

describe('errors, in OpenAI error shape', () => {
  const assertError = (response, status, code) => {
    assert.equal(response.status, status, response.text);
    assert.ok(response.json?.error?.message, `error body: ${response.text}`);
    if (code) assert.equal(response.json.error.code, code);
    assert.ok(response.headers.get('x-request-id'), 'errors carry x-request-id');
  };

  test('missing key 401', async () => {
    assertError(await chat({ model: 'gpt-4o-mini', messages: message() }, { token: null }), 401);
  });

  test('unknown key 401', async () => {
    assertError(await chat({ model: 'gpt-4o-mini', messages: message() }, { token: `tg-${'0'.repeat(48)}` }), 401);
  });

  test('model unknown to the key 404 model_not_found', async () => {
    assertError(await chat({ model: 'no-such-model', messages: message() }), 404, 'model_not_found');
  });

  test('invalid JSON 400', async () => {
    assertError(await chat('{"model": "gpt-4o-mini", '), 400);
  });

  test('missing messages 400', async () => {
    const response = await chat({ model: 'gpt-4o-mini' });
    assertError(response, 400);
    assert.match(response.json.error.message, /messages/);
  });

  test('body over the limit 413', async () => {
    const huge = 'x'.repeat(17 * 1024 * 1024);
    assertError(await chat({ model: 'gpt-4o-mini', messages: message(huge) }), 413);
  });

  test('no provider available 503', async () => {
    assertError(await chat({ model: 'orphan-model', messages: message() }), 503);
  });

  test('upstream timeout 504', async () => {
    assertError(await chat({ model: 'hang-model', messages: message() }), 504);
  });

  test('a stream cut by the upstream ends with an error, not a clean [DONE]', async () => {
    const response = await chat({ model: 'cut-model', stream: true, messages: message() });
    assert.ok(!response.text.includes('data: [DONE]'), response.text);
    assert.match(response.text, /"error"/);
  });

  test('a revoked key stops working within a second', async () => {
    const fresh = (await cli('key', 'create', 'acme', '--name', 'short-lived')).trim().split('\n').pop();
    await waitFor(async () => (await chat({ model: 'gpt-4o-mini', messages: message() }, { token: fresh })).status === 200);
    await cli('key', 'revoke', fresh);
    const revokedAt = Date.now();
    await waitFor(async () => (await chat({ model: 'gpt-4o-mini', messages: message() }, { token: fresh })).status === 401,
      { timeout: 1000, interval: 20, message: 'revoked key refused within 1 s' });
    assert.ok(Date.now() - revokedAt <= 1000);
  });

  test('a key revoked in the middle of a stream: the stream finishes, the next request is refused', async () => {
    const fresh = (await cli('key', 'create', 'acme', '--name', 'mid-stream')).trim().split('\n').pop();
    await waitFor(async () => (await chat({ model: 'gpt-4o-mini', messages: message() }, { token: fresh })).status === 200);
    const streaming = chat({ model: 'slow-model', stream: true, messages: message() }, { token: fresh });
    await cli('key', 'revoke', fresh);
    const finished = await streaming;
    assert.equal(finished.status, 200);
    assert.ok(finished.text.endsWith('data: [DONE]\n\n'));
    await waitFor(async () => (await chat({ model: 'gpt-4o-mini', messages: message() }, { token: fresh })).status === 401,
      { timeout: 1000, interval: 20 });
  });
});

test('a client that disconnects mid-stream cancels the upstream call', async () => {
  const before = (await mockStats()).client_aborts;
  const controller = new AbortController();
  const response = await fetch(`${cluster.gateway}/v1/chat/completions`, {
    method: 'POST', signal: controller.signal,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model: 'slow-model', stream: true, messages: message() }),
  });
  const reader = response.body.getReader();
  await reader.read(); // the first bytes arrived: the stream is under way
  controller.abort();
  await waitFor(async () => (await mockStats()).client_aborts > before,
    { timeout: 1000, interval: 20, message: 'the upstream saw the cancel' });
});

test('every completed request leaves one usage row', async () => {
  const before = Number((await cluster.psql('SELECT count(*) AS n FROM usage'))[0].n);
  const ids = [];
  for (let i = 0; i < 5; i++) {
    const response = await chat({ model: 'gpt-4o-mini', messages: message() });
    assert.equal(response.status, 200);
    ids.push(response.headers.get('x-request-id'));
  }
  await waitFor(async () => {
    const rows = await cluster.psql(`SELECT request_id, status, tokens_in, tokens_out, cost_micros, model
      FROM usage WHERE request_id IN (${ids.map((id) => `'${id}'`).join(',')})`);
    return rows.length === 5;
  }, { timeout: 5000, message: 'usage rows written' });
  const rows = await cluster.psql(`SELECT * FROM usage WHERE request_id = '${ids[0]}'`);
  assert.equal(rows[0].status, '200');
  assert.equal(rows[0].model, 'gpt-4o-mini');
  assert.ok(Number(rows[0].tokens_in) > 0 && Number(rows[0].tokens_out) > 0);
  assert.ok(Number(rows[0].cost_micros) > 0);
  const after = Number((await cluster.psql('SELECT count(*) AS n FROM usage'))[0].n);
  assert.ok(after >= before + 5);
});

describe('the official openai SDK', () => {
  const client = () => new OpenAI({ apiKey: key, baseURL: `${cluster.gateway}/v1`, maxRetries: 0 });

  test('chat.completions.create', async () => {
    const completion = await client().chat.completions.create({
      model: 'gpt-4o-mini', messages: message('echo: from the SDK'),
    });
    assert.equal(completion.choices[0].message.content, ' from the SDK');
    assert.equal(completion.choices[0].finish_reason, 'stop');
    assert.ok(completion.usage.total_tokens > 0);
  });

  test('chat.completions.create with stream: true', async () => {
    const stream = await client().chat.completions.create({
      model: 'mock-50', messages: message(), stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let usage = null;
    let finish = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      usage = chunk.usage ?? usage;
    }
    assert.ok(text.length > 0);
    assert.equal(finish, 'stop');
    assert.equal(usage.completion_tokens, 50);
  });

  test('an error surfaces as APIError with the right status', async () => {
    await assert.rejects(
      client().chat.completions.create({ model: 'no-such-model', messages: message() }),
      (error) => error instanceof OpenAI.APIError && error.status === 404 && error.code === 'model_not_found');
    const anonymous = new OpenAI({ apiKey: 'tg-wrong', baseURL: `${cluster.gateway}/v1`, maxRetries: 0 });
    await assert.rejects(anonymous.chat.completions.create({ model: 'gpt-4o-mini', messages: message() }),
      (error) => error instanceof OpenAI.AuthenticationError && error.status === 401);
  });
});
