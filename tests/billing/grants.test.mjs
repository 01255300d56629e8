// Recurring credit grants through the CLI and two ledger instances: `tollgate account grant`
// gives an account a fixed credit every UTC day, week or month; each period is granted exactly
// once (a journal entry of kind 'grant', the balance moved, billing told) even with both
// ledgers checking every 100 ms, including periods granted at once for a start in the past.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { clusterCli, freePort, startCluster, startMock, startProgram, waitFor } from '../lib/harness.mjs';

const env = { TOLLGATE_LEDGER_GRANT_INTERVAL_MS: '100' };
let cluster;
let mock;
let second;

const { run, cli, json } = clusterCli(() => cluster);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const DAY = 86400000;

// UTC period starts, as the ledger counts them: days, ISO weeks from Monday, months.
function periodStart(every, date) {
  const d = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
  if (every === 'week') d.setUTCDate(d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
  if (every === 'month') d.setUTCDate(1);
  return d;
}

function periodsSince(every, start, now = new Date()) {
  let count = 0;
  const last = periodStart(every, now).getTime();
  for (const d = periodStart(every, start); d.getTime() <= last; count++) {
    if (every === 'day') d.setUTCDate(d.getUTCDate() + 1);
    else if (every === 'week') d.setUTCDate(d.getUTCDate() + 7);
    else d.setUTCMonth(d.getUTCMonth() + 1);
  }
  return count;
}

async function chat(key) {
  const response = await fetch(`${cluster.gateway}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model: 'fast', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }),
  });
  await response.text();
  return response.status;
}

before(async () => {
  mock = await startMock(['--models', 'fast']);
  cluster = await startCluster({ env });
  const [bind, control] = [await freePort(), await freePort()];
  second = startProgram('tollgate-ledger', ['--config', path.join(cluster.dir, 'tollgate.conf'),
    '--set', `ledger.bind=tcp://127.0.0.1:${bind}`, '--set', `ledger.control_bind=tcp://127.0.0.1:${control}`,
    '--set', 'ledger.metrics_listen='], { env });
  await cli('provider', 'add', 'mock', '--protocol', 'openai', '--base-url', mock.url);
  await cli('provider', 'key', 'add', 'mock', '--secret', 'sk-mock');
  await cli('model', 'add', 'fast', '--route', 'mock:fast', '--price-in', '1', '--price-out', '1000');
  await cli('account', 'add', 'team', '--balance', '0');
});

after(async () => {
  const stopped = await second?.stop();
  await cluster?.stop();
  await mock?.stop();
  assert.equal(stopped?.code, 0, second?.output());
  // The second ledger ran every round without a failed transaction (a period both took would
  // have been a failed or a doubled one; the counts above rule out the doubled).
  assert.doesNotMatch(second.output(), /grants: not granted|"level":"error"/, second.output());
});

describe('recurring grants', () => {
  test('a daily grant is granted once, in the journal, and billing admits on it', async () => {
    const created = (await cli('account', 'grant', 'team', '--amount', '5', '--every', 'day',
      '--reason', 'free tier')).trim().split('\n').pop();
    assert.match(created, /^grant \d+: account team gets 5\.00 every day from the day of \d{4}-\d{2}-\d{2}/);
    const key = (await cli('key', 'create', 'team')).trim().split('\n').pop();
    const list = await waitFor(async () => {
      const grants = (await json('account', 'grant', 'list', 'team')).data;
      return grants[0]?.granted_periods === 1 && grants;
    }, { timeout: 10000, message: 'the first period granted' });
    assert.equal(list[0].amount_micros, 5000000);
    assert.equal(list[0].every, 'day');
    assert.equal(list[0].status, 'active');
    assert.equal(list[0].reason, 'free tier');
    // Both ledgers keep checking; nothing more is granted this period.
    await sleep(1500);
    const entries = await cluster.psql(`SELECT e.kind, e.reason, e.created_by, l.amount_micros
      FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id
      JOIN ledger_accounts la ON la.id = l.ledger_account_id JOIN accounts a ON a.id = la.account_id
      WHERE a.name = 'team'`);
    assert.equal(entries.length, 1, JSON.stringify(entries));
    assert.equal(entries[0].kind, 'grant');
    assert.equal(entries[0].created_by, 'ledger');
    assert.equal(Number(entries[0].amount_micros), 5000000);
    assert.match(entries[0].reason, /^grant \d+: every day, the day from \d{4}-\d{2}-\d{2}$/);
    assert.equal((await json('account', 'show', 'team')).balance_micros, 5000000);
    // Billing rebased on the grant: a request that needs $4.096 of reservation is admitted.
    await waitFor(async () => (await chat(key)) === 200, { timeout: 10000, message: 'admitted on the granted credit' });
  });

  // Periods each ledger says it granted: the cluster's own (its log file) and the second one.
  function grantedBy() {
    const count = (text) => [...text.matchAll(/grants: (\d+) period/g)].reduce((n, m) => n + Number(m[1]), 0);
    return { first: count(fs.readFileSync(path.join(cluster.dir, 'log', 'ledger.log'), 'utf8')),
      second: count(second.output()) };
  }

  test('periods since a start in the past are each granted once, racing two ledgers', async () => {
    const before = grantedBy();
    const now = new Date();
    const plans = [];
    for (let i = 0; i < 8; i++) plans.push({ every: 'day', start: new Date(now - (20 + i) * DAY) });
    for (let i = 0; i < 4; i++) plans.push({ every: 'week', start: new Date(now - (30 + 7 * i) * DAY) });
    for (let i = 0; i < 3; i++) plans.push({ every: 'month', start: new Date(now - (70 + 31 * i) * DAY) });
    await cli('account', 'add', 'backfill', '--balance', '0');
    let expected = 0;
    const ids = [];
    for (const plan of plans) {
      const grant = await json('account', 'grant', 'backfill', '--amount', '0.25', '--every', plan.every,
        '--starts-at', plan.start.toISOString());
      ids.push(grant.id);
      expected += periodsSince(plan.every, plan.start);
    }
    assert.ok(expected > 200, `${expected} periods`);
    await waitFor(async () => {
      const [row] = await cluster.psql(`SELECT count(*) AS n FROM credit_grant_periods
        WHERE grant_id IN (${ids.join(',')})`);
      return Number(row.n) >= expected;
    }, { timeout: 20000, message: `${expected} periods granted` });
    await sleep(1000); // more rounds of both ledgers
    const [row] = await cluster.psql(`SELECT count(*) AS periods, count(DISTINCT (p.grant_id, p.period_start)) AS distinct_periods,
        count(e.id) AS entries, count(DISTINCT e.id) AS distinct_entries,
        (SELECT count(*) FROM journal_entries WHERE kind = 'grant' AND reason ~ ('^grant (' || '${ids.join('|')}' || '):')) AS journal
      FROM credit_grant_periods p LEFT JOIN journal_entries e ON e.id = p.entry_id AND e.kind = 'grant'
      WHERE p.grant_id IN (${ids.join(',')})`);
    assert.equal(Number(row.periods), expected);
    assert.equal(Number(row.distinct_periods), expected);
    assert.equal(Number(row.entries), expected);
    assert.equal(Number(row.distinct_entries), expected);
    assert.equal(Number(row.journal), expected);
    for (const [i, plan] of plans.entries()) {
      const grant = await json('account', 'grant', 'list', 'backfill').then((g) => g.data.find((x) => x.id === ids[i]));
      assert.equal(grant.granted_periods, periodsSince(plan.every, plan.start), `${plan.every} from ${plan.start.toISOString()}`);
      assert.equal(grant.granted_micros, 250000 * grant.granted_periods);
      assert.equal(grant.last_period.slice(0, 10), periodStart(plan.every, now).toISOString().slice(0, 10));
    }
    assert.equal((await json('account', 'show', 'backfill')).balance_micros, 250000 * expected);
    // Each period was granted by one ledger, and said so once: what the two
    // logged adds up to the periods. How they split them depends on timing
    // (about 60/40 on a quiet machine; under AddressSanitizer and load one
    // ledger can win every round), so the split is reported, not asserted.
    const after = grantedBy();
    const [byFirst, bySecond] = [after.first - before.first, after.second - before.second];
    assert.equal(byFirst + bySecond, expected, `granted ${byFirst} + ${bySecond}`);
    console.log(`# the first ledger granted ${byFirst}, the second ${bySecond} of ${expected}`);
    assert.match(await cli('ledger', 'check'), /ledger check: OK/);
  });

  test('a start in the future grants nothing yet; remove stops a grant', async () => {
    const later = await json('account', 'grant', 'team', '--amount', '1', '--every', 'month',
      '--starts-at', new Date(Date.now() + 400 * DAY).toISOString());
    await sleep(500);
    let grant = (await json('account', 'grant', 'list', 'team')).data.find((g) => g.id === later.id);
    assert.equal(grant.granted_periods, 0);
    assert.equal(grant.last_period, null);
    const removed = await cli('account', 'grant', 'rm', String(later.id));
    assert.match(removed, new RegExp(`^grant ${later.id} of account team removed; 0 period\\(s\\) were granted`));
    grant = (await json('account', 'grant', 'list', 'team')).data.find((g) => g.id === later.id);
    assert.equal(grant.status, 'removed');
    assert.ok(grant.removed_at);
    const [audit] = await cluster.psql(`SELECT count(*) AS n FROM audit_log WHERE action IN ('grant.create', 'grant.remove')`);
    assert.ok(Number(audit.n) >= 3);
  });

  test('bad grants are refused naming the field, and nothing is created', async () => {
    const [before] = await cluster.psql('SELECT count(*) AS n FROM credit_grants');
    for (const [args, message] of [
      [['--amount', '5', '--every', 'hour'], /'every' must be one of day, week, month/],
      [['--amount', '0', '--every', 'day'], /'amount' is out of range/],
      [['--amount', '-3', '--every', 'day'], /'amount'/],
      [['--amount', 'lots', '--every', 'day'], /'amount' must be a decimal/],
      [['--amount', '1', '--every', 'day', '--starts-at', 'soon'], /starts_at|timestamp|time/i]]) {
      const result = await run('account', 'grant', 'team', ...args);
      assert.equal(result.code, 1, `${args.join(' ')}: ${result.stdout}`);
      assert.match(result.stderr, message);
    }
    const missing = await run('account', 'grant', 'nobody', '--amount', '1', '--every', 'day');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /not found/);
    const usage = await run('account', 'grant', 'team', '--amount', '1');
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--every day\|week\|month/);
    const [afterCount] = await cluster.psql('SELECT count(*) AS n FROM credit_grants');
    assert.equal(afterCount.n, before.n);
  });
});
