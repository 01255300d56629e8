// The official openai SDK against Tollgate, routed to an upstream of every
// protocol (OpenAI: passthrough; Anthropic and Gemini: converted): chat
// plain and streamed with tool calls, responses.create plain and streamed
// (converted to Chat for an OpenAI provider), embeddings.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { setup, TOOL_ARGS, UPSTREAMS, WEATHER_TOOL } from './common.mjs';

let env;
let client;

before(async () => {
  env = await setup();
  client = new OpenAI({ apiKey: env.key, baseURL: `${env.gateway}/v1`, maxRetries: 0 });
});

after(async () => { await env?.stop(); });

const tools = [{ type: 'function', function: WEATHER_TOOL }];

for (const upstream of UPSTREAMS) {
  const model = `to-${upstream}`;
  describe(`openai SDK -> ${upstream} upstream`, () => {
    test('chat.completions.create: text, finish reason, usage', async () => {
      const completion = await client.chat.completions.create({
        model, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'echo: hello there' }],
      });
      assert.equal(completion.object, 'chat.completion');
      // Converted answers name the model the client asked for; a passthrough
      // answer is the upstream's own, byte for byte.
      if (upstream !== 'openai') assert.equal(completion.model, model);
      assert.equal(completion.choices[0].message.role, 'assistant');
      assert.equal(completion.choices[0].message.content, ' hello there');
      assert.equal(completion.choices[0].finish_reason, 'stop');
      assert.ok(completion.usage.prompt_tokens > 0);
      assert.equal(completion.usage.completion_tokens, 2);
      assert.equal(completion.usage.total_tokens, completion.usage.prompt_tokens + 2);
    });

    test('chat.completions.create: tool call', async () => {
      const completion = await client.chat.completions.create({
        model, tools, messages: [{ role: 'user', content: 'call_tool please' }],
      });
      const choice = completion.choices[0];
      assert.equal(choice.finish_reason, 'tool_calls');
      assert.equal(choice.message.tool_calls.length, 1);
      const call = choice.message.tool_calls[0];
      assert.equal(call.type, 'function');
      assert.equal(call.function.name, 'get_weather');
      assert.deepEqual(JSON.parse(call.function.arguments), TOOL_ARGS);
      assert.ok(call.id);
    });

    test('chat.completions.create stream: text, usage when asked', async () => {
      const stream = await client.chat.completions.create({
        model, stream: true, stream_options: { include_usage: true },
        messages: [{ role: 'user', content: 'echo: one two three' }],
      });
      let text = '';
      let finish = null;
      let usage = null;
      for await (const chunk of stream) {
        assert.equal(chunk.object, 'chat.completion.chunk');
        text += chunk.choices[0]?.delta?.content ?? '';
        finish = chunk.choices[0]?.finish_reason ?? finish;
        usage = chunk.usage ?? usage;
      }
      assert.equal(text, ' one two three');
      assert.equal(finish, 'stop');
      assert.equal(usage.completion_tokens, 3);
      assert.ok(usage.prompt_tokens > 0);
    });

    test('chat.completions.stream helper: tool call arguments streamed, finalChatCompletion', async () => {
      const runner = client.chat.completions.stream({
        model, tools, messages: [{ role: 'user', content: 'call_tool now' }],
      });
      const deltas = [];
      runner.on('chunk', (chunk) => {
        for (const call of chunk.choices[0]?.delta?.tool_calls ?? []) {
          assert.equal(typeof call.index, 'number', 'every streamed tool call carries its index');
          if (call.function?.arguments) deltas.push(call.function.arguments);
        }
      });
      const final = await runner.finalChatCompletion();
      const choice = final.choices[0];
      assert.equal(choice.finish_reason, 'tool_calls');
      assert.equal(choice.message.tool_calls[0].function.name, 'get_weather');
      assert.deepEqual(JSON.parse(choice.message.tool_calls[0].function.arguments), TOOL_ARGS);
      assert.equal(deltas.join(''), JSON.stringify(TOOL_ARGS));
    });

    test('responses.create: text, status, usage', async () => {
      const response = await client.responses.create({
        model, instructions: 'Be brief.', input: 'echo: hi responses',
      });
      assert.equal(response.object, 'response');
      assert.equal(response.status, 'completed');
      assert.equal(response.output_text, ' hi responses');
      assert.ok(response.usage.input_tokens > 0);
      assert.equal(response.usage.output_tokens, 2);
    });

    test('responses.create: function call', async () => {
      const response = await client.responses.create({
        model, input: [{ role: 'user', content: 'call_tool there' }],
        tools: [{ type: 'function', name: WEATHER_TOOL.name, parameters: WEATHER_TOOL.parameters, strict: false }],
      });
      const call = response.output.find((item) => item.type === 'function_call');
      assert.ok(call, JSON.stringify(response.output));
      assert.equal(call.name, 'get_weather');
      assert.deepEqual(JSON.parse(call.arguments), TOOL_ARGS);
      assert.ok(call.call_id);
    });

    test('responses.create stream: deltas, completed event with usage', async () => {
      const stream = await client.responses.create({ model, input: 'echo: streamed words here', stream: true });
      let text = '';
      let completed = null;
      for await (const event of stream) {
        if (event.type === 'response.output_text.delta') text += event.delta;
        if (event.type === 'response.completed') completed = event.response;
      }
      assert.equal(text, ' streamed words here');
      assert.ok(completed, 'response.completed arrived');
      assert.equal(completed.status, 'completed');
      assert.equal(completed.usage.output_tokens, 3);
    });

    test('responses.stream helper: function call arguments, finalResponse', async () => {
      const stream = client.responses.stream({
        model, input: 'call_tool streamed',
        tools: [{ type: 'function', name: WEATHER_TOOL.name, parameters: WEATHER_TOOL.parameters, strict: false }],
      });
      let argumentDeltas = '';
      stream.on('response.function_call_arguments.delta', (event) => { argumentDeltas += event.delta; });
      const final = await stream.finalResponse();
      const call = final.output.find((item) => item.type === 'function_call');
      assert.equal(call.name, 'get_weather');
      assert.deepEqual(JSON.parse(call.arguments), TOOL_ARGS);
      assert.equal(argumentDeltas, JSON.stringify(TOOL_ARGS));
    });
  });
}

describe('openai SDK embeddings', () => {
  test('embeddings.create through an OpenAI provider', async () => {
    const result = await client.embeddings.create({ model: 'to-openai', input: ['one', 'two'] });
    assert.equal(result.data.length, 2);
    assert.ok(result.data[0].embedding.length > 0);
    assert.ok(result.usage.prompt_tokens > 0);
  });

  test('embeddings to a provider without an embeddings endpoint of ours: a clear 400', async () => {
    await assert.rejects(client.embeddings.create({ model: 'to-anthropic', input: 'x' }),
      (error) => error instanceof OpenAI.BadRequestError && /embeddings/.test(error.message));
  });
});
