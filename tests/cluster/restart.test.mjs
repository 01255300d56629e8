// `tollgate restart PROGRAM` on a local cluster under load: each program is drained and
// started again by the supervisor as a planned restart (no backoff, not counted as a crash),
// the new process answers. Failures are counted and printed; on one host with one instance
// of each there is no second instance to take over, so only the programs that hold no
// requests (health, ledger) must lose none (docs/cluster.md, "Gaps", for the others).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { childEnv, programs, startCluster } from '../lib/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

function startLoad(options) {
  const child = spawn(process.execPath, [path.join(here, 'load.mjs'), JSON.stringify(options)],
    { env: childEnv(), stdio: ['pipe', 'pipe', 'inherit'] });
  const failures = [];
  const waiting = [];
  let summary;
  const done = new Promise((resolve) => { summary = resolve; });
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    let event;
    try { event = JSON.parse(line); } catch { return; }
    if (event.ev === 'fail') failures.push(event);
    else if (event.ev === 'mark') waiting.shift()?.(event);
    else if (event.ev === 'summary') summary(event);
  });
  return {
    failures,
    mark: () => new Promise((resolve) => { waiting.push(resolve); child.stdin.write('mark\n'); }),
    stop() { child.stdin.write('stop\n'); return done; },
    kill: () => child.kill('SIGKILL'),
  };
}

test('tollgate restart rolls each program under load', { timeout: 240000 }, async () => {
  const cluster = await startCluster({ demo: true });
  const key = cluster.upOutput.stdout.match(/key (tg-[0-9a-f]+)$/m)[1];
  const load = startLoad({ gateways: [cluster.gateway], keys: [key], model: 'demo-model', concurrency: 4, timeoutMs: 20000 });
  try {
    const waitOk = async (since, atLeast) => {
      for (;;) {
        const mark = await load.mark();
        if (mark.ok - since.ok >= atLeast) return mark;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    };
    await waitOk(await load.mark(), 20);
    const rows = [];
    for (const name of programs) {
      const before = await load.mark();
      const status = await cluster.status();
      const old = status.programs.find((p) => p.name === name);
      const restart = await cluster.tollgate(['restart', name, '--dir', cluster.dir]);
      assert.equal(restart.code, 0, `tollgate restart ${name}: ${restart.stderr}`);
      assert.match(restart.stdout, new RegExp(`^${name}: pid ${old.pid} -> \\d+, answering after \\d+ ms$`, 'm'));
      const after = await waitOk(await load.mark(), 20);
      const now = (await cluster.status()).programs.find((p) => p.name === name);
      assert.notEqual(now.pid, old.pid);
      assert.equal(now.restarts, 0, `${name}: a planned restart is not a crash`);
      assert.equal(now.last_exit, 'exit 0', `${name} drained and exited 0`);
      const failed = after.failed - before.failed;
      rows.push({ name, failed, ok: after.ok - before.ok, retried: after.retried - before.retried, took: restart.stdout.trim() });
      console.log(`  restart ${name.padEnd(9)} ok ${String(after.ok - before.ok).padStart(4)}  failed ${String(failed).padStart(3)}` +
        `  retried ${String(after.retried - before.retried).padStart(3)}  ${restart.stdout.trim()}`);
    }
    const summary = await load.stop();
    console.log(`  total: ${summary.ok} completed, ${summary.failed} failed ${JSON.stringify(summary.reasons)}, ${summary.retried} retried`);
    for (const row of rows.filter((r) => ['health', 'ledger'].includes(r.name))) {
      assert.equal(row.failed, 0, `restart ${row.name}: ${row.failed} failed`);
    }
    // planned_restarts in status.json: one per program.
    const status = JSON.parse((await import('node:fs')).readFileSync(path.join(cluster.dir, 'run', 'status.json'), 'utf8'));
    for (const program of status.programs) assert.equal(program.planned_restarts, 1, program.name);

    const unknown = await cluster.tollgate(['restart', 'nonesuch', '--dir', cluster.dir]);
    assert.equal(unknown.code, 2);
  } finally {
    load.kill();
    await cluster.stop();
  }
});
