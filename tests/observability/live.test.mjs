// Live configuration through the real programs, without restarts.
//
// The log level set through the admin API (PATCH /admin/settings/log-level, `tollgate
// log-level set`) reaches every program within a second (each program LISTENs for changes
// of settings 'log_level'); a client key created or revoked through the
// admin API reaches two ingress instances (the cluster's and a second one started by
// hand against the same configuration) within a second.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { freePort, startProgram, tollgate, waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, ok, setup } from '../routing/lib.mjs';

let ctx;
let second;
let secondGateway;

before(async () => {
  ctx = await setup({ mocks: [['--models', 'live-model']] });
  await addProvider(ctx, 'live', ctx.mocks[0].url);
  await ok(ctx, 'POST', '/admin/models', { name: 'live-model', price_in: '1', price_out: '2', routes: [{ provider: 'live' }] });
  const [listen, control] = [await freePort(), await freePort()];
  secondGateway = `http://127.0.0.1:${listen}`;
  second = startProgram('tollgate-ingress', [
    '--set', `ingress.listen=127.0.0.1:${listen}`,
    '--set', `ingress.control_bind=tcp://127.0.0.1:${control}`,
  ], { env: { TOLLGATE_CONFIG: path.join(ctx.cluster.dir, 'tollgate.conf') } });
  await waitFor(async () => (await fetch(`${secondGateway}/v1/models`).catch(() => null)) !== null,
    { timeout: 10000, message: 'the second ingress to listen' });
});

after(async () => {
  await second?.stop();
  await ctx?.stop();
});

async function chatAt(gateway, key) {
  const response = await fetch(`${gateway}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model: 'live-model', messages: [{ role: 'user', content: 'hi' }] }),
  });
  await response.text();
  return response.status;
}

// Waits until `check` holds, and says how long it took.
async function timeUntil(check, message) {
  const started = Date.now();
  await waitFor(check, { timeout: 3000, interval: 10, message });
  return Date.now() - started;
}

test('a key created and revoked reaches both ingress instances within 1 s', async () => {
  const gateways = [ctx.cluster.gateway, secondGateway];
  const client = await addClient(ctx, 'live-account');
  const accepted = await timeUntil(async () => {
    const statuses = await Promise.all(gateways.map((gateway) => chatAt(gateway, client.key)));
    return statuses.every((status) => status === 200);
  }, 'both ingress instances to accept the new key');
  assert.ok(accepted < 1000, `accepted after ${accepted} ms`);
  await ok(ctx, 'POST', `/admin/keys/${client.keyId}/revoke`, {});
  const refused = await timeUntil(async () => {
    const statuses = await Promise.all(gateways.map((gateway) => chatAt(gateway, client.key)));
    return statuses.every((status) => status === 401);
  }, 'both ingress instances to refuse the revoked key');
  assert.ok(refused < 1000, `refused after ${refused} ms`);
});

test('the log level changes at run time in every program, and back', async () => {
  const logOf = (program) => fs.readFileSync(path.join(ctx.cluster.dir, 'log', `${program}.log`), 'utf8');
  const client = await addClient(ctx, 'log-account');
  await waitFor(async () => (await chatAt(ctx.cluster.gateway, client.key)) === 200, { message: 'a first request' });
  const debugLines = (program, since) => logOf(program).slice(since).split('\n').filter((line) => line.includes('"level":"debug"'));
  const programsToWatch = ['ingress', 'dispatch', 'router', 'billing', 'ledger', 'health'];
  const mark = Object.fromEntries(programsToWatch.map((program) => [program, logOf(program).length]));
  for (const program of programsToWatch) assert.equal(debugLines(program, 0).length, 0, `${program} starts at info`);

  // Through the CLI for every program, and the admin API for one program's own level.
  const cli = (...args) => tollgate(args, { env: { TOLLGATE_DIR: ctx.cluster.dir } });
  const set = await cli('log-level', 'set', 'debug');
  assert.equal(set.code, 0, set.stderr);
  assert.match(set.stdout, /every program: debug/);
  const own = await ok(ctx, 'PATCH', '/admin/settings/log-level', { level: 'warn', program: 'health' });
  assert.deepEqual(own, { level: 'debug', programs: { health: 'warn' } });
  const took = await timeUntil(() => ['ingress', 'dispatch', 'router', 'billing', 'ledger']
    .every((program) => logOf(program).slice(mark[program]).includes('log level info -> debug (settings)')),
  'every program to say it changed level');
  assert.ok(took < 1000, `changed after ${took} ms`);
  // A program's own entry wins (health may pass through debug on the way).
  await timeUntil(() => /log level \w+ -> warn \(settings\)/.test(logOf('health').slice(mark.health)), 'health at warn');
  assert.equal(await chatAt(ctx.cluster.gateway, client.key), 200);
  await waitFor(() => debugLines('ingress', mark.ingress).length > 0 && debugLines('dispatch', mark.dispatch).length > 0,
    { timeout: 2000, message: 'debug lines from a request' });

  assert.equal((await cli('log-level', 'set', 'default')).code, 0);
  await ok(ctx, 'PATCH', '/admin/settings/log-level', { level: 'default', program: 'health' });
  assert.deepEqual(await ok(ctx, 'GET', '/admin/settings/log-level'), { level: null, programs: {} });
  const bad = await ctx.api('PATCH', '/admin/settings/log-level', { level: 'loud' });
  assert.equal(bad.status, 400);
  await timeUntil(() => logOf('ingress').includes('log level debug -> info (settings)'), 'ingress back at info');
  const back = logOf('ingress').length;
  assert.equal(await chatAt(ctx.cluster.gateway, client.key), 200);
  // The request above logged at debug before; now nothing at debug arrives.
  assert.equal(debugLines('ingress', back).length, 0);
  // Each change is in the audit log.
  const audit = await ok(ctx, 'GET', '/admin/audit?action=settings.log_level');
  assert.equal(audit.data.length, 4);
  assert.deepEqual(audit.data.at(-1).after, { level: 'debug', programs: {} });
});

test('tollgate up gives every program a metrics listener that tollgate top finds', async () => {
  const conf = fs.readFileSync(path.join(ctx.cluster.dir, 'tollgate.conf'), 'utf8');
  for (const program of ['ledger', 'billing', 'health', 'router', 'dispatch', 'ingress']) {
    assert.match(conf, new RegExp(`^${program}\\.metrics_listen = 127\\.0\\.0\\.1:\\d+$`, 'm'));
  }
  const result = await tollgate(['top', '--once', '--json', '--interval', '200', '--dir', ctx.cluster.dir]);
  assert.equal(result.code, 0, result.stderr);
  const frame = JSON.parse(result.stdout);
  assert.equal(frame.sources, 3);
  assert.ok(frame.providers.some((p) => p.provider === 'live' && p.attempts_total >= 1));
});
