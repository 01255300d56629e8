// The admission reservation's output part (docs/billing.md, "The admission estimate") through the
// real programs: the request's own max_tokens, else the model's max_output_tokens, else 4096; a
// max_tokens above the model's maximum is refused 400 invalid_value in the client's own format,
// naming the client's own field (Responses' max_output_tokens, Gemini's maxOutputTokens).
//
// The model costs nothing for input and $100 per million output tokens (100 micros a token); the
// account holds $0.20 = 200,000 micros. A request that names no limit reserves 4096 x 100 =
// 409,600 micros on a model with no maximum (refused, 402), and 1000 x 100 = 100,000 once the
// model's maximum is 1000 (admitted). The mock answers 5 output tokens: 500 micros a request.
// Bad values of max_output_tokens: tests/billing/settables.test.mjs.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { clusterCli, startCluster, startMock, waitFor } from '../lib/harness.mjs';

let cluster;
let mock;
let key;

const { run, cli, json } = clusterCli(() => cluster);

// One request; maxTokens undefined sends no limit (OpenAI only: Anthropic requires one).
async function chat(model, { maxTokens, protocol = 'openai' } = {}) {
  const anthropic = protocol === 'anthropic';
  const body = { model, messages: [{ role: 'user', content: 'hi' }] };
  if (maxTokens !== undefined) body.max_tokens = maxTokens;
  const response = await fetch(`${cluster.gateway}${anthropic ? '/v1/messages' : '/v1/chat/completions'}`, {
    method: 'POST',
    headers: anthropic
      ? { 'content-type': 'application/json', 'x-api-key': key, 'anthropic-version': '2023-06-01' }
      : { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  let parsed = null;
  try { parsed = JSON.parse(text); } catch { /* not JSON */ }
  return { status: response.status, body: parsed, text, id: response.headers.get('x-request-id') };
}

const balance = async () => Number((await json('account', 'show', 'tight')).balance_micros);

before(async () => {
  mock = await startMock(['--models', 'fast']);
  cluster = await startCluster();
  await cli('provider', 'add', 'mock', '--protocol', 'openai', '--base-url', mock.url);
  await cli('provider', 'key', 'add', 'mock', '--secret', 'sk-mock');
  await cli('model', 'add', 'capped', '--route', 'mock:fast', '--price-in', '0', '--price-out', '100');
  await cli('account', 'add', 'tight', '--balance', '0.2');
  key = (await json('key', 'create', 'tight', '--name', 'tight')).key;
  // The key and the model reach every program: an answer that is not 401 or 404.
  await waitFor(async () => ![401, 404].includes((await chat('capped', { maxTokens: 5 })).status),
    { timeout: 15000, message: 'the key and the model in the catalog' });
});

after(async () => {
  await cluster?.stop();
  await mock?.stop();
});

describe('the reservation of a request that names no output limit', () => {
  test('no model maximum: 4096 output tokens are reserved, more than the account has (402)', async () => {
    const shown = await json('model', 'show', 'capped');
    assert.equal(shown.max_output_tokens, null);
    const refused = await chat('capped');
    assert.equal(refused.status, 402, refused.text);
    assert.equal(refused.body.error.code, 'insufficient_balance');
    // Its own limit of 1000 fits: the request's max_tokens is what is reserved.
    const own = await chat('capped', { maxTokens: 1000 });
    assert.equal(own.status, 200, own.text);
  });

  test("the model's max_output_tokens is reserved instead: 1000 tokens fit the balance", async () => {
    const set = await json('model', 'set', 'capped', '--max-output-tokens', '1000');
    assert.equal(set.max_output_tokens, 1000);
    assert.equal((await json('model', 'show', 'capped')).max_output_tokens, 1000);
    let answer;
    await waitFor(async () => (answer = await chat('capped')).status === 200,
      { timeout: 15000, message: 'admitted once billing reserves the model maximum' });
    assert.equal(answer.body.choices[0].message.role, 'assistant');
    // Charged what it cost (5 tokens x 100 micros), not what was reserved.
    const row = await waitFor(async () => (await cluster.psql(
      `SELECT cost_micros FROM usage WHERE request_id = '${answer.id}'`))[0],
    { timeout: 10000, message: 'the usage row' });
    assert.equal(Number(row.cost_micros), 500);
    assert.ok(await balance() >= 200000 - 3 * 500, 'only what the requests cost left the balance');
  });

  test('a max_tokens above the model maximum is refused 400 invalid_value, in each protocol', async () => {
    const before = await balance();
    const openai = await chat('capped', { maxTokens: 1001 });
    assert.equal(openai.status, 400, openai.text);
    assert.equal(openai.body.error.code, 'invalid_value');
    assert.equal(openai.body.error.type, 'invalid_request_error');
    assert.match(openai.body.error.message, /max_tokens is too large: 1001\. This model supports at most 1000 output tokens/);
    const anthropic = await chat('capped', { maxTokens: 5000, protocol: 'anthropic' });
    assert.equal(anthropic.status, 400, anthropic.text);
    assert.equal(anthropic.body.type, 'error');
    assert.equal(anthropic.body.error.type, 'invalid_request_error');
    assert.match(anthropic.body.error.message, /max_tokens is too large: 5000/);
    // Responses and Gemini name their own field.
    const responses = await fetch(`${cluster.gateway}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ model: 'capped', input: 'hi', max_output_tokens: 1500 }),
    });
    const responsesBody = await responses.json();
    assert.equal(responses.status, 400, JSON.stringify(responsesBody));
    assert.equal(responsesBody.error.code, 'invalid_value');
    assert.match(responsesBody.error.message, /^max_output_tokens is too large: 1500\./);
    const gemini = await fetch(`${cluster.gateway}/v1beta/models/capped:generateContent`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-goog-api-key': key },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }],
        generationConfig: { maxOutputTokens: 2000 } }),
    });
    const geminiBody = await gemini.json();
    assert.equal(gemini.status, 400, JSON.stringify(geminiBody));
    assert.equal(geminiBody.error.code, 400);
    assert.equal(geminiBody.error.status, 'INVALID_ARGUMENT');
    assert.match(geminiBody.error.message, /^generationConfig\.maxOutputTokens is too large: 2000\./);
    // At the maximum itself, admitted (Anthropic too).
    const at = await chat('capped', { maxTokens: 1000, protocol: 'anthropic' });
    assert.equal(at.status, 200, at.text);
    assert.equal(at.body.type, 'message');
    // The refused requests were never charged nor recorded.
    for (const refused of [openai, anthropic].filter((r) => r.id)) {
      assert.equal((await cluster.psql(
        `SELECT count(*) AS n FROM usage WHERE request_id = '${refused.id}'`))[0].n, '0');
    }
    await waitFor(async () => await balance() === before - 500,
      { timeout: 10000, message: 'only the admitted request charged' });
  });

  test('none lifts the maximum: 4096 reserved again, and the request is refused 402', async () => {
    const set = await json('model', 'set', 'capped', '--max-output-tokens', 'none');
    assert.equal(set.max_output_tokens, null);
    await waitFor(async () => (await chat('capped')).status === 402,
      { timeout: 15000, message: 'the lifted maximum reserves 4096 again' });
    // No maximum: a large max_tokens is no longer refused for its size (402: not enough money).
    assert.equal((await chat('capped', { maxTokens: 5000 })).status, 402);
  });
});
