// The official @google/genai SDK against Tollgate, routed to an upstream of
// every protocol (Gemini: passthrough; OpenAI and Anthropic: converted):
// generateContent, generateContentStream, function calling, countTokens,
// models.list; and the JSON-array stream a client without alt=sse reads.
import { GoogleGenAI } from '@google/genai';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { setup, TOOL_ARGS, UPSTREAMS, WEATHER_TOOL } from './common.mjs';

let env;
let ai;

before(async () => {
  env = await setup();
  ai = new GoogleGenAI({ apiKey: env.key, httpOptions: { baseUrl: env.gateway } });
});

after(async () => { await env?.stop(); });

const tools = [{ functionDeclarations: [{ name: WEATHER_TOOL.name, description: WEATHER_TOOL.description, parametersJsonSchema: WEATHER_TOOL.parameters }] }];

for (const upstream of UPSTREAMS) {
  const model = `to-${upstream}`;
  describe(`genai SDK -> ${upstream} upstream`, () => {
    test('generateContent: text, finishReason, usage', async () => {
      const response = await ai.models.generateContent({
        model, contents: 'echo: hello gemini', config: { systemInstruction: 'Be brief.' },
      });
      assert.equal(response.text, ' hello gemini');
      assert.equal(response.candidates[0].finishReason, 'STOP');
      assert.ok(response.usageMetadata.promptTokenCount > 0);
      assert.equal(response.usageMetadata.candidatesTokenCount, 2);
    });

    test('generateContent: function calling', async () => {
      const response = await ai.models.generateContent({
        model, contents: 'call_tool please', config: { tools },
      });
      const calls = response.functionCalls;
      assert.equal(calls.length, 1);
      assert.equal(calls[0].name, 'get_weather');
      assert.deepEqual(calls[0].args, TOOL_ARGS);
      assert.equal(response.candidates[0].finishReason, 'STOP');
    });

    test('generateContentStream: chunks, text, finishReason, usage', async () => {
      const stream = await ai.models.generateContentStream({ model, contents: 'echo: streamed gemini words' });
      let text = '';
      let chunks = 0;
      let finish = null;
      let usage = null;
      for await (const chunk of stream) {
        chunks++;
        text += chunk.text ?? '';
        finish = chunk.candidates?.[0]?.finishReason ?? finish;
        usage = chunk.usageMetadata ?? usage;
      }
      assert.ok(chunks >= 2, `${chunks} chunks`);
      assert.equal(text, ' streamed gemini words');
      assert.equal(finish, 'STOP');
      assert.equal(usage.candidatesTokenCount, 3);
      assert.ok(usage.promptTokenCount > 0);
    });

    test('generateContentStream: function call with its arguments', async () => {
      const stream = await ai.models.generateContentStream({ model, contents: 'call_tool streamed', config: { tools } });
      const calls = [];
      for await (const chunk of stream) calls.push(...(chunk.functionCalls ?? []));
      assert.equal(calls.length, 1);
      assert.equal(calls[0].name, 'get_weather');
      assert.deepEqual(calls[0].args, TOOL_ARGS);
    });

    test('countTokens', async () => {
      const count = await ai.models.countTokens({ model, contents: 'count these tokens please' });
      assert.ok(Number.isInteger(count.totalTokens) && count.totalTokens > 0, JSON.stringify(count));
    });

    test('streamGenerateContent without alt=sse: one JSON array, elements as they come', async () => {
      const response = await fetch(`${env.gateway}/v1beta/models/${model}:streamGenerateContent`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-goog-api-key': env.key },
        body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'echo: array of chunks' }] }] }),
      });
      assert.equal(response.status, 200);
      assert.match(response.headers.get('content-type'), /application\/json/);
      const chunks = JSON.parse(await response.text());
      assert.ok(Array.isArray(chunks) && chunks.length >= 2, JSON.stringify(chunks));
      const text = chunks.flatMap((c) => c.candidates?.[0]?.content?.parts ?? []).map((p) => p.text ?? '').join('');
      assert.equal(text, ' array of chunks');
      assert.equal(chunks.at(-1).candidates[0].finishReason, 'STOP');
    });
  });
}

describe('genai SDK: lists, keys and errors', () => {
  test('models.list in Gemini shape', async () => {
    const names = [];
    for await (const model of await ai.models.list()) names.push(model.name);
    assert.ok(names.includes('models/to-gemini'), names.join(','));
  });

  test('the key as ?key=', async () => {
    const response = await fetch(`${env.gateway}/v1beta/models/to-openai:generateContent?key=${env.key}`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ parts: [{ text: 'echo: by query' }] }] }),
    });
    assert.equal(response.status, 200);
    assert.equal((await response.json()).candidates[0].content.parts[0].text, ' by query');
  });

  test('an unknown model: 404 in Gemini error shape', async () => {
    await assert.rejects(ai.models.generateContent({ model: 'nope', contents: 'x' }),
      (error) => error.status === 404 && /NOT_FOUND/.test(error.message));
  });
});
