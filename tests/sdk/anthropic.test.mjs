// The official @anthropic-ai/sdk against Tollgate, routed to an upstream of
// every protocol (Anthropic: passthrough; OpenAI and Gemini: converted):
// messages.create plain and streamed with tools, the messages.stream helper
// and its finalMessage, countTokens, models.list.
import Anthropic from '@anthropic-ai/sdk';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { setup, TOOL_ARGS, UPSTREAMS, WEATHER_TOOL } from './common.mjs';

let env;
let client;

before(async () => {
  env = await setup();
  client = new Anthropic({ apiKey: env.key, baseURL: env.gateway, maxRetries: 0 });
});

after(async () => { await env?.stop(); });

const tools = [{ name: WEATHER_TOOL.name, description: WEATHER_TOOL.description, input_schema: WEATHER_TOOL.parameters }];

for (const upstream of UPSTREAMS) {
  const model = `to-${upstream}`;
  describe(`anthropic SDK -> ${upstream} upstream`, () => {
    test('messages.create: text, stop_reason, usage', async () => {
      const message = await client.messages.create({
        model, max_tokens: 100, system: 'Be brief.', messages: [{ role: 'user', content: 'echo: hello claude' }],
      });
      assert.equal(message.type, 'message');
      assert.equal(message.role, 'assistant');
      if (upstream !== 'anthropic') assert.equal(message.model, model);
      assert.deepEqual(message.content.map((block) => block.type), ['text']);
      assert.equal(message.content[0].text, ' hello claude');
      assert.equal(message.stop_reason, 'end_turn');
      assert.ok(message.usage.input_tokens > 0);
      assert.equal(message.usage.output_tokens, 2);
    });

    test('messages.create: tool_use block, stop_reason tool_use', async () => {
      const message = await client.messages.create({
        model, max_tokens: 100, tools, messages: [{ role: 'user', content: 'call_tool please' }],
      });
      assert.equal(message.stop_reason, 'tool_use');
      const uses = message.content.filter((block) => block.type === 'tool_use');
      assert.equal(uses.length, 1);
      assert.equal(uses[0].name, 'get_weather');
      assert.deepEqual(uses[0].input, TOOL_ARGS);
      assert.match(uses[0].id, /^[a-zA-Z0-9_-]+$/);
      assert.ok(message.content.every((block) => block.type !== 'text' || block.text.length > 0), 'no empty text blocks');
    });

    test('messages.create stream: events, text, stop_reason, usage', async () => {
      const stream = await client.messages.create({
        model, max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'echo: streamed reply' }],
      });
      const types = [];
      let text = '';
      let stop = null;
      let usage = null;
      for await (const event of stream) {
        types.push(event.type);
        if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') text += event.delta.text;
        if (event.type === 'message_delta') { stop = event.delta.stop_reason; usage = event.usage; }
      }
      assert.equal(types[0], 'message_start');
      assert.equal(types.at(-1), 'message_stop');
      assert.equal(text, ' streamed reply');
      assert.equal(stop, 'end_turn');
      assert.equal(usage.output_tokens, 2);
    });

    test('messages.create stream with tools: input_json deltas rebuild the arguments', async () => {
      const stream = await client.messages.create({
        model, max_tokens: 100, stream: true, tools, messages: [{ role: 'user', content: 'call_tool streamed' }],
      });
      let json = '';
      let start = null;
      let stop = null;
      for await (const event of stream) {
        if (event.type === 'content_block_start' && event.content_block.type === 'tool_use') start = event.content_block;
        if (event.type === 'content_block_delta' && event.delta.type === 'input_json_delta') json += event.delta.partial_json;
        if (event.type === 'message_delta') stop = event.delta.stop_reason;
      }
      assert.equal(start.name, 'get_weather');
      assert.deepEqual(JSON.parse(json), TOOL_ARGS);
      assert.equal(stop, 'tool_use');
    });

    test('messages.stream helper: text events and finalMessage', async () => {
      const stream = client.messages.stream({
        model, max_tokens: 100, messages: [{ role: 'user', content: 'echo: helper text' }],
      });
      let text = '';
      stream.on('text', (delta) => { text += delta; });
      const final = await stream.finalMessage();
      assert.equal(text, ' helper text');
      assert.equal(final.content[0].text, ' helper text');
      assert.equal(final.stop_reason, 'end_turn');
      assert.ok(final.usage.input_tokens > 0);
      assert.equal(final.usage.output_tokens, 2);
    });

    test('messages.stream helper with tools: finalMessage has the parsed input', async () => {
      const stream = client.messages.stream({
        model, max_tokens: 100, tools, messages: [{ role: 'user', content: 'call_tool helper' }],
      });
      const final = await stream.finalMessage();
      const use = final.content.find((block) => block.type === 'tool_use');
      assert.equal(use.name, 'get_weather');
      assert.deepEqual(use.input, TOOL_ARGS);
      assert.equal(final.stop_reason, 'tool_use');
      assert.ok(final.content.every((block) => block.type !== 'text' || block.text.length > 0), 'no empty text blocks');
    });

    test('messages.countTokens', async () => {
      const count = await client.messages.countTokens({
        model, messages: [{ role: 'user', content: 'count these tokens please' }],
      });
      assert.ok(Number.isInteger(count.input_tokens) && count.input_tokens > 0, JSON.stringify(count));
    });
  });
}

describe('anthropic SDK: lists and errors', () => {
  test('models.list in Anthropic shape', async () => {
    const page = await client.models.list();
    const ids = page.data.map((m) => m.id);
    assert.ok(ids.includes('to-anthropic'));
    assert.equal(page.data[0].type, 'model');
  });

  test('an unknown model: NotFoundError in Anthropic shape', async () => {
    await assert.rejects(client.messages.create({ model: 'nope', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }),
      (error) => error instanceof Anthropic.NotFoundError && error.error?.type === 'error'
        && error.error?.error?.type === 'not_found_error');
  });

  test('a wrong key: AuthenticationError', async () => {
    const wrong = new Anthropic({ apiKey: 'tg-wrong', baseURL: env.gateway, maxRetries: 0 });
    await assert.rejects(wrong.messages.create({ model: 'to-anthropic', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }),
      (error) => error instanceof Anthropic.AuthenticationError && error.error?.error?.type === 'authentication_error');
  });
});
