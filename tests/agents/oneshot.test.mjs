// Every agent (Claude Code, Codex CLI, Gemini CLI) answers once through Tollgate on a
// provider of every upstream protocol (OpenAI Chat, OpenAI Responses, Anthropic, Gemini):
// the agent exits 0 and prints the mock's answer, every request it sent was answered 200,
// and each upstream request carries everything the agent sent except the fields the
// gateway named in x-tollgate-dropped-fields.
import assert from 'node:assert/strict';
import { after, before, describe as suite, test } from 'node:test';

import { waitFor } from '../lib/harness.mjs';
import { AGENT_PROTOCOL, AGENTS, UPSTREAMS, cli, describe, generations, lostFields, runOnce, setup,
  upstreamGenerations } from './agents.mjs';

const ANSWER = 'Hello from mock upstream model';
// The path each upstream protocol is called on.
const UPSTREAM_PATH = { openai: /^\/v1\/chat\/completions$/, responses: /^\/v1\/responses$/,
  anthropic: /^\/v1\/messages$/, gemini: /^\/v1beta\/models\/[^/]+:streamGenerateContent$/ };

let env;
const table = {};
before(async () => { env = await setup(); });
after(async () => {
  // The pass table for the report: agent x upstream protocol.
  const rows = AGENTS.map((agent) => `| ${agent} | ${UPSTREAMS.map((up) => table[`${agent}>${up}`] ?? '-').join(' | ')} |`);
  console.log(['| agent | ' + UPSTREAMS.join(' | ') + ' |', '|---|---|---|---|---|', ...rows].join('\n'));
  await env?.stop();
});

suite('one answer from every agent on every upstream protocol', () => {
  for (const agent of AGENTS) {
    for (const upstream of UPSTREAMS) {
      test(`${agent} -> ${upstream}`, async () => {
        table[`${agent}>${upstream}`] = 'fail';
        const run = await runOnce(env, agent, { model: `to-${upstream}`, prompt: () => 'Say hello.' });
        const why = describe(run);
        assert.equal(run.code, 0, why);
        assert.ok(run.stdout.includes(ANSWER), why);
        const sent = generations(run.exchanges);
        const received = upstreamGenerations(run.upstream);
        assert.ok(sent.length >= 1, why);
        assert.ok(sent.every((x) => x.status === 200), why);
        assert.equal(received.length, sent.length, why);
        sent.forEach((exchange, index) => {
          const request = received[index];
          assert.match(request.path, UPSTREAM_PATH[upstream], why);
          const problems = lostFields(AGENT_PROTOCOL[agent], exchange.body, upstream, request.body,
            exchange.headers['x-tollgate-dropped-fields']);
          assert.deepEqual(problems, [], `${agent} -> ${upstream}, request ${index}:\n${why}`);
        });
        table[`${agent}>${upstream}`] = `ok (${run.ms} ms)`;
      });
    }
  }
});

suite('a strict provider or model refuses what it would drop', () => {
  // Claude Code always sends context_management, which no other protocol has.
  const ask = (model) => fetch(`${env.recorder.url}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': env.key, 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model, max_tokens: 50, messages: [{ role: 'user', content: 'hi' }],
      context_management: { edits: [] }, top_k: 3 }),
  });
  const strictly = async (model, names) => {
    const response = await waitFor(async () => {
      const answer = await ask(model);
      return answer.status === 400 ? answer : null;
    }, { timeout: 10000, message: `${model} turning strict` });
    const body = await response.json();
    assert.equal(body.type, 'error');
    assert.match(body.error.message, names);
  };

  test('a strict model', async () => {
    const before = await ask('to-gemini');
    assert.equal(before.status, 200);
    // Not strict: dropped and named, in the client's (Anthropic's) words.
    assert.equal(before.headers.get('x-tollgate-dropped-fields'), 'context_management');
    await before.text();
    await cli(env.cluster, 'model', 'add', 'strict-to-gemini', '--route', 'up-gemini:gemini-2.5-flash');
    await cli(env.cluster, 'model', 'set', 'strict-to-gemini', '--strict-conversion', 'on');
    await strictly('strict-to-gemini', /field\(s\) context_management cannot be expressed .*strict/);
    // The agent shows the refusal in its own words.
    const run = await runOnce(env, 'claude', { model: 'strict-to-gemini', prompt: () => 'Say hello.' });
    assert.notEqual(run.code, 0, describe(run));
    assert.match(run.stdout + run.stderr, /strict/, describe(run));
  });

  test('a strict provider, and back', async () => {
    await cli(env.cluster, 'provider', 'set', 'up-responses', '--strict-conversion', 'on');
    await strictly('to-responses', /field\(s\) context_management, top_k cannot .*strict/);
    await cli(env.cluster, 'provider', 'set', 'up-responses', '--strict-conversion', 'off');
    await waitFor(async () => (await ask('to-responses')).status === 200, { timeout: 10000, message: 'strictness lifted' });
  });
});
