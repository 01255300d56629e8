// Reports through the admin API and the CLI: spend by model, balances, usage
// as CSV, and the ledger check, after real requests through the gateway.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, chat, ok, setup } from '../routing/lib.mjs';

let ctx;
let client;
const ids = [];
before(async () => {
  ctx = await setup({ mocks: [['--models', 'priced']] });
  await addProvider(ctx, 'p', ctx.mocks[0].url);
  await ok(ctx, 'POST', '/admin/models', { name: 'priced', price_in: '1.00', price_out: '2.00', routes: [{ provider: 'p' }] });
  client = await addClient(ctx, 'reported', '50');
  await waitFor(async () => (await chat(ctx, client.key, { model: 'priced', messages: [{ role: 'user', content: 'x' }] })).status === 200);
  for (let i = 0; i < 4; i++) {
    const response = await chat(ctx, client.key, { model: 'priced', messages: [{ role: 'user', content: 'hello' }] });
    assert.equal(response.status, 200);
    ids.push(response.headers.get('x-request-id'));
  }
  await waitFor(async () => Number((await ctx.cluster.psql(
    `SELECT count(*) AS n FROM usage WHERE request_id IN (${ids.map((id) => `'${id}'`).join(',')})`))[0].n) === 4,
  { message: 'usage rows' });
});
after(async () => { await ctx?.stop(); });

test('spend by model and balances add up to the usage rows', async () => {
  const spend = await ok(ctx, 'GET', '/admin/reports/spend?by=model&account=reported');
  const row = spend.rows.find((r) => r.group === 'priced');
  assert.ok(row, JSON.stringify(spend));
  const [sums] = await ctx.cluster.psql(`SELECT count(*) AS n, sum(cost_micros) AS cost FROM usage
    WHERE account_id = ${client.accountId}`);
  assert.equal(Number(row.requests), Number(sums.n));
  assert.equal(Number(row.cost_micros), Number(sums.cost));
  assert.ok(Number(sums.cost) > 0);
  const balances = await ok(ctx, 'GET', '/admin/reports/balances?account=reported');
  const account = balances.accounts[0];
  assert.equal(Number(account.balance_micros), 50_000_000 - Number(sums.cost));
});

test('usage as CSV, with paging through the JSON form', async () => {
  const response = await fetch(`${ctx.cluster.admin}/admin/usage.csv?account=reported`,
    { headers: { authorization: `Bearer ${ctx.cluster.token}` } });
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type'), /text\/csv/);
  const lines = (await response.text()).trim().split('\n');
  assert.match(lines[0], /request_id/);
  for (const id of ids) assert.ok(lines.some((line) => line.includes(id)), `${id} in the CSV`);
  const page = await ok(ctx, 'GET', '/admin/reports/usage?account=reported&limit=2');
  assert.equal(page.records.length, 2);
  assert.ok(page.next_cursor);
  const next = await ok(ctx, 'GET', `/admin/reports/usage?account=reported&limit=2&cursor=${encodeURIComponent(page.next_cursor)}`);
  assert.ok(next.records.length >= 1);
  assert.ok(!next.records.some((r) => page.records.some((p) => p.request_id === r.request_id)), 'pages do not overlap');
});

test('the ledger check passes over HTTP and in the CLI', async () => {
  const check = await ok(ctx, 'GET', '/admin/ledger/check');
  assert.equal(check.ok, true, check.report);
  const cli = await ctx.cluster.tollgate(['ledger', 'check', '--dir', ctx.cluster.dir]);
  assert.equal(cli.code, 0, cli.stderr + cli.stdout);
});

test('a bad report query is a 400 in the admin error shape', async () => {
  const answer = await ctx.api('GET', '/admin/reports/spend?by=planet');
  assert.equal(answer.status, 400);
  assert.ok(answer.body.error.message);
});
