// The conversion bugs peer gateways are known for, each checked through the
// real processes for every client protocol (OpenAI Chat, Responses,
// Anthropic, Gemini) against an upstream of every provider protocol
// (OpenAI, Anthropic, Gemini), on the raw wire so nothing an SDK forgives
// goes unseen:
//   wrong stop_reason, empty text blocks, tool-call arguments dropped while
//   streaming, missing tool `index` in OpenAI streamed tool calls, cached
//   tokens reported as 0, error bodies not in the client's shape, and a slow
//   first byte because the converter waits for more than one event.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { CACHED_TOKENS, setup, TOOL_ARGS, UPSTREAMS, usageRow, WEATHER_TOOL } from './common.mjs';

let env;

before(async () => { env = await setup(); });
after(async () => { await env?.stop(); });

// ---------------------------------------------------------------------------
// One request and its reading, per client protocol.

const CLIENTS = {
  chat: {
    request(model, text, { stream, tools }) {
      return {
        path: '/v1/chat/completions',
        headers: { authorization: `Bearer ${env.key}` },
        body: {
          model, messages: [{ role: 'user', content: text }],
          ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
          ...(tools ? { tools: [{ type: 'function', function: WEATHER_TOOL }] } : {}),
        },
      };
    },
    stop: { text: 'stop', tool: 'tool_calls' },
    readWhole(json) {
      const choice = json.choices[0];
      const call = choice.message.tool_calls?.[0]?.function;
      return {
        text: choice.message.content ?? '', stop: choice.finish_reason,
        tool: call && { name: call.name, args: JSON.parse(call.arguments) },
        usage: { in: json.usage.prompt_tokens, cached: json.usage.prompt_tokens_details?.cached_tokens ?? 0, out: json.usage.completion_tokens },
        emptyText: false,
      };
    },
    readStream(events) {
      let text = '';
      let stop = null;
      let usage = null;
      const calls = new Map();
      for (const { data } of events) {
        if (data === '[DONE]') continue;
        const chunk = JSON.parse(data);
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices[0];
        if (!choice) continue;
        text += choice.delta.content ?? '';
        stop = choice.finish_reason ?? stop;
        for (const call of choice.delta.tool_calls ?? []) {
          // Bug: a missing index leaves SDKs unable to tell calls apart.
          assert.equal(typeof call.index, 'number', `tool call delta without index: ${data}`);
          const entry = calls.get(call.index) ?? { name: '', args: '' };
          entry.name += call.function?.name ?? '';
          entry.args += call.function?.arguments ?? '';
          calls.set(call.index, entry);
        }
      }
      assert.equal(events.at(-1).data, '[DONE]');
      const call = calls.get(0);
      return {
        text, stop, tool: call && { name: call.name, args: JSON.parse(call.args) },
        usage: { in: usage.prompt_tokens, cached: usage.prompt_tokens_details?.cached_tokens ?? 0, out: usage.completion_tokens },
        emptyText: false,
      };
    },
  },
  responses: {
    request(model, text, { stream, tools }) {
      return {
        path: '/v1/responses',
        headers: { authorization: `Bearer ${env.key}` },
        body: {
          model, input: text, ...(stream ? { stream: true } : {}),
          ...(tools ? { tools: [{ type: 'function', name: WEATHER_TOOL.name, parameters: WEATHER_TOOL.parameters }] } : {}),
        },
      };
    },
    stop: { text: 'completed', tool: 'completed' },
    readWhole(json) {
      const message = json.output.find((item) => item.type === 'message');
      const call = json.output.find((item) => item.type === 'function_call');
      const parts = message?.content ?? [];
      return {
        text: parts.map((part) => part.text ?? '').join(''), stop: json.status,
        tool: call && { name: call.name, args: JSON.parse(call.arguments) },
        usage: { in: json.usage.input_tokens, cached: json.usage.input_tokens_details?.cached_tokens ?? 0, out: json.usage.output_tokens },
        emptyText: parts.some((part) => part.type === 'output_text' && part.text === ''),
      };
    },
    readStream(events) {
      let text = '';
      let args = '';
      let name = null;
      let completed = null;
      let emptyText = false;
      for (const { data } of events) {
        const event = JSON.parse(data);
        if (event.type === 'response.output_text.delta') { text += event.delta; emptyText ||= event.delta === ''; }
        if (event.type === 'response.function_call_arguments.delta') args += event.delta;
        if (event.type === 'response.output_item.added' && event.item.type === 'function_call') name = event.item.name;
        if (event.type === 'response.completed') completed = event.response;
      }
      assert.ok(completed, 'response.completed arrived');
      const whole = this.readWhole(completed);
      return { ...whole, text, tool: name && { name, args: JSON.parse(args) }, emptyText: emptyText || whole.emptyText };
    },
  },
  anthropic: {
    request(model, text, { stream, tools }) {
      return {
        path: '/v1/messages',
        headers: { 'x-api-key': env.key, 'anthropic-version': '2023-06-01' },
        body: {
          model, max_tokens: 200, messages: [{ role: 'user', content: text }], ...(stream ? { stream: true } : {}),
          ...(tools ? { tools: [{ name: WEATHER_TOOL.name, input_schema: WEATHER_TOOL.parameters }] } : {}),
        },
      };
    },
    stop: { text: 'end_turn', tool: 'tool_use' },
    readWhole(json) {
      const use = json.content.find((block) => block.type === 'tool_use');
      return {
        text: json.content.filter((b) => b.type === 'text').map((b) => b.text).join(''), stop: json.stop_reason,
        tool: use && { name: use.name, args: use.input },
        usage: { in: json.usage.input_tokens + (json.usage.cache_read_input_tokens ?? 0), cached: json.usage.cache_read_input_tokens ?? 0, out: json.usage.output_tokens },
        emptyText: json.content.some((block) => block.type === 'text' && block.text === ''),
      };
    },
    readStream(events) {
      let text = '';
      let stop = null;
      let usage = {};
      let tool = null;
      let args = '';
      const blockText = new Map();
      for (const { name, data } of events) {
        const event = JSON.parse(data);
        assert.equal(event.type, name, 'event name and type agree');
        if (event.type === 'message_start') usage = { ...event.message.usage };
        if (event.type === 'content_block_start') {
          if (event.content_block.type === 'tool_use') tool = { name: event.content_block.name };
          if (event.content_block.type === 'text') blockText.set(event.index, event.content_block.text);
        }
        if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') {
          text += event.delta.text;
          blockText.set(event.index, (blockText.get(event.index) ?? '') + event.delta.text);
        }
        if (event.type === 'content_block_delta' && event.delta.type === 'input_json_delta') args += event.delta.partial_json;
        if (event.type === 'message_delta') { stop = event.delta.stop_reason; usage = { ...usage, ...event.usage }; }
      }
      assert.equal(events.at(-1).name, 'message_stop');
      if (tool) tool.args = JSON.parse(args);
      return {
        text, stop, tool,
        usage: { in: usage.input_tokens + (usage.cache_read_input_tokens ?? 0), cached: usage.cache_read_input_tokens ?? 0, out: usage.output_tokens },
        emptyText: [...blockText.values()].some((value) => value === ''),
      };
    },
  },
  gemini: {
    request(model, text, { stream, tools }) {
      return {
        path: `/v1beta/models/${model}:${stream ? 'streamGenerateContent?alt=sse' : 'generateContent'}`,
        headers: { 'x-goog-api-key': env.key },
        body: {
          contents: [{ role: 'user', parts: [{ text }] }],
          ...(tools ? { tools: [{ functionDeclarations: [{ name: WEATHER_TOOL.name, parametersJsonSchema: WEATHER_TOOL.parameters }] }] } : {}),
        },
      };
    },
    stop: { text: 'STOP', tool: 'STOP' },
    readChunks(chunks) {
      let text = '';
      let stop = null;
      let usage = null;
      let tool = null;
      let emptyText = false;
      chunks.forEach((chunk, i) => {
        const candidate = chunk.candidates?.[0];
        for (const part of candidate?.content?.parts ?? []) {
          if ('text' in part) {
            text += part.text;
            // Gemini's own last chunk carries an empty part with its
            // finishReason (docs/conversion.md); anywhere else it is a bug.
            emptyText ||= part.text === '' && !(i === chunks.length - 1 && candidate.finishReason);
          }
          if (part.functionCall) tool = { name: part.functionCall.name, args: part.functionCall.args };
        }
        stop = candidate?.finishReason ?? stop;
        usage = chunk.usageMetadata ?? usage;
      });
      return {
        text, stop, tool, emptyText,
        usage: { in: usage.promptTokenCount, cached: usage.cachedContentTokenCount ?? 0, out: usage.candidatesTokenCount },
      };
    },
    readWhole(json) { return this.readChunks([json]); },
    readStream(events) { return this.readChunks(events.map(({ data }) => JSON.parse(data))); },
  },
};

// Splits an SSE body into {name, data} events.
function sseEvents(text) {
  return text.split(/\r?\n\r?\n/).filter((block) => block.trim()).map((block) => {
    let name = '';
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith('event:')) name = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    return { name, data: data.join('\n') };
  }).filter((event) => event.data);
}

// Sends a request and reads the answer; for streams, notes when each piece
// of the body arrived. Resolves { status, json, text, events, arrivals, id }.
async function call(client, model, text, options = {}) {
  const { path, headers, body } = CLIENTS[client].request(model, text, options);
  const started = Date.now();
  const response = await fetch(`${env.gateway}${path}`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body),
  });
  const arrivals = [];
  let raw = '';
  const decoder = new TextDecoder();
  for await (const piece of response.body) {
    const part = decoder.decode(piece, { stream: true });
    arrivals.push({ at: Date.now() - started, text: part });
    raw += part;
  }
  let json = null;
  try { json = JSON.parse(raw); } catch { /* a stream */ }
  return {
    status: response.status, json, raw, arrivals, id: response.headers.get('x-request-id'),
    events: options.stream && response.status === 200 ? sseEvents(raw) : null,
    read() { return options.stream ? CLIENTS[client].readStream(this.events) : CLIENTS[client].readWhole(json); },
  };
}

const PAIRS = Object.keys(CLIENTS).flatMap((client) => UPSTREAMS.map((upstream) => ({ client, upstream })));

// ---------------------------------------------------------------------------

describe('stop reasons, empty text blocks, streamed tool arguments and their index', () => {
  for (const { client, upstream } of PAIRS) {
    for (const stream of [false, true]) {
      const how = stream ? 'streamed' : 'whole';
      test(`${client} <- ${upstream}, ${how}: text answer`, async () => {
        const answer = await call(client, `to-${upstream}`, 'echo: alpha beta gamma', { stream });
        assert.equal(answer.status, 200, answer.raw);
        const read = answer.read();
        assert.equal(read.text, ' alpha beta gamma');
        assert.equal(read.stop, CLIENTS[client].stop.text);
        assert.equal(read.emptyText, false, 'no empty text block or part');
        assert.equal(read.usage.out, 3);
        assert.ok(read.usage.in > 0);
      });
      test(`${client} <- ${upstream}, ${how}: tool call`, async () => {
        const answer = await call(client, `to-${upstream}`, 'call_tool for the weather', { stream, tools: true });
        assert.equal(answer.status, 200, answer.raw);
        const read = answer.read();
        assert.deepEqual(read.tool, { name: 'get_weather', args: TOOL_ARGS });
        assert.equal(read.stop, CLIENTS[client].stop.tool);
        assert.equal(read.emptyText, false, 'no empty text block next to the tool call');
      });
    }
  }
});

describe('cached tokens reach the client and the ledger', () => {
  for (const { client, upstream } of PAIRS) {
    for (const stream of [false, true]) {
      test(`${client} <- ${upstream}, ${stream ? 'streamed' : 'whole'}`, async () => {
        const answer = await call(client, `cached-to-${upstream}`, 'echo: some cached prompt here', { stream });
        assert.equal(answer.status, 200, answer.raw);
        const read = answer.read();
        assert.equal(read.usage.cached, CACHED_TOKENS);
        assert.ok(read.usage.in >= CACHED_TOKENS);
        const row = await usageRow(env.cluster, answer.id);
        assert.equal(Number(row.tokens_cache_read), CACHED_TOKENS);
        assert.equal(Number(row.tokens_in) + CACHED_TOKENS, read.usage.in, 'billed input excludes the cached part');
        assert.equal(row.estimated, 'f');
      });
    }
  }
});

describe('upstream error bodies in the client\'s shape, with the upstream\'s message', () => {
  const shape = {
    chat: (json) => typeof json.error?.message === 'string' && 'type' in json.error,
    responses: (json) => typeof json.error?.message === 'string' && 'type' in json.error,
    anthropic: (json) => json.type === 'error' && json.error?.type === 'invalid_request_error',
    gemini: (json) => json.error?.code === 400 && json.error?.status === 'INVALID_ARGUMENT',
  };
  for (const { client, upstream } of PAIRS) {
    for (const stream of [false, true]) {
      test(`${client} <- ${upstream} 400, ${stream ? 'streamed' : 'whole'}`, async () => {
        const answer = await call(client, `fail-to-${upstream}`, 'hello', { stream });
        assert.equal(answer.status, 400, answer.raw);
        assert.ok(shape[client](answer.json), answer.raw);
        assert.match(JSON.stringify(answer.json), /injected fault/);
      });
    }
  }

  test('a converted request the upstream cannot express: 400 in the client\'s shape', async () => {
    // Audio changes what the client gets back: refused, never dropped.
    const response = await fetch(`${env.gateway}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${env.key}` },
      body: JSON.stringify({ model: 'to-anthropic', messages: [{ role: 'user', content: 'x' }], modalities: ['text', 'audio'], audio: { voice: 'alloy', format: 'wav' } }),
    });
    assert.equal(response.status, 400);
    const json = await response.json();
    assert.match(json.error.message, /audio|modalities/);
    const gemini = await fetch(`${env.gateway}/v1beta/models/to-openai:generateContent`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-goog-api-key': env.key },
      body: JSON.stringify({ contents: [{ parts: [{ text: 'x' }] }], generationConfig: { responseModalities: ['AUDIO'] } }),
    });
    assert.equal(gemini.status, 400);
    assert.equal((await gemini.json()).error.status, 'INVALID_ARGUMENT');
  });

  test('what only tunes is dropped and named in x-tollgate-dropped-fields', async () => {
    // A search tool the model may use (not forced) and a sampling knob: the answer comes,
    // and the header names what did not reach the upstream, in the client's words.
    const gemini = await fetch(`${env.gateway}/v1beta/models/to-openai:generateContent`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-goog-api-key': env.key },
      body: JSON.stringify({ contents: [{ parts: [{ text: 'x' }] }], tools: [{ googleSearch: {} }], generationConfig: { topK: 5 } }),
    });
    assert.equal(gemini.status, 200);
    assert.equal(gemini.headers.get('x-tollgate-dropped-fields'), 'tools[].googleSearch,generationConfig.topK');
    // Streamed too: the header comes with the first bytes.
    const chat = await fetch(`${env.gateway}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${env.key}` },
      body: JSON.stringify({ model: 'to-anthropic', stream: true, messages: [{ role: 'user', content: 'x' }], seed: 3, store: true }),
    });
    assert.equal(chat.status, 200);
    assert.equal(chat.headers.get('x-tollgate-dropped-fields'), 'store,seed');
    assert.match(await chat.text(), /\[DONE\]/);
    // Nothing dropped, no header; a JSON answer is asked of Anthropic with a schema.
    const json = await fetch(`${env.gateway}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${env.key}` },
      body: JSON.stringify({ model: 'to-anthropic', messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_object' } }),
    });
    assert.equal(json.status, 200);
    assert.equal(json.headers.get('x-tollgate-dropped-fields'), null);
  });

  test('a stream cut by the upstream ends with the client\'s error event, not a clean end', async () => {
    const ends = { chat: /data: \[DONE\]/, responses: /response\.completed/, anthropic: /message_stop/, gemini: /"finishReason"/ };
    await Promise.all(PAIRS.map(async ({ client, upstream }) => {
      const answer = await call(client, `cut-to-${upstream}`, 'echo: a b c d e f g h', { stream: true });
      if (answer.status !== 200) {
        // Cut before the first client byte (a Gemini client waits for
        // content): no stream had begun, so the failure is a plain error.
        assert.equal(answer.status, 502, `${client} <- ${upstream}: ${answer.raw}`);
        assert.ok(JSON.parse(answer.raw).error, answer.raw);
        return;
      }
      assert.doesNotMatch(answer.raw, ends[client], `${client} <- ${upstream}: ${answer.raw}`);
      assert.match(answer.raw, /error/, `${client} <- ${upstream}: ${answer.raw}`);
    }));
  });
});

describe('first byte: each upstream event is relayed at once', () => {
  // slow-model: 500 ms between upstream events. The client's text must
  // arrive spread over the stream, the first piece long before the end.
  test('every pair, streamed', async () => {
    const results = await Promise.all(PAIRS.map(async ({ client, upstream }) => {
      const answer = await call(client, `slow-to-${upstream}`, 'echo: one two three four five', { stream: true });
      return { client, upstream, answer };
    }));
    for (const { client, upstream, answer } of results) {
      const label = `${client} <- ${upstream}`;
      assert.equal(answer.status, 200, label);
      assert.equal(answer.read().text, ' one two three four five', label);
      const end = answer.arrivals.at(-1).at;
      const firstText = answer.arrivals.find((piece) => /one/.test(piece.text)).at;
      assert.ok(end >= 2000, `${label}: the upstream took ${end} ms`);
      assert.ok(firstText + 1500 <= end, `${label}: first text at ${firstText} ms, end at ${end} ms`);
      // The first client bytes come before the upstream's second event
      // (500 ms in). A Gemini client is the documented exception: it gets
      // no chunk before the first content (an empty one would make its
      // SDK's chunk.text undefined).
      if (client !== 'gemini') assert.ok(answer.arrivals[0].at < 500, `${label}: first byte at ${answer.arrivals[0].at} ms`);
    }
  });
});

describe('token counts', () => {
  test('Anthropic count_tokens: passthrough to Anthropic, estimated elsewhere, never billed', async () => {
    const counts = {};
    for (const upstream of UPSTREAMS) {
      const response = await fetch(`${env.gateway}/v1/messages/count_tokens`, {
        method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': env.key, 'anthropic-version': '2023-06-01' },
        body: JSON.stringify({ model: `to-${upstream}`, messages: [{ role: 'user', content: 'count me' }] }),
      });
      assert.equal(response.status, 200);
      counts[upstream] = (await response.json()).input_tokens;
      assert.ok(counts[upstream] > 0);
      const row = await usageRow(env.cluster, response.headers.get('x-request-id'));
      assert.equal(Number(row.tokens_in) + Number(row.tokens_out), 0, 'counting is free');
    }
    const stats = await env.mockStats();
    assert.ok(stats.paths['/v1/messages/count_tokens'] >= 1, JSON.stringify(stats.paths));
  });

  test('Gemini countTokens: passthrough to Gemini, estimated elsewhere', async () => {
    for (const upstream of UPSTREAMS) {
      const response = await fetch(`${env.gateway}/v1beta/models/to-${upstream}:countTokens`, {
        method: 'POST', headers: { 'content-type': 'application/json', 'x-goog-api-key': env.key },
        body: JSON.stringify({ contents: [{ parts: [{ text: 'count me' }] }] }),
      });
      assert.equal(response.status, 200);
      assert.ok((await response.json()).totalTokens > 0);
    }
    const stats = await env.mockStats();
    assert.ok(Object.keys(stats.paths).some((path) => path.endsWith(':countTokens')), JSON.stringify(stats.paths));
  });
});
