// Internal traffic is authenticated (docs/security.md: CURVE on tcp://, a certificate's proof
// over PLAIN on ipc://, which `tollgate up` uses): forged DISPATCH, SETTLE, ENTRY, OUTCOME and
// BREAKER_RESET messages from a process without the cluster's certificate reach no handler.
// tollgate-forge sends each one twice: with no certificate at all, and with a certificate of
// its own that knows the server's public key (on ipc://, claiming to be dispatch with the
// proof its own key makes). Then
// nothing happened: no upstream call, no usage row, no balance change, the breaker still
// open, and a subscriber hears no OUTCOME. A control run with the cluster's own probe
// certificate shows that the same messages do work when they come from inside.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { bin, run, waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, chat, fault, ok, seen, setup, usageRow } from '../routing/lib.mjs';

let ctx;
let pa;
let client;
let conf;

function readConf(file) {
  const values = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const match = line.match(/^\s*([\w.]+)\s*=\s*(.*?)\s*$/);
    if (match) values[match[1]] = match[2];
  }
  return values;
}

async function forge(mode, kind, endpoint, fields = {}) {
  const args = [mode, kind, endpoint, `wait_ms=${mode === 'cluster' ? 8000 : 3000}`];
  for (const [name, value] of Object.entries(fields)) args.push(`${name}=${value}`);
  const program = endpoint.includes('billing') ? 'billing' : endpoint.includes('ledger') ? 'ledger'
    : endpoint.includes('router') ? 'router' : 'dispatch';
  args.push(`server=${path.join(conf['curve.dir'], 'public', `${program}.cert`)}`);
  const result = await run(bin('tollgate-forge'), args, { env: { TOLLGATE_CURVE_DIR: conf['curve.dir'] } });
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.trim();
}

async function state() {
  const [usage] = await ctx.cluster.psql('SELECT count(*) AS n FROM usage');
  const [account] = await ctx.cluster.psql(`SELECT balance_micros FROM accounts WHERE id = ${client.accountId}`);
  const [journal] = await ctx.cluster.psql('SELECT count(*) AS n FROM journal_entries');
  return { usage: usage.n, balance: account.balance_micros, journal: journal.n, upstream: await seen(ctx.mocks[0], 'm-a') };
}

before(async () => {
  ctx = await setup({ mocks: [['--models', 'm-a']] });
  conf = readConf(path.join(ctx.cluster.dir, 'tollgate.conf'));
  assert.equal(conf.security, 'curve', 'tollgate up turns CURVE on');
  assert.ok(fs.existsSync(path.join(conf['curve.dir'], 'public', 'dispatch.cert')));
  pa = await addProvider(ctx, 'pa', ctx.mocks[0].url);
  await ok(ctx, 'POST', '/admin/models', { name: 'm', price_in: '1', price_out: '2', routes: [{ provider: 'pa', upstream_model: 'm-a' }] });
  client = await addClient(ctx, 'victim', '10');
  const first = await waitFor(async () => {
    const response = await chat(ctx, client.key, { model: 'm' });
    return response.status === 200 ? response : null;
  }, { timeout: 10000, message: 'a first request through the gateway' });
  await usageRow(ctx, first.id);
});

after(async () => {
  await ctx?.stop();
});

test('forged messages from outside the cluster change nothing', { timeout: 120000 }, async () => {
  const before = await state();
  const ids = { account: client.accountId, key: client.keyId, provider: pa.id, provider_key: pa.keyId, model: 'm', upstream_model: 'm-a' };
  for (const mode of ['plain', 'stranger']) {
    assert.equal(await forge(mode, 'dispatch', conf['dispatch.bind'], ids), 'handshake=refused', `${mode} DISPATCH`);
    assert.equal(await forge(mode, 'settle', conf['billing.bind'], { ...ids, rid: `forged-settle-${mode}` }),
      'handshake=refused', `${mode} SETTLE`);
    assert.equal(await forge(mode, 'entry', conf['ledger.bind'], { ...ids, rid: `forged-entry-${mode}`, cost: 5000000 }),
      'handshake=refused', `${mode} ENTRY`);
    assert.equal(await forge(mode, 'outcome', conf['router.bind'], ids), 'handshake=refused', `${mode} OUTCOME`);
    assert.equal(await forge(mode, 'subscribe', conf['dispatch.events.bind']), 'handshake=refused', `${mode} reads OUTCOMEs`);
  }
  // A request after the forgeries goes through, and its row is the only new one.
  const response = await chat(ctx, client.key, { model: 'm' });
  assert.equal(response.status, 200);
  await usageRow(ctx, response.id);
  const afterwards = await state();
  assert.equal(Number(afterwards.usage), Number(before.usage) + 1, 'no forged usage row');
  assert.equal(afterwards.upstream, before.upstream + 1, 'no forged upstream call');
  const rows = await ctx.cluster.psql("SELECT count(*) AS n FROM usage WHERE request_id LIKE 'forged-%'");
  assert.equal(rows[0].n, '0');
});

test('inside the cluster, money is written only by the programs that own it', { timeout: 120000 }, async () => {
  // A certificate of the cluster that is not billing's (the probe's here; a stolen one of any
  // program) cannot write an ENTRY to the ledger, nor SETTLE with billing unless it is
  // dispatch's or ingress's: the handshake passes, the message is dropped.
  const before = await state();
  const ids = { account: client.accountId, key: client.keyId, provider: pa.id, provider_key: pa.keyId, model: 'm', upstream_model: 'm-a' };
  assert.equal(await forge('cluster', 'entry', conf['ledger.bind'], { ...ids, rid: 'forged-entry-inside', cost: 5000000 }),
    'handshake=accepted reply=none', 'ENTRY from the probe');
  assert.equal(await forge('cluster', 'settle', conf['billing.bind'], { ...ids, rid: 'forged-settle-inside' }),
    'handshake=accepted reply=none', 'SETTLE from the probe');
  const afterwards = await state();
  assert.equal(afterwards.usage, before.usage, 'no usage row');
  assert.equal(afterwards.balance, before.balance, 'balance unchanged');
  assert.equal(afterwards.journal, before.journal, 'no journal entry');
});

test('a SETTLE with dispatch\'s own certificate is charged only when billing vouches for it', { timeout: 120000 }, async () => {
  // A stolen dispatch certificate passes the handshake and billing's sender check; what it
  // sends is still dropped unless billing admitted the request (docs/billing.md, "Who may
  // settle"): no grant, a made-up grant, another request's grant, a lease that is not
  // billing's. The control: a real request's SETTLE carries its grant and is charged.
  const metricsListen = conf['billing.metrics_listen'];
  const unvouched = async () => {
    const text = await (await fetch(`http://${metricsListen}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith('tollgate_billing_settles_unvouched_total'));
    return line ? Number(line.split(' ').pop()) : 0;
  };
  const counted = await unvouched();
  const before = await state();
  const ids = { account: client.accountId, key: client.keyId, provider: pa.id, provider_key: pa.keyId, model: 'm', upstream_model: 'm-a', as: 'dispatch' };
  const forgeries = [
    { rid: 'forged-settle-nogrant' },
    { rid: 'forged-settle-madeup', grant: `a1.${'0'.repeat(32)}` },
    { rid: 'forged-settle-lease', grant: `l1.1.${'0'.repeat(32)}`, lease: 1 },
    { rid: 'forged-settle-lease-only', lease: 1 },
  ];
  for (const fields of forgeries) {
    assert.equal(await forge('cluster', 'settle', conf['billing.bind'], { ...ids, ...fields }),
      'handshake=accepted reply=none', fields.rid);
  }
  const afterwards = await state();
  assert.equal(afterwards.usage, before.usage, 'no usage row');
  assert.equal(afterwards.balance, before.balance, 'balance unchanged');
  assert.equal(afterwards.journal, before.journal, 'no journal entry');
  assert.equal(await unvouched(), counted + forgeries.length, 'each forgery counted');
  const billingLog = fs.readFileSync(path.join(ctx.cluster.dir, 'log', 'billing.log'), 'utf8');
  assert.match(billingLog, /forged-settle-nogrant.*dropped a SETTLE from dispatch/);
  assert.ok(!billingLog.includes('0'.repeat(32)), 'the grant is not logged');
  // The control: a real request is settled and charged, through a lease or an ADMIT.
  const response = await chat(ctx, client.key, { model: 'm' });
  assert.equal(response.status, 200);
  const row = await usageRow(ctx, response.id);
  assert.ok(Number(row.cost_micros) > 0, 'the real request is charged');
  assert.equal(await unvouched(), counted + forgeries.length, 'the real SETTLE was vouched for');
});

test('a forged breaker reset leaves the breaker open; the cluster\'s own reset closes it', { timeout: 120000 }, async () => {
  await fault(ctx.mocks[0], 'm-a', '503');
  for (let i = 0; i < 3; i++) await chat(ctx, client.key, { model: 'm' });
  const isOpen = async () => ((await ok(ctx, 'GET', '/admin/breakers')).data
    .find((b) => b.layer === 'model' && b.provider_id === pa.id && b.upstream_model === 'm-a' && b.state === 'open')) ?? null;
  await waitFor(isOpen, { timeout: 8000, message: 'the breaker to open' });
  const ids = { provider: pa.id, upstream_model: 'm-a' };
  for (const mode of ['plain', 'stranger']) {
    assert.equal(await forge(mode, 'breaker-reset', conf['router.bind'], ids), 'handshake=refused', `${mode} BREAKER_RESET`);
  }
  assert.ok(await isOpen(), 'the breaker is still open');
  // The control run: the same message from a certificate of the cluster does reset it.
  assert.equal(await forge('cluster', 'breaker-reset', conf['router.bind'], ids), 'handshake=accepted reply=BREAKERS_REPLY');
  await waitFor(async () => !(await isOpen()), { timeout: 5000, message: 'the reset to close the breaker' });
  await fault(ctx.mocks[0], 'm-a', '');
});

test('the control run: a DISPATCH from inside the cluster reaches the upstream', { timeout: 60000 }, async () => {
  const before = await state();
  const ids = { account: client.accountId, key: client.keyId, provider: pa.id, provider_key: pa.keyId, model: 'm', upstream_model: 'm-a' };
  assert.equal(await forge('cluster', 'dispatch', conf['dispatch.bind'], { ...ids, rid: 'inside-0000000000000001' }),
    'handshake=accepted reply=DONE status=200');
  assert.equal(await seen(ctx.mocks[0], 'm-a'), before.upstream + 1);
});

test('behind CURVE, dispatch takes a DISPATCH only for accounts and keys in its catalog', { timeout: 60000 }, async () => {
  const before = await state();
  const ids = { provider: pa.id, provider_key: pa.keyId, model: 'm', upstream_model: 'm-a' };
  for (const [account, key] of [[999999, client.keyId], [client.accountId, 999999], [999999, 999999]]) {
    assert.equal(await forge('cluster', 'dispatch', conf['dispatch.bind'], { ...ids, account, key, rid: `unknown-${account}-${key}` }),
      'handshake=accepted reply=DONE status=403', `account ${account}, key ${key}`);
  }
  assert.equal(await seen(ctx.mocks[0], 'm-a'), before.upstream, 'no upstream call');
});
