// Request capture at run time (docs/admin-api.md, "Request logs") and redaction.
//
// At `full`, ingress stores the request and response headers and dispatch the bodies, cut to
// max_body_bytes, with the client's key and every provider secret replaced by ***; at
// `headers`, headers only; at `base`, nothing. The mock upstream echoes the prompt ("echo:X"),
// so secrets the client sends come back in the answer too. Finally every log file and every
// stored body and span is searched for the provider secrets and client keys of this suite:
// none may appear.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, chat, ok, setup, usageRow } from '../routing/lib.mjs';

let ctx;
let client;
const secrets = [];

before(async () => {
  // Every request keeps its spans here (tail sampling keeps only failed,
  // failed-over and slow ones by default): the test waits on them.
  ctx = await setup({ mocks: [['--models', 'cap-model']], env: { TOLLGATE_TRACE_SAMPLE_PPM: '1000000' } });
  await addProvider(ctx, 'capture', ctx.mocks[0].url);
  secrets.push('sk-capture-secret-0000');
  await ok(ctx, 'POST', '/admin/models', { name: 'cap-model', price_in: '1', price_out: '2', routes: [{ provider: 'capture' }] });
  client = await addClient(ctx, 'capture-account');
  secrets.push(client.key);
  await waitFor(async () => (await chat(ctx, client.key, { model: 'cap-model' })).status === 200,
    { timeout: 5000, message: 'the first request' });
});

after(async () => { await ctx?.stop(); });

const logOf = (program) => fs.readFileSync(path.join(ctx.cluster.dir, 'log', `${program}.log`), 'utf8');

// Sets the request-log level and waits until ingress and dispatch apply it.
async function level(name, maxBody = 4096) {
  const marks = { ingress: logOf('ingress').length, dispatch: logOf('dispatch').length };
  await ok(ctx, 'PATCH', '/admin/settings/request-log', { level: name, max_body_bytes: maxBody });
  await waitFor(() => ['ingress', 'dispatch'].every((program) => logOf(program).slice(marks[program])
    .includes(`request log: level ${name}, bodies up to ${maxBody} bytes`)), { timeout: 2000, message: `level ${name}` });
}

async function details(id) {
  await usageRow(ctx, id);
  return waitFor(async () => {
    const answer = await ok(ctx, 'GET', `/admin/requests/${id}`);
    return answer.details?.response_body !== undefined || answer.details?.level === 'headers' ? answer.details : null;
  }, { timeout: 5000, message: `the details of ${id}` });
}

const prompt = () => `echo:provider ${secrets[0]} client ${client.key} done`;

test('full: headers and bodies, secrets redacted', async () => {
  await level('full');
  const headers = { 'x-trace-me': `key=${client.key}`, cookie: `session=${client.key}` };
  for (const stream of [false, true]) {
    const response = await chat(ctx, client.key, {
      model: 'cap-model', stream, messages: [{ role: 'user', content: prompt() }],
    }, { headers });
    assert.equal(response.status, 200, response.text);
    assert.ok(response.text.includes(secrets[0]), 'the mock echoed the secret to the client');
    const found = await waitFor(async () => {
      const d = await details(response.id);
      return d.request_headers && d.response_body ? d : null;
    }, { timeout: 5000, message: 'both halves' });
    assert.equal(found.level, 'full');
    assert.equal(found.client_protocol, 'openai');
    assert.equal(found.request_headers.authorization, undefined);
    assert.equal(found.request_headers.cookie, undefined);
    assert.equal(found.request_headers['x-trace-me'], 'key=***');
    assert.equal(found.request_headers['content-type'], 'application/json');
    assert.equal(found.response_headers['x-request-id'], response.id);
    assert.match(found.request_body, /echo:provider \*\*\* client \*\*\* done/);
    // Streamed, the echo comes word by word: one *** per secret, in its own event.
    if (stream) {
      assert.equal(found.response_body.match(/"content":" \*\*\*"/g).length, 2);
      assert.match(found.response_body, /data: \[DONE\]/);
    } else assert.match(found.response_body, /provider \*\*\* client \*\*\* done/);
    for (const secret of secrets) assert.ok(!JSON.stringify(found).includes(secret));
    assert.equal(found.request_truncated, false);
    assert.equal(found.response_truncated, false);
  }
});

test('full: bodies are cut to max_body_bytes at a character boundary', async () => {
  await level('full', 100);
  const response = await chat(ctx, client.key, {
    model: 'cap-model', messages: [{ role: 'user', content: `echo:${'é'.repeat(200)}` }],
  });
  assert.equal(response.status, 200);
  const found = await details(response.id);
  assert.equal(found.request_truncated, true);
  assert.equal(found.response_truncated, true);
  assert.ok(Buffer.byteLength(found.request_body) <= 100);
  assert.ok(!found.request_body.includes('\ufffd'), 'no broken character');
});

test('headers: no bodies; base: nothing', async () => {
  await level('headers');
  const response = await chat(ctx, client.key, { model: 'cap-model', messages: [{ role: 'user', content: prompt() }] });
  const found = await details(response.id);
  assert.equal(found.level, 'headers');
  assert.equal(found.request_body, null);
  assert.ok(found.request_headers['user-agent'] !== undefined || found.request_headers.host);
  await level('base');
  const plain = await chat(ctx, client.key, { model: 'cap-model' });
  await usageRow(ctx, plain.id);
  // The spans of the request arrive with the same flush a detail half would.
  await waitFor(async () => (await ok(ctx, 'GET', `/admin/requests/${plain.id}`)).spans.some((s) => s.name === 'ledger.commit'),
    { timeout: 5000, message: 'the spans' });
  const answer = await ok(ctx, 'GET', `/admin/requests/${plain.id}`);
  assert.equal(answer.details, null);
  assert.equal(answer.has_details, false);
});

test('no provider secret or client key in any log, stored body or span', async () => {
  const stored = await ctx.cluster.psql(
    "SELECT (SELECT coalesce(string_agg(d::text, ' '), '') FROM request_details d) AS details, "
    + "(SELECT coalesce(string_agg(s::text, ' '), '') FROM spans s) AS spans, "
    + "(SELECT coalesce(string_agg(a::text, ' '), '') FROM audit_log a) AS audit");
  assert.ok(stored[0].details.includes('***'), 'the capture ran');
  const places = { ...stored[0] };
  for (const file of fs.readdirSync(path.join(ctx.cluster.dir, 'log'))) {
    places[`log/${file}`] = fs.readFileSync(path.join(ctx.cluster.dir, 'log', file), 'utf8');
  }
  for (const [where, text] of Object.entries(places)) {
    for (const secret of secrets) {
      assert.ok(!text.includes(secret), `${where} holds ${secret.slice(0, 8)}…`);
    }
  }
});
