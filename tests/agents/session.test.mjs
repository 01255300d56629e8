// Whole agent sessions across protocols: the mock upstream asks each agent to run one of
// its own tools (Claude Code's Read, Codex's exec_command, Gemini CLI's read_file) on a
// file in the agent's folder; the agent runs it and sends the result back through Tollgate
// to the same provider of another protocol, and the mock answers with what it saw
// ("mock saw: " and the file's text), which the agent prints. Both upstream requests must
// carry everything the agent sent but the named drops, tool call ids paired as the agent
// paired them; the answers carry usage in the agent's own format. An upstream error comes
// back in the agent's format, with the upstream's message, which the agent shows.
import assert from 'node:assert/strict';
import { after, before, describe as suite, test } from 'node:test';

import { AGENT_PROTOCOL, AGENTS, UPSTREAMS, describe, generations, lostFields, runOnce, setup,
  upstreamGenerations } from './agents.mjs';

const TOKEN = 'tollgate-notes-7f3a';
const FILE = `${TOKEN}: the file the agent read\n`;
// Each agent's file-reading tool and its arguments, for a file in the working folder.
const TOOL = {
  claude: (cwd) => `mock-call Read {"file_path":"${cwd}/notes.txt"}`,
  codex: () => 'mock-call exec_command {"cmd":"cat notes.txt"}',
  gemini: (cwd) => `mock-call read_file {"file_path":"${cwd}/notes.txt"}`,
};
// Where usage sits in each agent's own stream.
const USAGE = { anthropic: /"output_tokens":\d+/, responses: /"usage":\{"input_tokens":\d+/, gemini: /"usageMetadata":\{"promptTokenCount":\d+/ };

let env;
const table = {};
before(async () => { env = await setup({ faults: ['broken-model=400'] }); });
after(async () => {
  const rows = AGENTS.map((agent) => `| ${agent} | ${UPSTREAMS.map((up) => table[`${agent}>${up}`] ?? '-').join(' | ')} |`);
  console.log(['| tool session | ' + UPSTREAMS.join(' | ') + ' |', '|---|---|---|---|---|', ...rows].join('\n'));
  await env?.stop();
});

suite('an agent\'s tool call and its result, across protocols', () => {
  for (const agent of AGENTS) {
    for (const upstream of UPSTREAMS) {
      test(`${agent} -> ${upstream}`, async () => {
        table[`${agent}>${upstream}`] = 'fail';
        const run = await runOnce(env, agent, {
          model: `to-${upstream}`,
          prompt: (cwd) => `Read notes.txt and tell me what it says. ${TOOL[agent](cwd)}`,
          files: { 'notes.txt': FILE },
        });
        const why = describe(run);
        assert.equal(run.code, 0, why);
        // The mock quoted the tool's result, so it came back through the gateway.
        assert.match(run.stdout, new RegExp(`mock saw:[^]*${TOKEN}`), why);
        const sent = generations(run.exchanges);
        const received = upstreamGenerations(run.upstream);
        assert.ok(sent.length >= 2, why);
        assert.ok(sent.every((x) => x.status === 200), why);
        assert.equal(received.length, sent.length, why);
        sent.forEach((exchange, index) => {
          const problems = lostFields(AGENT_PROTOCOL[agent], exchange.body, upstream, received[index].body,
            exchange.headers['x-tollgate-dropped-fields']);
          assert.deepEqual(problems, [], `request ${index}:\n${why}`);
          assert.match(exchange.response, USAGE[AGENT_PROTOCOL[agent]], why);
        });
        // The last upstream request holds the call and the result, and the result's text.
        assert.ok(JSON.stringify(received.at(-1).body).includes(TOKEN), why);
        table[`${agent}>${upstream}`] = `ok (${run.ms} ms)`;
      });
    }
  }
});

suite('an upstream error reaches the agent in its own format', () => {
  for (const agent of AGENTS) {
    // A provider of another protocol than the agent's, answering 400 in its own shape.
    const upstream = { claude: 'openai', codex: 'gemini', gemini: 'anthropic' }[agent];
    test(`${agent} <- ${upstream} 400`, async () => {
      const run = await runOnce(env, agent, { model: `broken-to-${upstream}`, prompt: () => 'Say hello.' });
      const why = describe(run);
      assert.notEqual(run.code, 0, why);
      const sent = generations(run.exchanges);
      assert.ok(sent.length >= 1 && sent.every((x) => x.status === 400), why);
      // The agent understood the error body: it shows the upstream's message.
      assert.match(run.stdout + run.stderr, /injected fault \(mock\)/, why);
    });
  }
});
