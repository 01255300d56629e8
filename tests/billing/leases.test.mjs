// Admission from leases (billing/billing_lease.h, ingress/ingress_lease.h) through the real
// programs: three ingress instances admit a key's requests without asking billing, and at the
// edge of a balance, of a request rate, of a concurrency limit and of a daily spend cap the
// account still never overspends by more than one request; a lowered balance takes the leases
// back at once.
//
// Every request here costs exactly C: the mock answers 5 output tokens, the model costs
// 1000 micros per output token and nothing for input, and each request sets max_tokens 5, so
// its admission estimate equals its cost.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { freePort, startCluster, startMock, startProgram, tempDir, waitFor } from '../lib/harness.mjs';

const C = 5000; // micros per request
let cluster;
let mock;
const gateways = [];
const gatewayMetrics = []; // each ingress' own /metrics, in the order of gateways
const extras = [];

async function cli(...args) {
  const result = await cluster.tollgate(args, { env: { TOLLGATE_DIR: cluster.dir } });
  if (result.code !== 0) throw new Error(`tollgate ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

async function chat(gateway, key, model) {
  const response = await fetch(`${gateway}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model, max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] }),
  });
  const text = await response.text();
  let code = null;
  try { code = JSON.parse(text).error?.code ?? null; } catch { /* not JSON */ }
  return { status: response.status, code };
}

// n requests spread over the three ingresses, `concurrency` at a time. Resolves the statuses.
async function burst(key, model, n, concurrency) {
  const statuses = [];
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      statuses.push(await chat(gateways[i % gateways.length], key, model));
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  return statuses;
}

const ok = (statuses) => statuses.filter((s) => s.status === 200).length;

async function newKey(account, name) {
  return (await cli('key', 'create', account, '--name', name)).trim().split('\n').pop();
}

function metricsListen(program) {
  const conf = fs.readFileSync(path.join(cluster.dir, 'tollgate.conf'), 'utf8');
  return conf.match(new RegExp(`^${program}\\.metrics_listen = (\\S+)$`, 'm'))[1];
}

// A metric of a program of the cluster, or (listen given) of the program serving it there.
async function metric(program, name, listen = metricsListen(program)) {
  const text = await (await fetch(`http://${listen}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.split(' ').pop()) : 0;
}

// The money the account's settled requests took, once the ledger has them all.
async function balance(account) {
  return Number((await cluster.psql(`SELECT balance_micros FROM accounts WHERE name = '${account}'`))[0].balance_micros);
}

before(async () => {
  mock = await startMock(['--models', 'fast,slow', '--fault', 'slow=delay-headers:1500']);
  cluster = await startCluster();
  gateways.push(cluster.gateway);
  gatewayMetrics.push(metricsListen('ingress'));
  await cli('provider', 'add', 'mock', '--protocol', 'openai', '--base-url', mock.url);
  await cli('provider', 'key', 'add', 'mock', '--secret', 'sk-mock');
  await cli('model', 'add', 'c', '--route', 'mock:fast', '--price-out', '1000');
  await cli('model', 'add', 'c-slow', '--route', 'mock:slow', '--price-out', '1000');
  // Two more ingress instances on the cluster's configuration.
  for (let i = 0; i < 2; i++) {
    const [port, admin, metrics] = [await freePort(), await freePort(), await freePort()];
    const control = `ipc://${tempDir('tollgate-ingress-')}/control.sock`;
    extras.push(startProgram('tollgate-ingress', ['--config', path.join(cluster.dir, 'tollgate.conf'),
      '--set', `ingress.listen=127.0.0.1:${port}`, '--set', `ingress.admin_listen=127.0.0.1:${admin}`,
      '--set', `ingress.control_bind=${control}`, '--set', `ingress.metrics_listen=127.0.0.1:${metrics}`]));
    gateways.push(`http://127.0.0.1:${port}`);
    gatewayMetrics.push(`127.0.0.1:${metrics}`);
  }
  for (const gateway of gateways) {
    await waitFor(async () => (await fetch(`${gateway}/healthz`).catch(() => ({ status: 0 }))).status === 200,
      { timeout: 20000, message: `${gateway} up` });
  }
});

after(async () => {
  for (const extra of extras) await extra.stop();
  await cluster?.stop();
  await mock?.stop();
});

const leaseAdmits = () => Promise.all(gatewayMetrics.map((listen) =>
  metric('ingress', 'tollgate_ingress_lease_admits_total', listen)));

test('requests are admitted from leases: few ADMITs for many requests', async () => {
  await cli('account', 'add', 'plenty', '--balance', '1000');
  const key = await newKey('plenty', 'plenty');
  await waitFor(async () => (await chat(cluster.gateway, key, 'c')).status === 200, { message: 'the key works' });
  // Each ingress admits from a lease of its own: counted by each ingress, not by billing's
  // count of grants (which renewals of one lease can make up). An ingress whose first ask met a
  // billing that did not know the new key yet asks again a second later, so each is first
  // seen to hold a lease, whatever the order the programs learnt the key in.
  for (let i = 0; i < gateways.length; i++) {
    await waitFor(async () => {
      assert.equal((await chat(gateways[i], key, 'c')).status, 200);
      return (await leaseAdmits())[i] > 0;
    }, { timeout: 20000, message: `${gateways[i]} admits from a lease` });
  }
  const leasedBefore = await leaseAdmits();
  const admitsBefore = await metric('billing', 'tollgate_billing_admits_total');
  const statuses = await burst(key, 'c', 300, 12);
  assert.equal(ok(statuses), 300);
  const admits = (await metric('billing', 'tollgate_billing_admits_total')) - admitsBefore;
  assert.ok(admits < 30, `${admits} ADMITs for 300 requests`);
  // Each ingress served 100 of them; those it did not ADMIT it admitted from its own lease.
  const leased = (await leaseAdmits()).map((n, i) => n - leasedBefore[i]);
  assert.ok(leased.every((n) => n > 0 && n >= 100 - admits),
    `every ingress holds a lease: ${leased.join(', ')} of 100 each from leases, ${admits} ADMITs`);
});

test('at the edge of a balance: at most the balance is spent, over three ingresses', async () => {
  // 200 requests' worth: enough for leases (a quarter is 50 requests' worth).
  await cli('account', 'add', 'edge', '--balance', String((200 * C) / 1e6));
  const key = await newKey('edge', 'edge');
  await waitFor(async () => (await chat(cluster.gateway, key, 'c')).status === 200, { message: 'the key works' });
  const statuses = await burst(key, 'c', 400, 24);
  const admitted = ok(statuses) + 1;
  assert.ok(admitted <= 200, `${admitted} requests of ${C} micros on a balance of ${200 * C}`);
  assert.ok(admitted >= 150, `only ${admitted} admitted: leases should not strand the balance`);
  assert.ok(statuses.filter((s) => s.status !== 200).every((s) => s.status === 402 && s.code === 'insufficient_balance'));
  await waitFor(async () => (await balance('edge')) === (200 - admitted) * C, { timeout: 10000, message: 'the ledger has every request' });
  assert.ok(await balance('edge') >= 0);
});

// Limits go on the account before its key exists, so no request of the key is ever admitted
// (or leased) without them.
async function limitedKey(name, limits) {
  await cli('account', 'add', name, '--balance', '1000');
  await cluster.psql(`UPDATE accounts SET ${limits} WHERE name = '${name}'`);
  return newKey(name, name);
}

test('at the edge of a request rate: rpm holds across ingresses', async () => {
  const key = await limitedKey('rated', 'rpm_limit = 120');
  await waitFor(async () => (await chat(cluster.gateway, key, 'c')).status === 200, { message: 'the key works' });
  const started = Date.now();
  const statuses = await burst(key, 'c', 300, 24);
  const seconds = (Date.now() - started) / 1000 + 1;
  const admitted = ok(statuses) + 1;
  const allowed = 120 + Math.ceil((120 * seconds) / 60);
  assert.ok(admitted <= allowed, `${admitted} requests within ${seconds.toFixed(1)} s on 120 rpm`);
  assert.ok(admitted >= 100, `only ${admitted} admitted`);
  assert.ok(statuses.filter((s) => s.status !== 200).every((s) => s.status === 429 && s.code === 'rate_limit_exceeded'));
});

test('at the edge of a concurrency limit: no more in flight than allowed', async () => {
  const key = await limitedKey('narrow', 'concurrency_limit = 8');
  await waitFor(async () => (await chat(cluster.gateway, key, 'c')).status === 200, { message: 'the key works' });
  // Each slow request takes 1.5 s: all 40 are in flight at once or refused.
  const statuses = await burst(key, 'c-slow', 40, 40);
  assert.ok(ok(statuses) <= 8, `${ok(statuses)} in flight on a limit of 8`);
  assert.ok(ok(statuses) >= 2, `only ${ok(statuses)} admitted`);
  assert.ok(statuses.filter((s) => s.status !== 200).every((s) => s.status === 429 && s.code === 'concurrency_limit_exceeded'));
});

test('at the edge of a daily spend cap: at most the cap is spent', async () => {
  const key = await limitedKey('capped', `daily_spend_micros = ${100 * C}`);
  await waitFor(async () => (await chat(cluster.gateway, key, 'c')).status === 200, { message: 'the key works' });
  const statuses = await burst(key, 'c', 200, 24);
  const admitted = ok(statuses) + 1;
  assert.ok(admitted <= 100, `${admitted} requests of ${C} on a daily cap of ${100 * C}`);
  assert.ok(admitted >= 60, `only ${admitted} admitted`);
  assert.ok(statuses.filter((s) => s.status !== 200).every((s) => s.status === 429 && s.code === 'spend_limit_exceeded'));
});

test('a lowered balance takes the leases back at once', async () => {
  await cli('account', 'add', 'lowered', '--balance', '1000');
  const key = await newKey('lowered', 'lowered');
  await waitFor(async () => (await chat(cluster.gateway, key, 'c')).status === 200, { message: 'the key works' });
  assert.equal(ok(await burst(key, 'c', 60, 6)), 60, 'leases granted on every ingress');
  // The operator takes all but two requests' worth away (an adjustment).
  const spent = 61 * C;
  await waitFor(async () => (await balance('lowered')) === 1000e6 - spent, { timeout: 10000, message: 'settled' });
  await cli('account', 'topup', 'lowered', (-(1000e6 - spent - 2 * C) / 1e6).toFixed(6));
  await waitFor(async () => (await chat(cluster.gateway, key, 'c')).status === 402,
    { timeout: 5000, message: 'billing sees the new balance' });
  const after = await burst(key, 'c', 30, 6);
  assert.ok(ok(after) <= 2, `${ok(after)} admitted after the balance was lowered to 2 requests' worth`);
});

test('no program died on the way', async () => {
  const status = await cluster.status();
  for (const program of status.programs) assert.equal(program.restarts ?? 0, 0, `${program.name} restarted`);
});
