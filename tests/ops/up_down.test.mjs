// tollgate up / status / down, the supervisor's restarts, and what every program must do
// the same way: reject bad configuration in one line, mask secrets, exit 0 on SIGTERM.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import {
  bin, programs, startCluster, startDatabase, startProgram, tempDir, tollgate, run, waitFor,
} from '../lib/harness.mjs';

test('up starts everything, restarts a killed program, is idempotent, down stops it', async () => {
  const cluster = await startCluster();
  try {
    assert.match(cluster.gateway, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.match(cluster.admin, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.match(cluster.token, /^tga_[0-9a-f]{64}$/);
    assert.deepEqual(cluster.upOutput.stdout.split('\n').filter(Boolean).map((l) => l.split(':')[0]),
      ['gateway', 'admin', 'console', 'token'], 'up prints exactly four lines on stdout');
    assert.equal(cluster.console, `${cluster.admin}/`);

    // The state folder: secrets are private, endpoints are sockets inside it.
    const tokenFile = path.join(cluster.dir, 'admin_token');
    assert.equal(fs.statSync(tokenFile).mode & 0o777, 0o600);
    assert.equal(fs.readFileSync(tokenFile, 'utf8').trim(), cluster.token);
    const conf = fs.readFileSync(path.join(cluster.dir, 'tollgate.conf'), 'utf8');
    assert.match(conf, /^secret_key = [0-9a-f]{64}$/m);
    for (const name of programs) {
      assert.match(conf, new RegExp(`^${name}\\.control_bind = ipc://${cluster.dir}/run/\\S+\\.sock$`, 'm'));
    }

    let status = await cluster.status();
    assert.equal(status.code, 0);
    assert.equal(status.up, true);
    assert.equal(status.postgres.state, 'up');
    assert.deepEqual(status.programs.map((p) => p.name).sort(), [...programs].sort());
    for (const program of status.programs) {
      assert.equal(program.state, 'up', `${program.name} is up`);
      assert.equal(program.ping, true, `${program.name} answers PING`);
      assert.equal(program.restarts, 0);
    }
    const text = await cluster.tollgate(['status', '--dir', cluster.dir]);
    assert.equal(text.code, 0);
    assert.equal(text.stdout.trim().split('\n').length, 1 + programs.length + 1, text.stdout);

    // The schema is in place.
    const versions = await cluster.psql('SELECT version FROM schema_migrations ORDER BY version');
    assert.equal(versions[0].version, '1');

    // SIGKILL one program: the supervisor has it back, answering, within 2 s.
    const victim = status.programs.find((p) => p.name === 'billing');
    const killedAt = Date.now();
    process.kill(victim.pid, 'SIGKILL');
    const back = await waitFor(async () => {
      const now = await cluster.status();
      const billing = now.programs.find((p) => p.name === 'billing');
      return billing.state === 'up' && billing.ping && billing.pid !== victim.pid ? billing : null;
    }, { timeout: 2000, interval: 50, message: 'billing to come back' });
    assert.ok(Date.now() - killedAt < 2000 + 500, 'back within 2 s (plus one status round)');
    assert.equal(back.restarts, 1);
    assert.match(back.last_exit, /^signal 9/);

    // A second `up` on the same folder finds it running and prints the same lines.
    const again = await cluster.tollgate(['up', '--dir', cluster.dir]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /already up/);
    assert.equal(again.stdout, cluster.upOutput.stdout);

    // down stops everything; status says so; down again is fine.
    const down = await cluster.tollgate(['down', '--dir', cluster.dir]);
    assert.equal(down.code, 0, down.stderr);
    status = await cluster.status();
    assert.equal(status.code, 1);
    assert.equal(status.up, false);
    assert.equal(status.postgres.state, 'down');
    for (const program of status.programs) assert.equal(program.state, 'down');
    const downAgain = await cluster.tollgate(['down', '--dir', cluster.dir]);
    assert.equal(downAgain.code, 0);

    // And up again on the same folder: the last run's status (every program stopped, with its
    // last exit) is not taken for a failed start.
    const upAgain = await cluster.tollgate(['up', '--dir', cluster.dir]);
    assert.equal(upAgain.code, 0, upAgain.stderr);
    status = await cluster.status();
    assert.equal(status.up, true, JSON.stringify(status));
    for (const program of status.programs) assert.equal(program.restarts, 0, program.name);
  } finally {
    await cluster.stop();
  }
});

test('up fails cleanly when the gateway port is taken', async () => {
  const net = await import('node:net');
  const blocker = net.createServer();
  await new Promise((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const port = blocker.address().port;
  const dir = tempDir('tollgate-busy-');
  try {
    const result = await tollgate(['up', '--dir', dir, '--port', String(port), '--admin-port', String(port + 1),
      '--timeout', '20']);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /ingress/);
    assert.match(result.stderr, /last lines of .*ingress\.log/);
    assert.equal(result.stdout, '');
    // Nothing is left running.
    const status = await tollgate(['status', '--dir', dir, '--json']);
    const parsed = JSON.parse(status.stdout);
    assert.equal(parsed.supervisor.state, 'down');
    assert.equal(parsed.postgres.state, 'down');
  } finally {
    blocker.close();
    await tollgate(['down', '--dir', dir]);
  }
});

test('every program rejects a bad configuration value in one clear line', async () => {
  const dir = tempDir('tollgate-badconf-');
  const conf = path.join(dir, 'bad.conf');
  fs.writeFileSync(conf, 'log_level = loud\n');
  for (const name of programs) {
    const result = await run(bin(`tollgate-${name}`), ['--config', conf], { timeout: 10000 });
    assert.notEqual(result.code, 0, `tollgate-${name} exits non-zero`);
    const lines = result.stderr.trim().split('\n').filter(Boolean);
    assert.equal(lines.length, 1, `tollgate-${name} logs one line, got:\n${result.stderr}`);
    assert.match(lines[0], /log_level/, `tollgate-${name} names the key`);
    assert.match(lines[0], /"level":"error"/);
  }
});

test('--print-config masks the secret key, the admin token and the database password', async () => {
  const dir = tempDir('tollgate-print-');
  const conf = path.join(dir, 'secret.conf');
  const secretKey = 'ab'.repeat(32);
  const token = `tga_${'cd'.repeat(32)}`;
  fs.writeFileSync(conf, [
    `secret_key = ${secretKey}`,
    `admin.token = ${token}`,
    'database_url = postgresql://tollgate:hunter2@127.0.0.1:5432/tollgate',
    '',
  ].join('\n'));
  for (const name of programs) {
    const result = await run(bin(`tollgate-${name}`), ['--config', conf, '--print-config'], { timeout: 10000 });
    assert.equal(result.code, 0, `tollgate-${name} --print-config: ${result.stderr}`);
    const all = result.stdout + result.stderr;
    for (const secret of [secretKey, token, 'hunter2']) {
      assert.ok(!all.includes(secret), `tollgate-${name} --print-config shows a secret`);
    }
    assert.match(result.stdout, /^secret_key = \*\*\*/m);
    assert.match(result.stdout, /^database_url = postgresql:\/\/tollgate:\*\*\*@/m);
  }
});

test('every program exits 0 within 2 s of SIGTERM', async () => {
  // A private database and configuration, but no supervisor: we start the programs
  // ourselves so we can see their exit codes.
  const db = await startDatabase();
  try {
    const started = programs.map((name) => ({ name, program: startProgram(`tollgate-${name}`, ['--config', db.config]) }));
    await waitFor(async () => {
      const ping = await tollgate(['ping', '--dir', db.dir, '--timeout', '1', ...programs]);
      return ping.code === 0;
    }, { timeout: 20000, interval: 100, message: 'every program to answer PING' }).catch((error) => {
      throw new Error(`${error.message}\n${started.map((s) => `--- ${s.name}\n${s.program.output()}`).join('\n')}`);
    });
    await Promise.all(started.map(async ({ name, program }) => {
      const sentAt = Date.now();
      const { code, signal } = await program.stop('SIGTERM');
      const took = Date.now() - sentAt;
      assert.equal(signal, null, `tollgate-${name} died of ${signal}`);
      assert.equal(code, 0, `tollgate-${name} exit code:\n${program.output()}`);
      assert.ok(took < 2000, `tollgate-${name} took ${took} ms to exit`);
    }));
  } finally {
    await db.stop();
  }
});
