// tollgate migrate: idempotent, and safe when several run at once.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { startDatabase, tempDir, tollgate } from '../lib/harness.mjs';

// The built-in migrations are the files in ops/migrations, in order.
const builtin = fs.readdirSync(new URL('../../ops/migrations/', import.meta.url))
  .filter((name) => /^\d{4}_.+\.sql$/.test(name)).sort()
  .map((name) => ({ version: String(Number(name.slice(0, 4))), name: name.slice(5, -4) }));

let db;
before(async () => { db = await startDatabase(); });
after(async () => { await db?.stop(); });

// A fresh database on the private server, and its connection string.
async function freshDatabase(name) {
  await db.psql(`CREATE DATABASE ${name}`, 'postgres');
  return db.url.replace(/dbname=\S+/, `dbname=${name}`);
}

test('migrate twice: the second run applies nothing', async () => {
  const url = await freshDatabase('twice');
  const first = await tollgate(['migrate', '--database-url', url]);
  assert.equal(first.code, 0, first.stderr);
  for (const migration of builtin) {
    assert.match(first.stdout, new RegExp(`^applied ${migration.version.padStart(4, '0')}_${migration.name}$`, 'm'));
  }
  assert.match(first.stdout, new RegExp(`\\(${builtin.length} applied\\)`));
  const second = await tollgate(['migrate', '--database-url', url]);
  assert.equal(second.code, 0, second.stderr);
  assert.doesNotMatch(second.stdout, /^applied/m);
  assert.match(second.stdout, /\(0 applied\)/);
  const rows = await db.psql('SELECT version, name FROM schema_migrations ORDER BY version', 'twice');
  assert.deepEqual(rows, builtin);
});

test('migrate reads the database from the state folder and from TOLLGATE_DATABASE_URL', async () => {
  const byDir = await tollgate(['migrate', '--dir', db.dir]);
  assert.equal(byDir.code, 0, byDir.stderr);
  assert.match(byDir.stdout, /\(0 applied\)/, 'up --db-only already migrated it');
  const url = await freshDatabase('byenv');
  const byEnv = await tollgate(['migrate'], { env: { TOLLGATE_DATABASE_URL: url, TOLLGATE_DIR: '/nonexistent' } });
  assert.equal(byEnv.code, 0, byEnv.stderr);
  assert.match(byEnv.stdout, new RegExp(`\\(${builtin.length} applied\\)`));
  const nowhere = await tollgate(['migrate', '--dir', '/nonexistent']);
  assert.equal(nowhere.code, 2);
  assert.match(nowhere.stderr, /no database given/);
});

test('concurrent migrators apply each migration exactly once', async () => {
  // Migrations with side effects we can count, slow enough that the runs overlap.
  const folder = tempDir('tollgate-migrations-');
  fs.writeFileSync(path.join(folder, '0001_counter.sql'),
    'CREATE TABLE counter (n integer NOT NULL);\nINSERT INTO counter VALUES (1);\nSELECT pg_sleep(0.3);\n');
  fs.writeFileSync(path.join(folder, '0002_more.sql'),
    'INSERT INTO counter VALUES (2);\nSELECT pg_sleep(0.2);\n');
  const url = await freshDatabase('concurrent');
  const runs = await Promise.all([1, 2, 3, 4].map(() =>
    tollgate(['migrate', '--database-url', url, '--migrations', folder])));
  for (const result of runs) assert.equal(result.code, 0, result.stderr);
  const applied = runs.map((r) => Number(r.stdout.match(/\((\d+) applied\)/)[1]));
  assert.equal(applied.reduce((a, b) => a + b, 0), 2, `applied counts ${applied}`);
  const counter = await db.psql('SELECT n FROM counter ORDER BY n', 'concurrent');
  assert.deepEqual(counter, [{ n: '1' }, { n: '2' }]);
  const versions = await db.psql('SELECT version FROM schema_migrations ORDER BY version', 'concurrent');
  assert.deepEqual(versions, [{ version: '1' }, { version: '2' }]);

  // And the built-in set, twice at once, on another fresh database.
  const builtinUrl = await freshDatabase('concurrent_builtin');
  const pair = await Promise.all([1, 2].map(() => tollgate(['migrate', '--database-url', builtinUrl])));
  for (const result of pair) assert.equal(result.code, 0, result.stderr);
  assert.deepEqual(await db.psql('SELECT count(*) AS n FROM schema_migrations', 'concurrent_builtin'), [{ n: String(builtin.length) }]);
});

test('a failing migration is rolled back and reported', async () => {
  const folder = tempDir('tollgate-badmigration-');
  fs.writeFileSync(path.join(folder, '0001_ok.sql'), 'CREATE TABLE fine (x integer);\n');
  fs.writeFileSync(path.join(folder, '0002_broken.sql'), 'CREATE TABLE half (x integer);\nSELECT no_such_column FROM fine;\n');
  const url = await freshDatabase('broken');
  const result = await tollgate(['migrate', '--database-url', url, '--migrations', folder]);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /migration 0002_broken failed: .*no_such_column/);
  assert.deepEqual(await db.psql("SELECT to_regclass('half') AS t", 'broken'), [{ t: null }]);
  assert.deepEqual(await db.psql('SELECT version FROM schema_migrations', 'broken'), [{ version: '1' }]);
});
