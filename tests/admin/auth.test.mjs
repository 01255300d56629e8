// Admin access against a real cluster (tollgate-admin): the bootstrap token until the first
// owner and its rate limit, logins and sessions, roles (a viewer changes nothing), scoped API
// tokens, lockout per (user, client address) and per address with its back-off and expiry,
// password hashing off every loop that serves traffic, the audit log of every kind of change,
// and no secret in the audit table or in any log.
//
// Failed logins come from other loopback addresses (127.0.0.2 and up, which Linux routes
// to 127.0.0.1's listener), so the per-IP lockout they cause does not lock the rest of the
// suite out of 127.0.0.1.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { bin, freePort, run, startCluster, startProgram, waitFor } from '../lib/harness.mjs';

// Also the window the failures are counted in: five argon2id refusals must fit in it on a
// loaded 2-core machine (at 2 s, the first ones fell out of it before the fifth and no lock came).
const LOCKOUT_MS = 6000;
let cluster;
// Every secret handed to or received from the API, to search for at the end.
const secrets = [];
const password = (label) => {
  const text = `${label}-pw-${crypto.randomBytes(8).toString('hex')}`;
  secrets.push(text);
  return text;
};

// One admin call from a chosen source address. Resolves { status, body }.
function api(method, pathname, body, { token, from = '127.0.0.1' } = {}) {
  const url = new URL(cluster.admin + pathname);
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  const payload = body === undefined ? undefined : JSON.stringify(body);
  if (payload !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = Buffer.byteLength(payload);
  }
  return new Promise((resolve, reject) => {
    const request = http.request({
      host: url.hostname, port: url.port, path: url.pathname + url.search, method, headers,
      localAddress: from, agent: false,
    }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => { text += chunk; });
      response.on('end', () => {
        try {
          resolve({ status: response.statusCode, body: JSON.parse(text) });
        } catch {
          reject(new Error(`${method} ${pathname}: not JSON: ${text}`));
        }
      });
    });
    request.on('error', reject);
    request.end(payload);
  });
}

function assertStatus(answer, status, type) {
  assert.equal(answer.status, status, JSON.stringify(answer.body));
  if (type) assert.equal(answer.body.error.type, type);
}

async function login(username, pw, options = {}) {
  const answer = await api('POST', '/admin/login', { username, password: pw, ...options.body },
    { from: options.from });
  if (answer.status === 200) secrets.push(answer.body.token);
  return answer;
}

// Fills a route's {placeholders} with something that names nothing.
const fill = (route) => route.replace(/\{[^}]+\}/g, '999999');

const users = {};
let bootstrap;

before(async () => {
  cluster = await startCluster({ env: { TOLLGATE_ADMIN_LOCKOUT_MS: String(LOCKOUT_MS) } });
  bootstrap = cluster.token;
});

after(async () => {
  if (cluster) await cluster.stop();
});

describe('bootstrap', () => {
  test('wrong bootstrap tokens from one address are refused after 10, even the right one', async () => {
    for (let i = 0; i < 10; i++) {
      assertStatus(await api('GET', '/admin/me', undefined, { token: `tga_guess${i}`, from: '127.0.0.6' }),
        401, 'authentication_error');
    }
    const limited = await api('GET', '/admin/me', undefined, { token: bootstrap, from: '127.0.0.6' });
    assertStatus(limited, 429, 'rate_limited');
    assert.ok(limited.body.error.retry_after_s >= 1);
    // Another address is not held back by the guesses.
    assertStatus(await api('GET', '/admin/me', undefined, { token: bootstrap, from: '127.0.0.7' }), 200);
    const [{ n }] = await cluster.psql("SELECT count(*) AS n FROM login_attempts WHERE client_ip = '127.0.0.6'");
    assert.equal(n, '10', 'refused tokens are not counted again');
  });

  test('the bootstrap token is an owner until one exists, and can be rotated', async () => {
    const me = await api('GET', '/admin/me', undefined, { token: bootstrap });
    assertStatus(me, 200);
    assert.equal(me.body.kind, 'bootstrap');
    assert.equal(me.body.role, 'owner');
    assertStatus(await api('GET', '/admin/me', undefined, { token: 'tga_wrong' }), 401,
      'authentication_error');
    assertStatus(await api('GET', '/admin/nothing'), 401, 'authentication_error');

    const rotated = await api('POST', '/admin/bootstrap/rotate', undefined, { token: bootstrap });
    assertStatus(rotated, 200);
    assert.match(rotated.body.token, /^tga_[0-9a-f]{64}$/);
    assert.equal(rotated.body.usable, true);
    secrets.push(rotated.body.token);
    assertStatus(await api('GET', '/admin/me', undefined, { token: bootstrap }), 401);
    bootstrap = rotated.body.token;
    assertStatus(await api('GET', '/admin/providers', undefined, { token: bootstrap }), 200);
  });

  test('creating users checks names, passwords and roles; the first owner retires bootstrap', async () => {
    const token = bootstrap;
    assertStatus(await api('POST', '/admin/users', { username: 'root', password: 'short', role: 'owner' },
      { token }), 400, 'invalid_request_error');
    assertStatus(await api('POST', '/admin/users', { username: 'a b', password: 'long enough password', role: 'owner' },
      { token }), 400, 'invalid_request_error');
    assertStatus(await api('POST', '/admin/users', { username: 'root', password: 'long enough password', role: 'god' },
      { token }), 400, 'invalid_request_error');
    // A viewer first: the bootstrap token keeps working until an *owner* exists.
    users.viewer = { name: 'vera', password: password('vera') };
    const viewer = await api('POST', '/admin/users',
      { username: users.viewer.name, password: users.viewer.password, role: 'viewer' }, { token });
    assertStatus(viewer, 201);
    assert.equal(viewer.body.role, 'viewer');
    assert.equal(viewer.body.password_hash, undefined);
    assertStatus(await api('GET', '/admin/me', undefined, { token }), 200);

    users.owner = { name: 'olga', password: password('olga') };
    const owner = await api('POST', '/admin/users',
      { username: users.owner.name, password: users.owner.password, role: 'owner' }, { token });
    assertStatus(owner, 201);
    assertStatus(await api('POST', '/admin/users',
      { username: 'olga', password: 'another long password', role: 'owner' }, { token }), 401);
    const retired = await api('GET', '/admin/me', undefined, { token });
    assertStatus(retired, 401, 'authentication_error');
    assert.match(retired.body.error.message, /retired/);

    const [row] = await cluster.psql("SELECT password_hash FROM admin_users WHERE username = 'olga'");
    assert.match(row.password_hash, /^\$argon2id\$/);
  });
});

describe('sessions', () => {
  test('login gives a session token with an expiry; wrong passwords do not', async () => {
    const answer = await login(users.owner.name, users.owner.password);
    assertStatus(answer, 200);
    assert.match(answer.body.token, /^tgs_[0-9a-f]{64}$/);
    assert.ok(Date.parse(answer.body.expires_at) > Date.now());
    assert.equal(answer.body.user.role, 'owner');
    users.owner.token = answer.body.token;
    const [row] = await cluster.psql(`SELECT count(*) AS n FROM admin_sessions WHERE token_hash =
      '${crypto.createHash('sha256').update(answer.body.token).digest('hex')}'`);
    assert.equal(row.n, '1', 'only the hash is stored');

    assertStatus(await login(users.owner.name, 'not the password', { from: '127.0.0.9' }), 401,
      'authentication_error');
    assertStatus(await login('nobody', 'not the password', { from: '127.0.0.9' }), 401,
      'authentication_error');
    const me = await api('GET', '/admin/me', undefined, { token: users.owner.token });
    assert.equal(me.body.kind, 'session');
    assert.equal(me.body.name, 'olga');

    users.operator = { name: 'otto', password: password('otto') };
    assertStatus(await api('POST', '/admin/users',
      { username: users.operator.name, password: users.operator.password, role: 'operator' },
      { token: users.owner.token }), 201);
    for (const who of ['viewer', 'operator']) {
      const session = await login(users[who].name, users[who].password);
      assertStatus(session, 200);
      users[who].token = session.body.token;
    }
  });

  test('logout, revocation, expiry and disabling end sessions', async () => {
    const first = await login(users.viewer.name, users.viewer.password);
    assertStatus(await api('POST', '/admin/logout', undefined, { token: first.body.token }), 200);
    assertStatus(await api('GET', '/admin/me', undefined, { token: first.body.token }), 401);

    const second = await login(users.viewer.name, users.viewer.password);
    const sessions = await api('GET', '/admin/sessions?user=vera', undefined, { token: users.owner.token });
    assertStatus(sessions, 200);
    const { id } = sessions.body.data[0]; // newest first: the second login
    assert.equal(sessions.body.data[0].username, 'vera');
    assertStatus(await api('DELETE', `/admin/sessions/${id}`, undefined, { token: users.owner.token }), 200);
    assertStatus(await api('GET', '/admin/me', undefined, { token: second.body.token }), 401);

    // Expiry: set in the past in the database, and a short session that runs out by itself.
    const third = await login(users.viewer.name, users.viewer.password);
    const hash = crypto.createHash('sha256').update(third.body.token).digest('hex');
    await cluster.psql(`UPDATE admin_sessions SET expires_at = now() - interval '1 second' WHERE token_hash = '${hash}'`);
    const expired = await api('GET', '/admin/me', undefined, { token: third.body.token });
    assertStatus(expired, 401);
    assert.match(expired.body.error.message, /session/);
    const short = await login(users.viewer.name, users.viewer.password, { body: { expires_in_s: 1 } });
    assertStatus(short, 200);
    assert.ok(Date.parse(short.body.expires_at) - Date.now() < 2000);
    await waitFor(async () => (await api('GET', '/admin/me', undefined, { token: short.body.token })).status === 401,
      { timeout: 5000, message: 'the 1 s session to expire' });

    // Disabling a user ends their sessions; enabling does not bring them back.
    const fourth = await login(users.viewer.name, users.viewer.password);
    assertStatus(await api('DELETE', '/admin/users/vera', undefined, { token: users.owner.token }), 200);
    assertStatus(await api('GET', '/admin/me', undefined, { token: fourth.body.token }), 401);
    assertStatus(await api('GET', '/admin/me', undefined, { token: users.viewer.token }), 401);
    assertStatus(await login(users.viewer.name, users.viewer.password), 401);
    assertStatus(await api('PATCH', '/admin/users/vera', { status: 'active' }, { token: users.owner.token }), 200);
    assertStatus(await api('GET', '/admin/me', undefined, { token: fourth.body.token }), 401);
    users.viewer.token = (await login(users.viewer.name, users.viewer.password)).body.token;
  });

  test('the last active owner cannot be disabled or demoted', async () => {
    const token = users.owner.token;
    assertStatus(await api('DELETE', '/admin/users/olga', undefined, { token }), 409, 'conflict');
    assertStatus(await api('PATCH', '/admin/users/olga', { role: 'operator' }, { token }), 409, 'conflict');
    assertStatus(await api('GET', '/admin/me', undefined, { token }), 200);
  });
});

describe('roles', () => {
  test('a viewer reads but cannot change anything: every mutating route is 403', async () => {
    const routes = await api('GET', '/admin/routes', undefined, { token: users.viewer.token });
    assertStatus(routes, 200);
    let checked = 0;
    for (const route of routes.body.data) {
      // Reads, and the one POST that only asks (routing/decide, open to viewers), are not changes.
      if (route.method === 'GET' || ['public', 'any', 'viewer'].includes(route.access)) continue;
      const answer = await api(route.method, fill(route.path), {}, { token: users.viewer.token });
      assertStatus(answer, 403, 'permission_error');
      checked++;
    }
    assert.ok(checked >= 25, `only ${checked} mutating routes`);
    assertStatus(await api('GET', '/admin/providers', undefined, { token: users.viewer.token }), 200);
    assertStatus(await api('GET', '/admin/users', undefined, { token: users.viewer.token }), 403);
    const [{ n }] = await cluster.psql("SELECT count(*) AS n FROM audit_log WHERE actor = 'user:vera' AND action NOT IN ('login', 'logout')");
    assert.equal(n, '0', 'a refused request leaves no audit row');
  });

  test('an operator changes configuration but not access', async () => {
    const token = users.operator.token;
    assertStatus(await api('POST', '/admin/providers',
      { name: 'op-provider', protocol: 'openai', base_url: 'http://127.0.0.1:9' }, { token }), 201);
    for (const [method, pathname] of [['POST', '/admin/users'], ['GET', '/admin/users'],
      ['POST', '/admin/tokens'], ['GET', '/admin/tokens'], ['GET', '/admin/sessions'],
      ['DELETE', '/admin/sessions/1'], ['POST', '/admin/bootstrap/rotate']]) {
      assertStatus(await api(method, pathname, method === 'GET' ? undefined : {}, { token }), 403,
        'permission_error');
    }
    assertStatus(await api('GET', '/admin/audit', undefined, { token }), 200);
  });
});

describe('API tokens', () => {
  test('scoped tokens: shown once, their role applies, revocable, expiring', async () => {
    const owner = users.owner.token;
    const viewer = await api('POST', '/admin/tokens', { name: 'grafana', role: 'viewer' }, { token: owner });
    assertStatus(viewer, 201);
    assert.match(viewer.body.token, /^tgt_[0-9a-f]{64}$/);
    secrets.push(viewer.body.token);
    const operator = await api('POST', '/admin/tokens',
      { name: 'ci', role: 'operator', expires_at: '2099-01-01T00:00:00Z' }, { token: owner });
    assertStatus(operator, 201);
    secrets.push(operator.body.token);
    assertStatus(await api('POST', '/admin/tokens', { name: 'old', role: 'viewer', expires_at: '2001-01-01T00:00:00Z' },
      { token: owner }), 400);
    assertStatus(await api('POST', '/admin/tokens', { name: 'x', role: 'root' }, { token: owner }), 400);

    assertStatus(await api('GET', '/admin/models', undefined, { token: viewer.body.token }), 200);
    assertStatus(await api('POST', '/admin/models', { name: 'm' }, { token: viewer.body.token }), 403);
    const made = await api('POST', '/admin/models', { name: 'token-model' }, { token: operator.body.token });
    assertStatus(made, 201);
    assertStatus(await api('POST', '/admin/tokens', { name: 'y', role: 'viewer' }, { token: operator.body.token }), 403);
    const me = await api('GET', '/admin/me', undefined, { token: operator.body.token });
    assert.equal(me.body.kind, 'token');
    assert.equal(me.body.name, 'ci');
    assertStatus(await api('POST', '/admin/logout', undefined, { token: operator.body.token }), 400);

    const list = await api('GET', '/admin/tokens', undefined, { token: owner });
    assert.ok(!JSON.stringify(list.body).includes(viewer.body.token), 'the token is never listed');
    const ci = list.body.data.find((t) => t.name === 'ci');
    assert.equal(ci.status, 'active');
    assert.equal(ci.prefix, operator.body.token.slice(0, 12));
    assert.ok(ci.last_used_at, 'use is recorded');

    assertStatus(await api('DELETE', `/admin/tokens/${viewer.body.id}`, undefined, { token: owner }), 200);
    assertStatus(await api('GET', '/admin/models', undefined, { token: viewer.body.token }), 401);
    await cluster.psql(`UPDATE admin_api_tokens SET expires_at = now() - interval '1 second' WHERE id = ${operator.body.id}`);
    assertStatus(await api('GET', '/admin/models', undefined, { token: operator.body.token }), 401);
    const after = await api('GET', '/admin/tokens', undefined, { token: owner });
    assert.equal(after.body.data.find((t) => t.id === viewer.body.id).status, 'revoked');
    assert.equal(after.body.data.find((t) => t.id === operator.body.id).status, 'expired');
  });
});

describe('lockout', () => {
  test('five failures lock that user from that address only, and each lock in a row is longer', async () => {
    const name = 'lucy';
    const pw = password('lucy');
    assertStatus(await api('POST', '/admin/users', { username: name, password: pw, role: 'viewer' },
      { token: users.owner.token }), 201);
    for (let i = 0; i < 5; i++) assertStatus(await login(name, `wrong-${i}`, { from: '127.0.0.3' }), 401);
    const locked = await login(name, pw, { from: '127.0.0.3' });
    assertStatus(locked, 429, 'locked_out');
    assert.ok(locked.body.error.retry_after_s >= 1);
    assert.equal(locked.body.error.lock_ms, LOCKOUT_MS);
    // Someone guessing from elsewhere cannot lock the user out of their own address.
    assertStatus(await login(name, pw, { from: '127.0.0.4' }), 200);
    // The lock ends (made to end now, rather than waited for); the next five failures in a
    // row lock for twice as long. (A successful login in between would start the pair's
    // count afresh.)
    await cluster.psql("UPDATE login_lockouts SET locked_until = clock_timestamp() WHERE subject LIKE '%127.0.0.3'");
    for (let i = 0; i < 5; i++) assertStatus(await login(name, `wrong-again-${i}`, { from: '127.0.0.3' }), 401);
    const again = await login(name, pw, { from: '127.0.0.3' });
    assertStatus(again, 429, 'locked_out');
    assert.equal(again.body.error.lock_ms, 2 * LOCKOUT_MS);
    const [row] = await cluster.psql("SELECT strikes, lock_ms FROM login_lockouts WHERE subject = 'user:lucy ip:127.0.0.3'");
    assert.deepEqual(row, { strikes: '2', lock_ms: String(2 * LOCKOUT_MS) });
  });

  test('five failures from one address lock the address out, whoever is named', async () => {
    for (let i = 0; i < 5; i++) assertStatus(await login(`ghost${i}`, 'wrong', { from: '127.0.0.5' }), 401);
    assertStatus(await login(users.operator.name, users.operator.password, { from: '127.0.0.5' }), 429, 'locked_out');
    assertStatus(await login(users.operator.name, users.operator.password, { from: '127.0.0.1' }), 200);
    await waitFor(async () => (await login(users.operator.name, users.operator.password,
      { from: '127.0.0.5' })).status === 200,
    { timeout: LOCKOUT_MS + 5000, interval: 200, message: 'the address lockout to end' });
    const [{ n }] = await cluster.psql("SELECT count(*) AS n FROM login_attempts WHERE client_ip = '127.0.0.5' AND NOT succeeded");
    assert.equal(n, '5', 'refusals during the lock are not counted as attempts');
  });
});

describe('instances', () => {
  // tollgate-admin keeps nothing of its own: a second instance beside the cluster's takes the
  // sessions the first one made, and a session ended on one is ended on both.
  test('a second tollgate-admin takes the sessions of the first', async () => {
    const [listen, control] = [await freePort(), await freePort()];
    const second = startProgram('tollgate-admin', ['--config', path.join(cluster.dir, 'tollgate.conf'),
      '--set', `admin.listen=127.0.0.1:${listen}`, '--set', `admin.control_bind=tcp://127.0.0.1:${control}`,
      '--set', 'admin.metrics_listen=']);
    try {
      const other = `http://127.0.0.1:${listen}`;
      await waitFor(async () => (await fetch(`${other}/healthz`).catch(() => null))?.status === 200,
        { timeout: 10000, message: 'the second tollgate-admin to listen' });
      const session = await login(users.viewer.name, users.viewer.password);
      assertStatus(session, 200);
      const me = await fetch(`${other}/admin/me`, { headers: { authorization: `Bearer ${session.body.token}` } });
      assert.equal(me.status, 200);
      assert.equal((await me.json()).name, users.viewer.name);
      const out = await fetch(`${other}/admin/logout`, { method: 'POST', headers: { authorization: `Bearer ${session.body.token}` } });
      assert.equal(out.status, 200);
      assertStatus(await api('GET', '/admin/me', undefined, { token: session.body.token }), 401);
    } finally {
      const exit = await second.stop();
      assert.equal(exit.code, 0, `the second tollgate-admin drained and exited 0:\n${second.output().slice(-2000)}`);
    }
  });
});

describe('off the loop', () => {
  // argon2id takes tens of milliseconds a login. The logins hold tollgate-admin's workers;
  // the admin listener and the gateway answer while they run.
  test('logins hash on workers: the listener answers while a password is being hashed', async () => {
    // The admin listener's /healthz tells how many argon2id computations run at the moment it
    // answers. A listener that hashed passwords itself could answer only between two hashes, so
    // it would never answer "hashing" above 0, however the machine schedules the threads. So:
    // twelve logins, and health checks of the admin listener one after another until they have
    // all answered; a round in which no check fell inside a hash (every login finished first on
    // a busy machine) proves nothing either way and is tried again.
    const seen = [];
    for (let round = 0; round < 10 && !seen.some((n) => n > 0); round++) {
      let pending = 12;
      const logins = Array.from({ length: 12 }, () =>
        login(users.operator.name, users.operator.password).finally(() => { pending--; }));
      while (pending > 0) {
        const answer = await fetch(`${cluster.admin}/healthz`);
        assert.equal(answer.status, 200);
        const body = await answer.json();
        assert.equal(body.status, 'ok');
        assert.ok(Number.isInteger(body.hashing) && body.hashing >= 0, JSON.stringify(body));
        seen.push(body.hashing);
      }
      for (const answer of await Promise.all(logins)) assertStatus(answer, 200);
    }
    assert.ok(seen.some((n) => n > 0), `no /healthz answered during a hash: ${seen.join(' ')}`);
    // Between logins nothing is being hashed.
    assert.equal((await (await fetch(`${cluster.admin}/healthz`)).json()).hashing, 0);
    // The gateway is another program: logins never hold it.
    const logins = Array.from({ length: 12 }, () => login(users.operator.name, users.operator.password));
    assert.equal((await fetch(`${cluster.gateway}/healthz`)).status, 200);
    for (const answer of await Promise.all(logins)) assertStatus(answer, 200);
  });
});

describe('audit', () => {
  test('every kind of change is audited with who, what, where and masked before/after', async () => {
    const token = users.operator.token;
    const secret = `sk-audit-${crypto.randomBytes(12).toString('hex')}`;
    secrets.push(secret);
    assertStatus(await api('POST', '/admin/providers',
      { name: 'audited', protocol: 'anthropic', base_url: 'http://127.0.0.1:9' }, { token }), 201);
    assertStatus(await api('PATCH', '/admin/providers/audited', { weight: 7 }, { token }), 200);
    const pkey = await api('POST', '/admin/providers/audited/keys', { secret }, { token });
    assertStatus(pkey, 201);
    assertStatus(await api('PATCH', `/admin/provider-keys/${pkey.body.id}`, { status: 'disabled' }, { token }), 200);
    assertStatus(await api('POST', '/admin/models',
      { name: 'audited-model', routes: [{ provider: 'audited' }] }, { token }), 201);
    assertStatus(await api('PATCH', '/admin/models/audited-model', { price_in: '1.5' }, { token }), 200);
    assertStatus(await api('POST', '/admin/accounts', { name: 'audited-team', balance: '3' }, { token }), 201);
    assertStatus(await api('POST', '/admin/accounts/audited-team/topup', { amount: '2' }, { token }), 200);
    const key = await api('POST', '/admin/keys', { account: 'audited-team' }, { token });
    assertStatus(key, 201);
    secrets.push(key.body.key);
    assertStatus(await api('POST', '/admin/keys/revoke', { key: key.body.key }, { token }), 200);
    const key2 = await api('POST', '/admin/keys', { account: 'audited-team' }, { token });
    secrets.push(key2.body.key);
    assertStatus(await api('POST', `/admin/keys/${key2.body.key}/revoke`, undefined, { token }), 200);
    assertStatus(await api('PATCH', '/admin/settings/request-log', { level: 'headers' }, { token }), 200);
    const newPw = password('otto-new');
    assertStatus(await api('PATCH', '/admin/users/otto', { password: newPw }, { token: users.owner.token }), 200);
    users.operator.password = newPw;
    assertStatus(await api('GET', '/admin/me', undefined, { token }), 401, 'authentication_error');
    users.operator.token = (await login(users.operator.name, newPw)).body.token;

    const audit = await api('GET', '/admin/audit?limit=1000', undefined, { token: users.owner.token });
    assertStatus(audit, 200);
    const actions = new Set(audit.body.data.map((e) => e.action));
    for (const action of ['provider.create', 'provider.update', 'provider_key.create', 'provider_key.update',
      'model.create', 'model.update', 'account.create', 'account.topup', 'key.create', 'key.revoke',
      'settings.request_log', 'user.create', 'user.update', 'user.disable', 'token.create', 'token.revoke',
      'session.revoke', 'login', 'login.failed', 'logout', 'bootstrap.rotate']) {
      assert.ok(actions.has(action), `no audit entry for ${action}`);
    }
    const update = audit.body.data.find((e) => e.action === 'provider.update' && e.target);
    assert.equal(update.actor, 'user:otto');
    assert.equal(update.actor_kind, 'user');
    assert.equal(update.role, 'operator');
    assert.equal(update.client_ip, '127.0.0.1');
    assert.equal(update.before.weight, 1);
    assert.equal(update.after.weight, 7);
    assert.deepEqual(update.request, { weight: 7 });
    const topup = audit.body.data.find((e) => e.action === 'account.topup');
    assert.equal(topup.after.balance_micros - topup.before.balance_micros, 2000000);
    const boot = audit.body.data.find((e) => e.action === 'user.create' && e.actor === 'bootstrap');
    assert.ok(boot, 'the users made with the bootstrap token are audited as bootstrap');
    const failed = audit.body.data.find((e) => e.action === 'login.failed');
    assert.equal(failed.actor, 'anonymous');
    assert.equal(failed.request.password, '***');

    // Filters and pages.
    const mine = await api('GET', '/admin/audit?actor=otto&action=provider', undefined, { token: users.owner.token });
    assert.ok(mine.body.data.length >= 3);
    assert.ok(mine.body.data.every((e) => e.actor === 'user:otto' && e.action.startsWith('provider')));
    const page = await api('GET', '/admin/audit?limit=2', undefined, { token: users.owner.token });
    assert.equal(page.body.data.length, 2);
    const next = await api('GET', `/admin/audit?limit=2&before=${page.body.next_before}`, undefined,
      { token: users.owner.token });
    assert.ok(next.body.data[0].id < page.body.data[1].id + 1 && next.body.data[0].id < page.body.data[0].id);
    assertStatus(await api('GET', '/admin/audit?before=yesterday', undefined, { token: users.owner.token }), 400);
  });
});

describe('request logs', () => {
  test('filters and pages over usage, with names; one request shows its stored detail', async () => {
    const token = users.operator.token;
    const [account] = await cluster.psql("SELECT id FROM accounts WHERE name = 'audited-team'");
    const [provider] = await cluster.psql("SELECT id FROM providers WHERE name = 'audited'");
    await cluster.psql(`DO $$ BEGIN
      IF to_regproc('tollgate_usage_partition') IS NOT NULL THEN
        PERFORM tollgate_usage_partition('2030-02-01'::timestamptz);
      END IF; END $$`);
    await cluster.psql(`INSERT INTO usage (request_id, started_at, account_id, api_key_id, model,
        provider_id, upstream_model, status, attempts, latency_ms, ttfb_ms, tokens_in, tokens_out, cost_micros) VALUES
      ('rl-1', '2030-02-01T00:00:01Z', ${account.id}, 1, 'audited-model', ${provider.id}, 'up-1', 200, 1, 120, 40, 10, 5, 100),
      ('rl-2', '2030-02-01T00:00:02Z', ${account.id}, 1, 'audited-model', ${provider.id}, 'up-1', 502, 3, 900, 0, 0, 0, 0),
      ('rl-3', '2030-02-01T00:00:03Z', ${account.id}, 1, 'other-model', NULL, NULL, 429, 1, 3, 0, 0, 0, 0)`);
    await cluster.psql(`INSERT INTO request_details (request_id, level, client_protocol, request_headers, request_body)
      VALUES ('rl-2', 'full', 'openai', '{"content-type": "application/json"}', '{"model":"audited-model"}')`);

    let answer = await api('GET', '/admin/requests?account=audited-team&limit=2', undefined, { token });
    assertStatus(answer, 200);
    assert.deepEqual(answer.body.data.map((r) => r.request_id), ['rl-3', 'rl-2']);
    assert.equal(answer.body.data[1].provider, 'audited');
    assert.equal(answer.body.data[1].account, 'audited-team');
    assert.equal(answer.body.data[1].attempts, 3);
    assert.equal(answer.body.data[1].has_details, true);
    answer = await api('GET', `/admin/requests?account=audited-team&limit=2&before=${encodeURIComponent(answer.body.next_before)}`,
      undefined, { token });
    assert.deepEqual(answer.body.data.map((r) => r.request_id), ['rl-1']);
    answer = await api('GET', '/admin/requests?errors=1&provider=audited', undefined, { token });
    assert.deepEqual(answer.body.data.map((r) => r.request_id), ['rl-2']);
    answer = await api('GET', '/admin/requests?status=429&model=other-model', undefined, { token });
    assert.deepEqual(answer.body.data.map((r) => r.request_id), ['rl-3']);
    answer = await api('GET', '/admin/requests?since=2030-02-01T00:00:02Z&account=audited-team', undefined, { token });
    assert.deepEqual(answer.body.data.map((r) => r.request_id), ['rl-3', 'rl-2']);
    assertStatus(await api('GET', '/admin/requests?status=abc', undefined, { token }), 400);
    assertStatus(await api('GET', '/admin/requests?key=x', undefined, { token }), 400);

    const one = await api('GET', '/admin/requests/rl-2', undefined, { token: users.viewer.token });
    assertStatus(one, 200);
    assert.equal(one.body.status, 502);
    assert.equal(one.body.details.level, 'full');
    assert.equal(one.body.details.request_headers['content-type'], 'application/json');
    assert.equal((await api('GET', '/admin/requests/rl-1', undefined, { token })).body.details, null);
    assertStatus(await api('GET', '/admin/requests/nope', undefined, { token }), 404, 'not_found');

    const level = await api('GET', '/admin/settings/request-log', undefined, { token: users.viewer.token });
    assert.deepEqual(level.body, { level: 'headers', max_body_bytes: 65536, retention_days: 30 });
    assertStatus(await api('PATCH', '/admin/settings/request-log', { level: 'everything' }, { token }), 400);
    assertStatus(await api('PATCH', '/admin/settings/request-log', { retention_days: 0 }, { token }), 400);
    const set = await api('PATCH', '/admin/settings/request-log', { level: 'full', max_body_bytes: 1024 }, { token });
    assert.deepEqual(set.body, { level: 'full', max_body_bytes: 1024, retention_days: 30 });
  });
});

// The CLI's rows in ops/main.c's command table (login, logout, whoami, admin, token, audit,
// requests, request-log): a missing one fails these tests.
const cliPath = process.env.ADMIN_TEST_CLI || bin('tollgate');

describe('admin CLI', () => {
  const cli = (args, { env = {}, input } = {}) => run(cliPath, [...args, '--dir', cluster.dir],
    { env: { TOLLGATE_ADMIN_URL: '', TOLLGATE_ADMIN_TOKEN: '', ...env }, input });

  test('login keeps a 0600 session; users, tokens, audit, requests, --json everywhere', async () => {
    let result = await cli(['provider', 'list']);
    // The folder's bootstrap token was rotated away above (and an owner exists anyway).
    assert.equal(result.code, 1, 'the bootstrap token in the folder no longer works');
    assert.match(result.stderr, /admin token/);
    result = await cli(['login', users.owner.name, '--password', '-'], { input: `${users.owner.password}\n` });
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /logged in as olga \(owner\)/);
    const sessionFile = path.join(cluster.dir, 'admin_session');
    assert.equal(fs.statSync(sessionFile).mode & 0o777, 0o600);
    secrets.push(fs.readFileSync(sessionFile, 'utf8').trim());
    result = await cli(['login', users.owner.name], { input: 'wrong password\n' });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /wrong username or password/);

    result = await cli(['whoami', '--json']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(JSON.parse(result.stdout).kind, 'session');
    const pw = password('cli-user');
    result = await cli(['admin', 'user', 'add', 'cli-user', '--role', 'viewer', '--password', '-'], { input: `${pw}\n` });
    assert.equal(result.code, 0, result.stderr);
    result = await cli(['admin', 'user', 'add', 'cli-user2', '--role', 'viewer'], { input: 'short\n' });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /at least 12 characters/);
    result = await cli(['admin', 'user', 'list', '--json']);
    assert.ok(JSON.parse(result.stdout).data.some((u) => u.username === 'cli-user' && u.status === 'active'));
    result = await cli(['admin', 'user', 'disable', 'cli-user']);
    assert.equal(result.code, 0, result.stderr);
    result = await cli(['admin', 'user', 'list']);
    assert.match(result.stdout, /^ID\s+USERNAME\s+ROLE/);
    assert.match(result.stdout, /cli-user\s+viewer\s+disabled/);
    result = await cli(['admin', 'user', 'role', 'cli-user', 'operator', '--json']);
    assert.equal(JSON.parse(result.stdout).role, 'operator');

    result = await cli(['token', 'create', 'cli-bot', '--role', 'operator']);
    assert.equal(result.code, 0, result.stderr);
    const token = result.stdout.trim().split('\n').pop();
    assert.match(token, /^tgt_[0-9a-f]{64}$/);
    secrets.push(token);
    result = await cli(['provider', 'add', 'cli-bot-provider', '--protocol', 'openai', '--base-url', 'http://127.0.0.1:9'],
      { env: { TOLLGATE_ADMIN_TOKEN: token } });
    assert.equal(result.code, 0, result.stderr);
    result = await cli(['token', 'list', '--json']);
    const listed = JSON.parse(result.stdout).data.find((t) => t.name === 'cli-bot');
    assert.ok(!result.stdout.includes(token));
    result = await cli(['token', 'revoke', String(listed.id)]);
    assert.equal(result.code, 0, result.stderr);
    result = await cli(['provider', 'list'], { env: { TOLLGATE_ADMIN_TOKEN: token } });
    assert.equal(result.code, 1);

    result = await cli(['audit', '--json', '--actor', 'token:cli-bot']);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(JSON.parse(result.stdout).data.map((e) => e.action), ['provider.create']);
    result = await cli(['audit', '--limit', '5']);
    assert.match(result.stdout, /^ID\s+AT\s+ACTOR/);
    assert.match(result.stdout, /older: --before \d+/);

    result = await cli(['requests', '--errors', '--account', 'audited-team', '--json']);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(JSON.parse(result.stdout).data.map((r) => r.request_id), ['rl-3', 'rl-2']);
    result = await cli(['requests', 'show', 'rl-2']);
    assert.match(result.stdout, /attempts\s+3/);
    result = await cli(['request-log', 'set', '--level', 'base']);
    assert.equal(result.code, 0, result.stderr);
    result = await cli(['request-log', '--json']);
    assert.equal(JSON.parse(result.stdout).level, 'base');
    result = await cli(['admin', 'session', 'list', '--json']);
    assert.ok(JSON.parse(result.stdout).data.some((s) => s.username === 'olga'));

    result = await cli(['logout']);
    assert.equal(result.code, 0, result.stderr);
    assert.ok(!fs.existsSync(sessionFile));
    result = await cli(['whoami']);
    assert.equal(result.code, 1, 'back to the dead bootstrap token');
  });
});

describe('secrets', () => {
  test('no secret, password or token in the audit table or any log', async () => {
    const [{ dump }] = await cluster.psql(`SELECT coalesce(string_agg(t::text, E'\\n'), '') AS dump FROM (
      SELECT a::text AS t FROM audit_log a UNION ALL SELECT s::text FROM admin_sessions s
      UNION ALL SELECT k::text FROM admin_api_tokens k UNION ALL SELECT u::text FROM admin_users u
      UNION ALL SELECT l::text FROM login_attempts l UNION ALL SELECT s::text FROM settings s
      UNION ALL SELECT k::text FROM api_keys k UNION ALL SELECT p::text FROM provider_keys p) x`);
    assert.ok(dump.length > 1000);
    assert.ok(secrets.length >= 12);
    for (const secret of [...secrets, cluster.token, bootstrap]) {
      assert.ok(!dump.includes(secret), `the database holds a secret (${secret.slice(0, 8)}...)`);
    }
    const logs = path.join(cluster.dir, 'log');
    const files = fs.readdirSync(logs, { recursive: true })
      .map((name) => path.join(logs, name)).filter((file) => fs.statSync(file).isFile());
    assert.ok(files.length > 0);
    for (const file of files) {
      const text = fs.readFileSync(file, 'utf8');
      for (const secret of [...secrets, cluster.token, bootstrap]) {
        assert.ok(!text.includes(secret), `${path.basename(file)} holds a secret (${secret.slice(0, 8)}...)`);
      }
    }
  });
});
