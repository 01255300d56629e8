// `tollgate admin reset-password USER`: with database access alone (a
// PostgreSQL and no program running at all, and beside a running cluster
// whose admin server then takes the new password), argon2id as the admin
// server stores it, sessions ended, lockouts lifted, an audit row without
// the secret; bad input changes nothing.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startCluster, startDatabase, tollgate } from '../lib/harness.mjs';

const OLD = 'old-password-0123';
const NEW = 'new-password-4567';

let cluster;
let db;

async function login(username, password) {
  const response = await fetch(`${cluster.admin}/admin/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password }),
  });
  return { status: response.status, body: await response.json() };
}

async function hashOf(target, username) {
  const rows = await target.psql(`SELECT password_hash FROM admin_users WHERE username = '${username}'`);
  return rows[0]?.password_hash;
}

before(async () => {
  [cluster, db] = await Promise.all([startCluster(), startDatabase()]);
  const env = { TOLLGATE_DIR: cluster.dir };
  const added = await cluster.tollgate(['admin', 'user', 'add', 'olga', '--role', 'owner', '--password', OLD], { env });
  assert.equal(added.code, 0, added.stderr);
});

after(async () => { await cluster?.stop(); await db?.stop(); });

describe('with no program running (tollgate up --db-only)', () => {
  test('resets the hash to argon2id with the admin server\'s limits', async () => {
    await db.psql("INSERT INTO admin_users (username, password_hash, role) VALUES ('lost', '$argon2id$placeholder', 'owner')");
    const result = await tollgate(['admin', 'reset-password', 'lost', '--password', '-', '--dir', db.dir, '--json'],
      { input: `${NEW}\n`, env: { TOLLGATE_DIR: '' } });
    assert.equal(result.code, 0, result.stderr);
    const answer = JSON.parse(result.stdout);
    assert.equal(answer.username, 'lost');
    assert.equal(answer.role, 'owner');
    assert.equal(answer.sessions_revoked, 0);
    assert.match(await hashOf(db, 'lost'), /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    assert.ok(!result.stdout.includes(NEW) && !result.stderr.includes(NEW));
  });

  test('TOLLGATE_DATABASE_URL is enough', async () => {
    const before = await hashOf(db, 'lost');
    const result = await tollgate(['admin', 'reset-password', 'lost', '--password', NEW],
      { env: { TOLLGATE_DATABASE_URL: db.url, TOLLGATE_DIR: '/nonexistent' } });
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /password of lost \(owner\) reset; 0 session\(s\) ended/);
    assert.notEqual(await hashOf(db, 'lost'), before);
  });

  test('bad input changes nothing and names the problem', async () => {
    const before = await hashOf(db, 'lost');
    const weak = await tollgate(['admin', 'reset-password', 'lost', '--password', 'short', '--dir', db.dir]);
    assert.equal(weak.code, 2);
    assert.match(weak.stderr, /'password' must be at least 12 characters/);
    const empty = await tollgate(['admin', 'reset-password', 'lost', '--dir', db.dir], { input: '\n' });
    assert.equal(empty.code, 2);
    const nobody = await tollgate(['admin', 'reset-password', 'nobody', '--password', NEW, '--dir', db.dir]);
    assert.equal(nobody.code, 1);
    assert.match(nobody.stderr, /no admin user 'nobody'/);
    const nowhere = await tollgate(['admin', 'reset-password', 'lost', '--password', NEW, '--dir', '/nonexistent'],
      { env: { TOLLGATE_DATABASE_URL: '', TOLLGATE_CONFIG: '' } });
    assert.equal(nowhere.code, 2);
    assert.match(nowhere.stderr, /no database given/);
    const usage = await tollgate(['admin', 'reset-password', '--dir', db.dir]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /missing USERNAME/);
    assert.equal(await hashOf(db, 'lost'), before);
  });
});

describe('beside a running cluster', () => {
  test('the admin server takes the new password; old sessions and lockouts are gone; audited', async () => {
    const session = await login('olga', OLD);
    assert.equal(session.status, 200);
    // A lockout of olga from some address (as failed logins would make it).
    await cluster.psql("INSERT INTO login_lockouts (subject, locked_until, strikes, lock_ms) VALUES ('user:olga ip:127.0.0.1', now() + interval '1 hour', 1, 3600000)");
    assert.equal((await login('olga', OLD)).status, 429);

    const result = await tollgate(['admin', 'reset-password', 'olga', '--password', '-', '--dir', cluster.dir, '--json'],
      { input: `${NEW}\n` });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(JSON.parse(result.stdout).sessions_revoked, 1);

    const whoami = await fetch(`${cluster.admin}/admin/me`, { headers: { authorization: `Bearer ${session.body.token}` } });
    assert.equal(whoami.status, 401);
    assert.equal((await login('olga', OLD)).status, 401);
    const fresh = await login('olga', NEW);
    assert.equal(fresh.status, 200, JSON.stringify(fresh.body));

    const [audit] = await cluster.psql("SELECT actor, action, target, request::text AS request FROM audit_log WHERE action = 'admin_user.reset_password'");
    assert.equal(audit.actor, 'cli:reset-password');
    assert.ok(!audit.request.includes(NEW));
    const listed = await cluster.tollgate(['audit', '--action', 'admin_user.reset_password', '--json'], { env: { TOLLGATE_DIR: cluster.dir, TOLLGATE_ADMIN_TOKEN: fresh.body.token } });
    assert.equal(listed.code, 0, listed.stderr);
    assert.equal(JSON.parse(listed.stdout).data.length, 1);
  });
});
