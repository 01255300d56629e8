// Audio input through the real programs: an OpenAI Chat `input_audio` part
// or a Gemini inlineData part with an audio MIME type reaches only an
// upstream of the client's own protocol (passed through). A provider whose
// protocol takes no audio is skipped (the next candidate may take it); when
// none can, the client gets a 400 in its own error format naming the field,
// and nothing is charged.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { setup, usageRow } from './common.mjs';

const WAV = Buffer.from('RIFF\x24\x00\x00\x00WAVEfmt ', 'latin1').toString('base64');

let env;
let client;

async function cli(...args) {
  const result = await env.cluster.tollgate(args, { env: { TOLLGATE_DIR: env.cluster.dir } });
  if (result.code !== 0) throw new Error(`tollgate ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

async function balance() {
  const rows = await env.cluster.psql("SELECT balance_micros FROM accounts WHERE name = 'sdk'");
  return Number(rows[0].balance_micros);
}

function chatWithAudio(model) {
  return client.chat.completions.create({
    model,
    messages: [
      { role: 'system', content: 'Transcribe.' },
      { role: 'user', content: [
        { type: 'text', text: 'echo: what is said' },
        { type: 'input_audio', input_audio: { data: WAV, format: 'wav' } },
      ] },
    ],
  });
}

async function geminiWithAudio(model, mimeType = 'audio/wav') {
  const response = await fetch(`${env.gateway}/v1beta/models/${model}:generateContent`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-goog-api-key': env.key },
    body: JSON.stringify({ contents: [{ role: 'user', parts: [
      { text: 'echo: what is said' }, { inlineData: { mimeType, data: WAV } },
    ] }] }),
  });
  return { status: response.status, body: await response.json(), id: response.headers.get('x-request-id') };
}

before(async () => {
  env = await setup();
  client = new OpenAI({ apiKey: env.key, baseURL: `${env.gateway}/v1`, maxRetries: 0 });
  // 'mixed': an Anthropic provider first (priority 10), the OpenAI one after it.
  await cli('provider', 'add', 'first-anthropic', '--protocol', 'anthropic', '--base-url', env.mock.url,
    '--priority', '10');
  await cli('provider', 'key', 'add', 'first-anthropic', '--secret', 'sk-first-secret');
  await cli('model', 'add', 'mixed', '--route', 'first-anthropic:claude-3-5-haiku-latest',
    '--route', 'up-openai:gpt-4o-mini', '--price-in', '1', '--price-out', '2');
});

after(async () => { await env?.stop(); });

describe('audio input', () => {
  test('OpenAI Chat input_audio to an OpenAI provider: passed through', async () => {
    const { data: completion, response } = await chatWithAudio('to-openai').withResponse();
    assert.equal(completion.object, 'chat.completion');
    const stats = await env.mockStats();
    assert.equal(stats.last.path, '/v1/chat/completions');
    assert.equal(stats.last.body_json.messages[1].content[1].input_audio.data, WAV);
    // Its charge lands with its usage row (one ledger statement): the next
    // tests read the balance before and after, so it must be in first.
    const row = await usageRow(env.cluster, response.headers.get('x-request-id'));
    assert.ok(Number(row.cost_micros) > 0);
  });

  for (const upstream of ['anthropic', 'gemini']) {
    test(`OpenAI Chat input_audio to an ${upstream} provider: 400 naming the field, nothing charged`, async () => {
      const before = await balance();
      const requests = (await env.mockStats()).requests_total;
      const error = await chatWithAudio(`to-${upstream}`).then(() => null, (caught) => caught);
      assert.ok(error instanceof OpenAI.BadRequestError, String(error));
      assert.match(error.message, /Invalid 'messages\[1\]\.content\[1\]\.input_audio'/);
      assert.match(error.message, /audio input cannot be sent/);
      assert.equal(error.code, 'audio_not_supported');
      assert.equal(error.error.type, 'invalid_request_error');
      assert.equal((await env.mockStats()).requests_total, requests, 'no upstream call');
      const id = typeof error.headers?.get === 'function' ? error.headers.get('x-request-id') : error.headers['x-request-id'];
      assert.ok(id);
      const row = await usageRow(env.cluster, id);
      assert.equal(Number(row.status), 400);
      assert.equal(Number(row.cost_micros), 0);
      assert.equal(await balance(), before);
    });
  }

  test('a provider that takes no audio is skipped for the next one that does', async () => {
    // Without audio, 'mixed' goes to its first provider (Anthropic) ...
    const plain = await client.chat.completions.create({
      model: 'mixed', messages: [{ role: 'user', content: 'echo: plain' }],
    }).withResponse();
    const first = await usageRow(env.cluster, plain.response.headers.get('x-request-id'));
    // ... with audio, to the OpenAI one.
    const audio = await client.chat.completions.create({
      model: 'mixed',
      messages: [{ role: 'user', content: [
        { type: 'text', text: 'echo: hi' }, { type: 'input_audio', input_audio: { data: WAV, format: 'wav' } },
      ] }],
    }).withResponse();
    assert.equal(audio.data.object, 'chat.completion');
    const second = await usageRow(env.cluster, audio.response.headers.get('x-request-id'));
    const providers = Object.fromEntries((await env.cluster.psql('SELECT id, name FROM providers'))
      .map((row) => [row.id, row.name]));
    assert.equal(providers[first.provider_id], 'first-anthropic');
    assert.equal(providers[second.provider_id], 'up-openai');
    assert.equal(Number(second.status), 200);
  });

  test('Gemini inlineData audio to a Gemini provider: passed through', async () => {
    const answer = await geminiWithAudio('to-gemini');
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.ok(answer.body.candidates);
  });

  for (const upstream of ['anthropic', 'openai']) {
    test(`Gemini inlineData audio to an ${upstream} provider: 400 in Gemini's format naming the field`, async () => {
      const answer = await geminiWithAudio(`to-${upstream}`, 'audio/mp3');
      assert.equal(answer.status, 400);
      assert.equal(answer.body.error.code, 400);
      assert.equal(answer.body.error.status, 'INVALID_ARGUMENT');
      assert.match(answer.body.error.message, /Invalid 'contents\[0\]\.parts\[1\]\.inlineData'/);
    });
  }

  test('an image part is not audio: Gemini inlineData image/png still converts', async () => {
    const answer = await geminiWithAudio('to-openai', 'image/png');
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
  });
});
