// Every agent (Claude Code, Codex CLI, Gemini CLI) answers once through Tollgate on a
// provider of every upstream protocol (OpenAI Chat, OpenAI Responses, Anthropic, Gemini):
// the agent exits 0 and prints the mock's answer, every request it sent was answered 200,
// and each upstream request carries everything the agent sent except the fields the
// gateway named in x-tollgate-dropped-fields.
import assert from 'node:assert/strict';
import { after, before, describe as suite, test } from 'node:test';

import { AGENT_PROTOCOL, AGENTS, UPSTREAMS, describe, generations, lostFields, runOnce, setup,
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
