// Two billing instances. Ingress (ADMIT) and dispatch (SETTLE) both pick the instance by
// account_id % 2, so each account's limits live in one instance and hold exactly across the
// cluster, and a settlement returns to the instance that admitted the request (else a
// concurrency slot would never come back).
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { freePort, startCluster, startMock, startProgram, waitFor } from '../lib/harness.mjs';

let cluster;
let mock;
let extra;
const accounts = {};

async function cli(...args) {
  const result = await cluster.tollgate(args, { env: { TOLLGATE_DIR: cluster.dir } });
  if (result.code !== 0) throw new Error(`tollgate ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

async function chat(key) {
  const response = await fetch(`${cluster.gateway}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model: 'fast', messages: [{ role: 'user', content: 'hi' }] }),
  });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: response.status, code: json?.error?.code, text };
}

// A request that may meet a settlement still on its way (DONE and SETTLE race).
async function admitted(key) {
  let last;
  await waitFor(async () => {
    last = await chat(key);
    return last.code !== 'concurrency_limit_exceeded';
  }, { timeout: 3000, interval: 20, message: 'the concurrency slot to come back' });
  return last;
}

before(async () => {
  const [first, second, control] = [await freePort(), await freePort(), await freePort()];
  const endpoints = `tcp://127.0.0.1:${first},tcp://127.0.0.1:${second}`;
  mock = await startMock(['--models', 'fast']);
  cluster = await startCluster({ env: {
    TOLLGATE_BILLING_BIND: `tcp://127.0.0.1:${first}`,
    TOLLGATE_BILLING_ENDPOINTS: endpoints,
    TOLLGATE_INGRESS_INTERNAL_TIMEOUT_MS: '1500',
  } });
  extra = startProgram('tollgate-billing', ['--set', `billing.bind=tcp://127.0.0.1:${second}`,
    '--set', `billing.control_bind=tcp://127.0.0.1:${control}`],
  { env: { TOLLGATE_CONFIG: path.join(cluster.dir, 'tollgate.conf') } });
  await cli('provider', 'add', 'mock', '--protocol', 'openai', '--base-url', mock.url);
  await cli('provider', 'key', 'add', 'mock', '--secret', 'sk-mock');
  await cli('model', 'add', 'fast', '--route', 'mock:fast', '--price-in', '1', '--price-out', '2');
  for (const name of ['one', 'two']) {
    await cli('account', 'add', name, '--balance', '100');
    const key = (await cli('key', 'create', name)).trim().split('\n').pop();
    const [row] = await cluster.psql(`SELECT id FROM accounts WHERE name = '${name}'`);
    accounts[name] = { key, id: Number(row.id) };
  }
  assert.notEqual(accounts.one.id % 2, accounts.two.id % 2, 'one account per instance');
  await cluster.psql('UPDATE accounts SET rpm_limit = 4, concurrency_limit = 1');
  await waitFor(async () => {
    const [a, b] = [await chat(accounts.one.key), await chat(accounts.two.key)];
    return a.status === 200 && b.status === 200;
  }, { timeout: 10000, message: 'both instances admit' });
});

after(async () => {
  await extra?.stop('SIGKILL');
  await cluster?.stop();
  await mock?.stop();
});

test('each account meets one instance: limits hold exactly and settlements come back to it', async () => {
  // Each account has used 1 of its 4 requests per minute above (maybe a few more while the
  // new limits loaded; count from what the instance says).
  for (const name of ['one', 'two']) {
    let ok = 0;
    let last;
    for (let i = 0; i < 8; i++) {
      last = await admitted(accounts[name].key);
      if (last.status !== 200) break;
      ok++;
    }
    assert.equal(last.status, 429, `${name}: ${last.text}`);
    assert.equal(last.code, 'rate_limit_exceeded');
    assert.ok(ok <= 3, `${name}: ${ok} more requests passed a limit of 4 per minute`);
  }
  assert.match(extra.output(), /billing on tcp:\/\/127\.0\.0\.1/);
});

test('with the second instance gone, only its accounts are refused', async () => {
  await extra.stop('SIGKILL');
  const onExtra = accounts.one.id % 2 === 1 ? accounts.one : accounts.two;
  const onFirst = onExtra === accounts.one ? accounts.two : accounts.one;
  const lost = await chat(onExtra.key);
  assert.ok(lost.status >= 500, `account on the dead instance: ${lost.status} ${lost.text}`);
  // The live instance still answers (its account is out of requests for this minute).
  assert.equal((await chat(onFirst.key)).code, 'rate_limit_exceeded');
});
