// Capabilities an account or key forces, and providers that speak OpenAI's
// Responses API upstream (migration 0005), through the real processes.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, chat, ok, seen, setup } from './lib.mjs';

let ctx;
before(async () => {
  ctx = await setup({ mocks: [['--models', 'm'], ['--models', 'm'], ['--models', 'r']] });
  const [plain, long, responses] = ctx.mocks;
  await addProvider(ctx, 'plain', plain.url);
  const longProvider = await addProvider(ctx, 'long', long.url);
  await ok(ctx, 'PATCH', `/admin/provider-keys/${longProvider.keyId}`, { capabilities: ['context-1m'] });
  await ok(ctx, 'POST', '/admin/models', { name: 'm', routes: [{ provider: 'plain' }, { provider: 'long' }] });
  await addProvider(ctx, 'resp', responses.url, { protocol: 'openai-responses' });
  await ok(ctx, 'POST', '/admin/models', { name: 'r', routes: [{ provider: 'resp' }] });
});
after(async () => { await ctx?.stop(); });

test('an account that forces a capability only reaches keys that have it', async () => {
  const forced = await addClient(ctx, 'needs-1m');
  await ok(ctx, 'PATCH', '/admin/accounts/needs-1m', { force_capabilities: ['context-1m'] });
  const account = await ok(ctx, 'GET', '/admin/accounts/needs-1m');
  assert.deepEqual(account.force_capabilities, ['context-1m']);
  const free = await addClient(ctx, 'anyone');
  const [plain, long] = ctx.mocks;
  // Wait until the gateway and routers know both keys and the forced tag.
  await waitFor(async () => (await chat(ctx, free.key, { model: 'm', messages: [{ role: 'user', content: 'x' }] })).status === 200);
  const before = { plain: await seen(plain, 'm'), long: await seen(long, 'm') };
  await waitFor(async () => {
    const start = await seen(plain, 'm');
    const response = await chat(ctx, forced.key, { model: 'm', messages: [{ role: 'user', content: 'x' }] });
    return response.status === 200 && (await seen(plain, 'm')) === start;
  }, { timeout: 3000, message: 'the forced capability to reach the routers' });
  const mid = { plain: await seen(plain, 'm'), long: await seen(long, 'm') };
  for (let i = 0; i < 20; i++) {
    const response = await chat(ctx, forced.key, { model: 'm', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(response.status, 200, response.text);
  }
  assert.equal(await seen(plain, 'm'), mid.plain, 'no forced request went to the key without context-1m');
  assert.equal((await seen(long, 'm')) - mid.long, 20);
  // A key of an account that forces nothing still spreads over both.
  for (let i = 0; i < 20; i++) await chat(ctx, free.key, { model: 'm', messages: [{ role: 'user', content: 'x' }] });
  assert.ok((await seen(plain, 'm')) > before.plain, 'the free key also reaches the plain provider');
});

test('a key that forces a tag nobody declares is not refused; once a key declares it, only that key serves', async () => {
  const client = await addClient(ctx, 'needs-vision');
  await ok(ctx, 'PATCH', `/admin/keys/${client.keyId}`, { force_capabilities: ['vision'] });
  assert.deepEqual((await ok(ctx, 'GET', `/admin/keys/${client.keyId}`)).force_capabilities, ['vision']);
  const ask = () => chat(ctx, client.key, { model: 'm', messages: [{ role: 'user', content: 'x' }] });
  await waitFor(async () => (await ask()).status === 200, { timeout: 3000 });
  const keys = await ok(ctx, 'GET', '/admin/providers/long/keys');
  const longKey = (keys.data ?? keys)[0];
  await ok(ctx, 'PATCH', `/admin/provider-keys/${longKey.id}`, { capabilities: ['context-1m', 'vision'] });
  const [plain] = ctx.mocks;
  await waitFor(async () => {
    const start = await seen(plain, 'm');
    for (let i = 0; i < 5; i++) assert.equal((await ask()).status, 200);
    return (await seen(plain, 'm')) === start;
  }, { timeout: 3000, message: 'vision-forced requests to stay off the plain provider' });
});

test('Responses clients pass through to an openai-responses provider; chat clients are converted to it', async () => {
  const client = await addClient(ctx, 'responder');
  const [, , responses] = ctx.mocks;
  await waitFor(async () => (await chat(ctx, client.key, { model: 'r', messages: [{ role: 'user', content: 'hi' }] })).status === 200,
    { timeout: 3000 });
  let stats = await (await fetch(`${responses.url}/mock/stats`)).json();
  assert.equal(stats.last.path, '/v1/responses', 'a chat client reached the Responses upstream');
  const response = await fetch(`${ctx.cluster.gateway}/v1/responses`, {
    method: 'POST',
    headers: { authorization: `Bearer ${client.key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'r', input: 'echo: passthrough' }),
  });
  assert.equal(response.status, 200);
  const body = await response.json();
  assert.equal(body.object, 'response');
  assert.equal(body.output.find((item) => item.type === 'message').content[0].text, ' passthrough');
  stats = await (await fetch(`${responses.url}/mock/stats`)).json();
  assert.equal(stats.last.path, '/v1/responses');
  assert.equal(stats.last.body_json.input, 'echo: passthrough', 'the body went through untouched');
});
