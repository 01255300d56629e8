// The data plane's scheduling policy follows its load (proto_sched): ingress and dispatch
// run every thread (ZeroMQ's I/O thread included) as SCHED_OTHER while at most one request
// is in flight, switch to SCHED_BATCH once four or more are, and back after 100 ms at one
// or none. dispatch.sched_batch = false keeps dispatch on SCHED_OTHER whatever the load;
// the control plane never switches.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';

import { waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, chat, ok, setup, sse } from '../routing/lib.mjs';

const SCHED_OTHER = 0;
const SCHED_BATCH = 3;

// A cluster with `env`, one mock whose model streams eight events 250 ms apart (~2 s open),
// and a client.
async function start(env) {
  const ctx = await setup({ mocks: [['--models', 'held', '--fault', 'held=delay-chunks:250']], env });
  await addProvider(ctx, 'only', ctx.mocks[0].url);
  await ok(ctx, 'POST', '/admin/models', { name: 'held', price_in: '1', price_out: '2', routes: [{ provider: 'only' }] });
  ctx.client = await addClient(ctx, 'scheduled');
  const status = await ctx.cluster.status();
  ctx.pid = Object.fromEntries(status.programs.map((p) => [p.name, p.pid]));
  return ctx;
}

// Each thread of a process: its name and its policy (field 41 of its stat).
function threads(pid) {
  return fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
    const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { name: fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(), policy: Number(fields[38]) };
  });
}

// Every thread of the program runs `policy` (and ZeroMQ's I/O thread is among them).
function runs(pid, policy) {
  const all = threads(pid);
  return all.some((t) => t.name.startsWith('ZMQbg/IO')) && all.every((t) => t.policy === policy);
}

// `switcher` goes to SCHED_BATCH with eight streams open and back to SCHED_OTHER one at a
// time; `steady` (its key off) and billing (the control plane) stay SCHED_OTHER throughout.
async function followsLoad(ctx, switcher, steady) {
  const stream = () => chat(ctx, ctx.client.key, { model: 'held', stream: true });
  const first = await stream();
  assert.equal(first.status, 200, first.text);
  assert.ok(runs(ctx.pid[switcher], SCHED_OTHER), 'one request at a time: SCHED_OTHER');

  const streams = Array.from({ length: 8 }, stream);
  await waitFor(() => runs(ctx.pid[switcher], SCHED_BATCH),
    { timeout: 3000, interval: 20, message: `${switcher}'s threads to run SCHED_BATCH: ${JSON.stringify(threads(ctx.pid[switcher]))}` });
  for (const name of [steady, 'billing']) {
    assert.ok(runs(ctx.pid[name], SCHED_OTHER), `${name}: ${JSON.stringify(threads(ctx.pid[name]))}`);
  }
  for (const done of await Promise.all(streams)) {
    assert.equal(done.status, 200, done.text);
    assert.ok(sse(done.text).done, 'each stream ends with [DONE]');
  }

  // One at a time again: back to SCHED_OTHER once the hold has passed.
  await waitFor(async () => {
    const one = await stream();
    assert.equal(one.status, 200, one.text);
    return runs(ctx.pid[switcher], SCHED_OTHER);
  }, { timeout: 10000, interval: 50, message: `${switcher}'s threads back to SCHED_OTHER: ${JSON.stringify(threads(ctx.pid[switcher]))}` });
}

// Each data-plane program in turn follows its load while the other, its key off, stays put.
for (const [switcher, steady] of [['ingress', 'dispatch'], ['dispatch', 'ingress']]) {
  test(`${switcher} follows its load; ${steady} with ${steady}.sched_batch = false stays SCHED_OTHER`, async () => {
    const ctx = await start({ [`TOLLGATE_${steady.toUpperCase()}_SCHED_BATCH`]: 'false' });
    try {
      await followsLoad(ctx, switcher, steady);
    } finally {
      await ctx.stop();
    }
  });
}
