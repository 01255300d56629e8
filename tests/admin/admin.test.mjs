// The admin API and the admin CLI against a real cluster: every kind of object created over
// HTTP and through `tollgate`, the errors (401, 400, 404, 405, 409), money that moves only by
// journal entry, client keys shown once and revocable, and secrets that never come back out
// of the API or into the logs.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { bin, run, startCluster } from '../lib/harness.mjs';

const sha256 = (text) => crypto.createHash('sha256').update(text).digest('hex');

// Everything a GET answered, to search for secrets at the end.
const seen = [];
// Secrets handed to the API: provider secrets, client keys.
const secrets = [];

let cluster;
let cliEnv;

// One admin call. Resolves { status, body } with the body parsed as JSON.
async function api(method, pathname, body, { token = cluster.token, raw } = {}) {
  const headers = {};
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (body !== undefined || raw !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(cluster.admin + pathname, {
    method,
    headers,
    body: raw !== undefined ? raw : body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (method === 'GET') seen.push(text);
  let parsed;
  try { parsed = JSON.parse(text); } catch { assert.fail(`${method} ${pathname}: not JSON: ${text}`); }
  assert.match(response.headers.get('content-type') || '', /application\/json/);
  return { status: response.status, body: parsed };
}

// usage may be partitioned by month (0004_billing.sql): rows in the future need their month.
async function ensureUsagePartition(target, day) {
  await target.psql(`DO $$ BEGIN
    IF to_regproc('tollgate_usage_partition') IS NOT NULL THEN
      PERFORM tollgate_usage_partition('${day}'::timestamptz);
    END IF; END $$`);
}

function assertError(answer, status, type, messagePart) {
  assert.equal(answer.status, status, JSON.stringify(answer.body));
  assert.equal(answer.body.error.type, type);
  assert.equal(typeof answer.body.error.message, 'string');
  if (messagePart) assert.match(answer.body.error.message, messagePart);
}

// The admin CLI: build/bin/tollgate, or $ADMIN_TEST_CLI while ops/main.c is not wired yet.
function cli(args, { input } = {}) {
  return run(process.env.ADMIN_TEST_CLI || bin('tollgate'), args, { env: cliEnv, input });
}

before(async () => {
  cluster = await startCluster();
  cliEnv = { TOLLGATE_ADMIN_URL: cluster.admin, TOLLGATE_ADMIN_TOKEN: cluster.token };
});

after(async () => {
  if (cluster) await cluster.stop();
});

describe('admin API', () => {
  test('refuses requests without the admin token', async () => {
    assertError(await api('GET', '/admin/providers', undefined, { token: null }), 401,
      'authentication_error');
    assertError(await api('GET', '/admin/providers', undefined, { token: 'tga_wrong' }), 401,
      'authentication_error');
    assertError(await api('GET', '/admin/providers', undefined, { token: cluster.token.slice(0, -1) }),
      401, 'authentication_error');
    // Before routing: an unknown path does not tell an outsider it is unknown.
    assertError(await api('GET', '/admin/nothing', undefined, { token: null }), 401,
      'authentication_error');
  });

  test('answers 404, 405 and 400 for what is not there or malformed', async () => {
    assertError(await api('GET', '/admin/nothing'), 404, 'not_found');
    assertError(await api('PUT', '/admin/providers', {}), 405, 'method_not_allowed');
    assertError(await api('POST', '/admin/providers', undefined, { raw: '{"name":' }), 400,
      'invalid_request_error', /JSON/);
    assertError(await api('POST', '/admin/providers', undefined, { raw: '[1,2]' }), 400,
      'invalid_request_error', /object/);
    assertError(await api('POST', '/admin/providers', { protocol: 'openai', base_url: 'http://x' }),
      400, 'invalid_request_error', /'name' is required/);
    assertError(await api('POST', '/admin/providers',
      { name: 'p', protocol: 'cohere', base_url: 'http://x' }), 400, 'invalid_request_error',
    /'protocol'/);
    assertError(await api('POST', '/admin/providers',
      { name: 'p', protocol: 'openai', base_url: 'ftp://x' }), 400, 'invalid_request_error',
    /'base_url'/);
    assertError(await api('POST', '/admin/providers',
      { name: 'p', protocol: 'openai', base_url: 'http://x', colour: 'red' }), 400,
    'invalid_request_error', /unknown field 'colour'/);
    assertError(await api('GET', '/admin/providers/nobody'), 404, 'not_found', /nobody/);
    assertError(await api('GET', '/admin/accounts/nobody'), 404, 'not_found');
    assertError(await api('GET', '/admin/models/nobody'), 404, 'not_found');
    assertError(await api('GET', '/admin/keys/999999'), 404, 'not_found');
    assertError(await api('GET', '/admin/keys/abc'), 404, 'not_found');
    assertError(await api('DELETE', '/admin/routes/999999'), 404, 'not_found');
    // Money is exact decimal text: no exponents, no floats, no more than 6 places.
    for (const price of ['1e3', '0.0000001', '-1', 'ten']) {
      assertError(await api('POST', '/admin/models', { name: 'bad-price', price_in: price }), 400,
        'invalid_request_error', /'price_in'/);
    }
    assertError(await api('POST', '/admin/models', { name: 'bad-price', price_in: 2.5 }), 400,
      'invalid_request_error', /decimal string/);
    assertError(await api('GET', '/admin/usage?limit=0'), 400, 'invalid_request_error');
    assertError(await api('GET', '/admin/usage?before=yesterday-ish'), 400, 'invalid_request_error');
  });

  test('providers and their keys; secrets are sealed and never returned', async () => {
    const created = await api('POST', '/admin/providers',
      { name: 'upstream-a', protocol: 'openai', base_url: 'http://127.0.0.1:9/v1/', priority: 5 });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.name, 'upstream-a');
    assert.equal(created.body.base_url, 'http://127.0.0.1:9/v1', 'trailing slash dropped');
    assert.equal(created.body.priority, 5);
    assert.equal(created.body.weight, 1);
    assert.equal(created.body.status, 'active');
    assertError(await api('POST', '/admin/providers',
      { name: 'upstream-a', protocol: 'anthropic', base_url: 'http://127.0.0.1:9' }), 409,
    'conflict', /upstream-a/);

    const secret = `sk-admin-test-${crypto.randomBytes(12).toString('hex')}`;
    secrets.push(secret);
    const key = await api('POST', '/admin/providers/upstream-a/keys', { secret, weight: 2 });
    assert.equal(key.status, 201, JSON.stringify(key.body));
    assert.equal(key.body.secret_hint, `\u2026${secret.slice(-4)}`);
    assert.equal(key.body.provider, 'upstream-a');
    assert.equal(key.body.weight, 2);
    assert.ok(!JSON.stringify(key.body).includes(secret));
    assertError(await api('POST', '/admin/providers/upstream-a/keys', {}), 400,
      'invalid_request_error', /'secret' is required/);
    assertError(await api('POST', '/admin/providers/nobody/keys', { secret: 'x' }), 404, 'not_found');

    // Stored sealed: neither the secret nor its hint's source appear in the table.
    const [row] = await cluster.psql(
      `SELECT encode(secret_sealed, 'escape') AS sealed, length(secret_nonce) AS nonce FROM provider_keys WHERE id = ${key.body.id}`);
    assert.equal(row.nonce, '24');
    assert.ok(!row.sealed.includes(secret));

    const list = await api('GET', '/admin/providers/upstream-a/keys');
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.data.map((k) => k.id), [key.body.id]);
    const byId = await api('GET', `/admin/providers/${created.body.id}`);
    assert.equal(byId.body.name, 'upstream-a');
    assert.equal(byId.body.active_keys, 1);

    const patched = await api('PATCH', `/admin/provider-keys/${key.body.id}`,
      { status: 'disabled', disabled_reason: 'quota exhausted' });
    assert.equal(patched.status, 200);
    assert.equal(patched.body.status, 'disabled');
    assert.equal(patched.body.disabled_reason, 'quota exhausted');
    const gone = await api('DELETE', `/admin/providers/${created.body.id}`);
    assert.equal(gone.body.status, 'disabled', 'DELETE disables');
    const back = await api('PATCH', `/admin/providers/${created.body.id}`, { status: 'active', weight: 3 });
    assert.equal(back.body.status, 'active');
    assert.equal(back.body.weight, 3);
    assertError(await api('PATCH', `/admin/providers/${created.body.id}`, {}), 400,
      'invalid_request_error', /nothing to change/);
  });

  test('models with routes; route conflicts; prices in exact micro-units', async () => {
    const model = await api('POST', '/admin/models', {
      name: 'team/gpt-x',
      price_in: '2.50',
      price_out_micros: 10000000,
      routes: [{ provider: 'upstream-a' }, { provider: 'upstream-a', upstream_model: 'gpt-x-2024', priority: 1 }],
    });
    assert.equal(model.status, 201, JSON.stringify(model.body));
    assert.equal(model.body.price_in_micros, 2500000);
    assert.equal(model.body.price_out_micros, 10000000);
    assert.deepEqual(model.body.routes.map((r) => r.upstream_model), ['gpt-x-2024', 'team/gpt-x']);

    assertError(await api('POST', '/admin/models', { name: 'team/gpt-x' }), 409, 'conflict');
    assertError(await api('POST', '/admin/models', { name: 'lonely', routes: [{ provider: 'nobody' }] }),
      404, 'not_found', /nobody/);
    assert.equal((await api('GET', '/admin/models/lonely')).status, 404, 'failed create left nothing');
    assertError(await api('POST', '/admin/models', { name: 'lonely', routes: [{ upstream_model: 'x' }] }),
      400, 'invalid_request_error', /routes\[0\]: 'provider' is required/);

    // A name with '/' is one path parameter.
    const fetched = await api('GET', `/admin/models/${encodeURIComponent('team/gpt-x')}`);
    assert.equal(fetched.status, 200);
    assert.equal(fetched.body.id, model.body.id);
    const route = await api('POST', `/admin/models/${encodeURIComponent('team/gpt-x')}/routes`,
      { provider: 'upstream-a', upstream_model: 'gpt-x-mini', weight: 4 });
    assert.equal(route.status, 201, JSON.stringify(route.body));
    assert.equal(route.body.weight, 4);
    assertError(await api('POST', `/admin/models/${encodeURIComponent('team/gpt-x')}/routes`,
      { provider: 'upstream-a', upstream_model: 'gpt-x-mini' }), 409, 'conflict');
    const deleted = await api('DELETE', `/admin/routes/${route.body.id}`);
    assert.equal(deleted.status, 200);
    assertError(await api('DELETE', `/admin/routes/${route.body.id}`), 404, 'not_found');

    const repriced = await api('PATCH', `/admin/models/${encodeURIComponent('team/gpt-x')}`,
      { price_in: '0.000001', status: 'disabled' });
    assert.equal(repriced.body.price_in_micros, 1);
    assert.equal(repriced.body.status, 'disabled');
    const list = await api('GET', '/admin/models');
    assert.ok(list.body.data.some((m) => m.name === 'team/gpt-x'));
  });

  test('accounts: opening balance and top-ups are journal entries that balance', async () => {
    const account = await api('POST', '/admin/accounts',
      { name: 'acme corp', balance: '10.50', allowed_models: ['team/gpt-x'] });
    assert.equal(account.status, 201, JSON.stringify(account.body));
    assert.equal(account.body.balance_micros, 10500000);
    assert.deepEqual(account.body.allowed_models, ['team/gpt-x']);
    assertError(await api('POST', '/admin/accounts', { name: 'acme corp' }), 409, 'conflict');
    assertError(await api('POST', '/admin/accounts', { name: 'negative', balance: '-1' }), 400,
      'invalid_request_error', /'balance'/);

    const topup = await api('POST', `/admin/accounts/${encodeURIComponent('acme corp')}/topup`,
      { amount: '2.25', reason: 'invoice 42' });
    assert.equal(topup.status, 200, JSON.stringify(topup.body));
    assert.equal(topup.body.balance_micros, 12750000);
    assert.equal(topup.body.journal_entry.kind, 'topup');
    const adjustment = await api('POST', `/admin/accounts/${account.body.id}/topup`,
      { amount_micros: -750000, reason: 'goodwill reversal' });
    assert.equal(adjustment.body.balance_micros, 12000000);
    assert.equal(adjustment.body.journal_entry.kind, 'adjustment');
    assertError(await api('POST', `/admin/accounts/${account.body.id}/topup`, { amount: '0' }), 400,
      'invalid_request_error', /zero/);
    assertError(await api('POST', `/admin/accounts/${account.body.id}/topup`, {}), 400,
      'invalid_request_error', /'amount' is required/);

    // The ledger check: the account's balance equals the sum of its lines, every entry
    // sums to zero, and the three entries are there with their kinds.
    const [check] = await cluster.psql(`
      SELECT a.balance_micros,
             (SELECT sum(l.amount_micros) FROM journal_lines l JOIN ledger_accounts la
                ON la.id = l.ledger_account_id WHERE la.account_id = a.id) AS lines,
             (SELECT string_agg(e.kind || ':' || e.reason, ',' ORDER BY e.id) FROM journal_entries e
                WHERE e.id IN (SELECT l.entry_id FROM journal_lines l JOIN ledger_accounts la
                  ON la.id = l.ledger_account_id WHERE la.account_id = a.id)) AS entries,
             (SELECT count(*) FROM (SELECT entry_id FROM journal_lines GROUP BY entry_id
                HAVING sum(amount_micros) <> 0) unbalanced) AS unbalanced
      FROM accounts a WHERE a.name = 'acme corp'`);
    assert.equal(check.balance_micros, '12000000');
    assert.equal(check.lines, '12000000');
    assert.equal(check.entries, 'topup:initial balance,topup:invoice 42,adjustment:goodwill reversal');
    assert.equal(check.unbalanced, '0');

    const patched = await api('PATCH', `/admin/accounts/${account.body.id}`,
      { rpm_limit: 60, daily_spend: '5', allowed_models: null });
    assert.equal(patched.body.rpm_limit, 60);
    assert.equal(patched.body.daily_spend_micros, 5000000);
    assert.equal(patched.body.allowed_models, null);
    const shown = await api('GET', `/admin/accounts/${encodeURIComponent('acme corp')}`);
    assert.equal(shown.body.balance_micros, 12000000);
    assert.equal(shown.body.currency, 'USD');
  });

  test('client keys: shown once, stored as a hash, revocable by id or by key', async () => {
    const created = await api('POST', '/admin/keys',
      { account: 'acme corp', name: 'ci', models: ['team/gpt-x'], expires_at: '2099-01-01T00:00:00Z' });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const { key } = created.body;
    secrets.push(key);
    assert.match(key, /^tg-[0-9a-f]{48}$/);
    assert.equal(created.body.prefix, key.slice(0, 10));
    assert.deepEqual(created.body.models, ['team/gpt-x']);
    const [row] = await cluster.psql(`SELECT key_hash, key_prefix FROM api_keys WHERE id = ${created.body.id}`);
    assert.equal(row.key_hash, sha256(key));
    assert.equal(row.key_prefix, key.slice(0, 10));

    const one = await api('GET', `/admin/keys/${created.body.id}`);
    assert.equal(one.body.key, undefined);
    assert.equal(one.body.prefix, key.slice(0, 10));
    const list = await api('GET', `/admin/keys?account=${encodeURIComponent('acme corp')}`);
    assert.ok(list.body.data.some((k) => k.id === created.body.id));
    for (const text of [JSON.stringify(one.body), JSON.stringify(list.body)]) {
      assert.ok(!text.includes(key), 'the key is never listed');
      assert.ok(!text.includes(row.key_hash), 'nor its hash');
    }
    assertError(await api('POST', '/admin/keys', { account: 'nobody' }), 404, 'not_found');
    assertError(await api('POST', '/admin/keys', { account: 'acme corp', expires_at: 'soon' }), 400,
      'invalid_request_error');

    // Revoke by the key itself (in the body, so it stays out of URLs) and by id.
    const revoked = await api('POST', '/admin/keys/revoke', { key });
    assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
    assert.equal(revoked.body.status, 'revoked');
    assertError(await api('PATCH', `/admin/keys/${created.body.id}`, { status: 'active' }), 409, 'conflict');
    const second = await api('POST', '/admin/keys', { account: 'acme corp' });
    secrets.push(second.body.key);
    assert.equal((await api('POST', `/admin/keys/${second.body.id}/revoke`)).body.status, 'revoked');
    const third = await api('POST', '/admin/keys', { account: 'acme corp' });
    secrets.push(third.body.key);
    assert.equal((await api('POST', `/admin/keys/${third.body.key}/revoke`)).body.status, 'revoked');
    const fourth = await api('POST', '/admin/keys', { account: 'acme corp' });
    secrets.push(fourth.body.key);
    assert.equal((await api('DELETE', `/admin/keys/${fourth.body.id}`)).body.status, 'revoked');
    assertError(await api('POST', '/admin/keys/revoke', { key: 'tg-000000000000000000000000000000000000000000000000' }),
      404, 'not_found');
  });

  test('usage pages by started_at; status counts every table', async () => {
    const [account] = await cluster.psql("SELECT id FROM accounts WHERE name = 'acme corp'");
    await ensureUsagePartition(cluster, '2030-01-01');
    await cluster.psql(`INSERT INTO usage (request_id, started_at, account_id, api_key_id, model, status,
        tokens_in, tokens_out, cost_micros) VALUES
      ('admin-test-1', '2030-01-01T00:00:01Z', ${account.id}, 1, 'team/gpt-x', 200, 10, 5, 100),
      ('admin-test-2', '2030-01-01T00:00:02Z', ${account.id}, 1, 'team/gpt-x', 200, 10, 5, 100),
      ('admin-test-3', '2030-01-01T00:00:03Z', ${account.id}, 1, 'team/gpt-x', 502, 0, 0, 0)`);
    const first = await api('GET', `/admin/usage?account=${encodeURIComponent('acme corp')}&limit=2`);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.deepEqual(first.body.data.map((u) => u.request_id), ['admin-test-3', 'admin-test-2']);
    assert.ok(first.body.next_before);
    const next = await api('GET',
      `/admin/usage?account=${account.id}&limit=2&before=${encodeURIComponent(first.body.next_before)}`);
    assert.deepEqual(next.body.data.map((u) => u.request_id), ['admin-test-1']);
    assert.equal(next.body.next_before, null);

    const status = await api('GET', '/admin/status');
    assert.equal(status.status, 200);
    assert.ok(Date.parse(status.body.time) > 0);
    for (const table of ['accounts', 'api_keys', 'providers', 'provider_keys', 'models', 'routes',
      'usage', 'journal_entries']) {
      assert.equal(typeof status.body.counts[table], 'number', table);
    }
    assert.ok(status.body.counts.usage >= 3);
  });
});

describe('admin CLI', () => {
  test('creates and lists every kind of object; key shown once on the last line', async () => {
    let result = await cli(['provider', 'add', 'cli-up', '--protocol', 'anthropic',
      '--base-url', 'http://127.0.0.1:9', '--priority', '2']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /cli-up/);

    const secret = `sk-ant-cli-${crypto.randomBytes(12).toString('hex')}`;
    secrets.push(secret);
    result = await cli(['provider', 'key', 'add', 'cli-up', '--secret', secret, '--weight', '2']);
    assert.equal(result.code, 0, result.stderr);
    assert.ok(!result.stdout.includes(secret));
    const stdinSecret = `sk-ant-stdin-${crypto.randomBytes(12).toString('hex')}`;
    secrets.push(stdinSecret);
    result = await cli(['provider', 'key', 'add', 'cli-up', '--secret', '-'], { input: `${stdinSecret}\n` });
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, new RegExp(stdinSecret.slice(-4)));

    result = await cli(['provider', 'list', '--json']);
    assert.equal(result.code, 0, result.stderr);
    const providers = JSON.parse(result.stdout).data;
    assert.equal(providers.find((p) => p.name === 'cli-up').active_keys, 2);
    seen.push(result.stdout);
    result = await cli(['provider', 'list']);
    assert.match(result.stdout, /^ID\s+NAME/);
    assert.match(result.stdout, /cli-up\s+anthropic/);

    result = await cli(['model', 'add', 'cli-model', '--route', 'cli-up:claude-x:v1', '--route', 'cli-up',
      '--price-in', '3', '--price-out', '15.5']);
    assert.equal(result.code, 0, result.stderr);
    result = await cli(['model', 'list', '--json']);
    const model = JSON.parse(result.stdout).data.find((m) => m.name === 'cli-model');
    assert.equal(model.price_in_micros, 3000000);
    assert.equal(model.price_out_micros, 15500000);
    assert.deepEqual(model.routes.map((r) => r.upstream_model).sort(), ['claude-x:v1', 'cli-model']);

    result = await cli(['account', 'add', 'cli team', '--balance', '7.25']);
    assert.equal(result.code, 0, result.stderr);
    result = await cli(['account', 'show', 'cli team', '--json']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(JSON.parse(result.stdout).name, 'cli team');
    assert.equal(JSON.parse(result.stdout).balance_micros, 7250000);
    result = await cli(['account', 'topup', 'cli team', '2.75', '--reason', 'cli topup']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /10\.00/);
    result = await cli(['account', 'topup', 'cli team', '-1']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(JSON.parse((await cli(['account', 'show', 'cli team', '--json'])).stdout).balance_micros,
      9000000);
    const [entry] = await cluster.psql(`SELECT count(*) AS n FROM journal_entries e
      JOIN journal_lines l ON l.entry_id = e.id JOIN ledger_accounts la ON la.id = l.ledger_account_id
      JOIN accounts a ON a.id = la.account_id WHERE a.name = 'cli team'`);
    assert.equal(entry.n, '3');

    result = await cli(['key', 'create', 'cli team', '--name', 'laptop', '--models', 'cli-model,team/gpt-x']);
    assert.equal(result.code, 0, result.stderr);
    const key = result.stdout.trim().split('\n').pop();
    secrets.push(key);
    assert.match(key, /^tg-[0-9a-f]{48}$/);
    result = await cli(['key', 'list', '--account', 'cli team', '--json']);
    assert.equal(result.code, 0, result.stderr);
    seen.push(result.stdout);
    const listed = JSON.parse(result.stdout).data;
    assert.equal(listed.length, 1);
    assert.deepEqual(listed[0].models, ['cli-model', 'team/gpt-x']);
    assert.equal(listed[0].status, 'active');
    result = await cli(['key', 'list', '--account', 'cli team']);
    assert.ok(!result.stdout.includes(key));
    result = await cli(['key', 'revoke', key]);
    assert.equal(result.code, 0, result.stderr);
    result = await cli(['key', 'list', '--account', 'cli team', '--json']);
    assert.equal(JSON.parse(result.stdout).data[0].status, 'revoked');
  });

  test('usage errors exit 2, server errors exit 1 with the server message', async () => {
    let result = await cli(['account', 'show']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /usage: tollgate account show/);
    result = await cli(['provider', 'add', 'x', '--protocol', 'openai', '--base-url', 'http://x', '--colour', 'red']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /unknown option --colour/);
    result = await cli(['account', 'show', 'nobody-here']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /account 'nobody-here' not found/);
    result = await cli(['provider', 'add', 'cli-up', '--protocol', 'openai', '--base-url', 'http://x']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /already taken/);
    result = await run(process.env.ADMIN_TEST_CLI || bin('tollgate'), ['provider', 'list'],
      { env: { ...cliEnv, TOLLGATE_ADMIN_TOKEN: 'tga_wrong' } });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /admin token/);
    // Without the environment the CLI finds the cluster through its state folder.
    result = await run(process.env.ADMIN_TEST_CLI || bin('tollgate'), ['account', 'list', '--dir', cluster.dir],
      { env: { TOLLGATE_ADMIN_URL: '', TOLLGATE_ADMIN_TOKEN: '' } });
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /cli team/);
  });
});

describe('secrets', () => {
  test('no provider secret or client key in any GET answer or any log', async () => {
    // One more look at everything listable, after all the changes.
    for (const pathname of ['/admin/providers', '/admin/providers/upstream-a/keys',
      '/admin/providers/cli-up/keys', '/admin/keys', '/admin/accounts', '/admin/models']) {
      assert.equal((await api('GET', pathname)).status, 200, pathname);
    }
    assert.ok(secrets.length >= 5);
    for (const text of seen) {
      for (const secret of secrets) assert.ok(!text.includes(secret), 'a GET answer holds a secret');
      assert.ok(!text.includes(cluster.token), 'a GET answer holds the admin token');
    }
    const logs = path.join(cluster.dir, 'log');
    const files = fs.readdirSync(logs, { recursive: true })
      .map((name) => path.join(logs, name)).filter((file) => fs.statSync(file).isFile());
    assert.ok(files.length > 0);
    for (const file of files) {
      const text = fs.readFileSync(file, 'utf8');
      for (const secret of secrets) {
        assert.ok(!text.includes(secret), `${path.basename(file)} holds a secret (${secret.slice(0, 8)}...)`);
      }
      assert.ok(!text.includes(cluster.token), `${path.basename(file)} holds the admin token`);
    }
  });
});
