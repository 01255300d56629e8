// Every upstream call is accounted for exactly once, even when its dispatch dies mid-request
// (docs/billing.md, "Every upstream call, once"). Streamed and non-streamed load through two
// dispatch instances; the second one (started here, reached through a TCP proxy the test
// controls) is SIGKILLed mid-stream several times and its link is cut for 2 s. Afterwards:
// for every call the mock upstream served, exactly one usage row; each client request
// charged at most once; calls lost with their dispatch recorded as the operator's loss; and
// `tollgate ledger check` clean.
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { freePort, startCluster, startMock, startProgram, waitFor } from '../lib/harness.mjs';

const MODEL = 'settle';
const WORKERS = 8;

let cluster;
let mock;
let extra;
let extraArgs;
let proxy;
let key;

async function cli(...args) {
  const result = await cluster.tollgate(args, { env: { TOLLGATE_DIR: cluster.dir } });
  if (result.code !== 0) throw new Error(`tollgate ${args.join(' ')} failed: ${result.stderr}${result.stdout}`);
  return result.stdout;
}

// A TCP proxy in front of the second dispatch: cut() closes every connection through it and
// refuses new ones for a while, as a network partition would.
function startProxy(listenPort, targetPort) {
  const sockets = new Set();
  let refuseUntil = 0;
  const server = net.createServer((client) => {
    if (Date.now() < refuseUntil) { client.destroy(); return; }
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const [a, b] of [[client, upstream], [upstream, client]]) {
      sockets.add(a);
      a.on('data', (data) => b.write(data));
      a.on('error', () => b.destroy());
      a.on('close', () => { sockets.delete(a); b.destroy(); });
    }
  });
  return new Promise((resolve) => server.listen(listenPort, '127.0.0.1', () => resolve({
    cut(ms) {
      refuseUntil = Date.now() + ms;
      for (const socket of sockets) socket.destroy();
    },
    close: () => new Promise((done) => { for (const s of sockets) s.destroy(); server.close(done); }),
  })));
}

function startExtraDispatch() {
  return startProgram('tollgate-dispatch', extraArgs,
    { env: { TOLLGATE_CONFIG: path.join(cluster.dir, 'tollgate.conf') } });
}

// One request; resolves { id, status, complete }.
async function one(stream) {
  try {
    const response = await fetch(`${cluster.gateway}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ model: MODEL, stream, max_tokens: 64,
        messages: [{ role: 'user', content: 'Say hello' }] }),
      signal: AbortSignal.timeout(30000),
    });
    const id = response.headers.get('x-request-id');
    const text = await response.text();
    let complete = response.status === 200;
    if (complete && stream) complete = text.endsWith('data: [DONE]\n\n');
    else if (complete) complete = Array.isArray(JSON.parse(text).choices);
    return { id, status: response.status, complete, stream };
  } catch (error) {
    return { id: null, status: 0, complete: false, stream, error: String(error) };
  }
}

const mockCalls = async () => (await (await fetch(`${mock.url}/mock/stats`)).json()).models?.[MODEL] ?? 0;
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

before(async () => {
  // Streams take about half a second and plain answers 0.3 s: calls are always in flight.
  mock = await startMock(['--models', MODEL, '--fault', `${MODEL}=delay-headers:300,delay-chunks:100`]);
  const [first, second, proxied, events, control] =
    [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
  cluster = await startCluster({ env: {
    TOLLGATE_DISPATCH_BIND: `tcp://127.0.0.1:${first}`,
    TOLLGATE_DISPATCH_ENDPOINTS: `tcp://127.0.0.1:${first},tcp://127.0.0.1:${proxied}`,
    TOLLGATE_INGRESS_REQUEST_TIMEOUT_MS: '20000',
  } });
  proxy = await startProxy(proxied, second);
  extraArgs = ['--set', `dispatch.bind=tcp://127.0.0.1:${second}`,
    '--set', `dispatch.events.bind=tcp://127.0.0.1:${events}`,
    '--set', `dispatch.control_bind=tcp://127.0.0.1:${control}`,
    '--set', 'dispatch.metrics_listen='];
  extra = startExtraDispatch();
  await cli('provider', 'add', 'mock', '--protocol', 'openai', '--base-url', mock.url);
  await cli('provider', 'key', 'add', 'mock', '--secret', 'sk-mock');
  await cli('model', 'add', MODEL, '--route', `mock:${MODEL}`, '--price-in', '1', '--price-out', '2');
  await cli('account', 'add', 'settle', '--balance', '1000');
  key = (await cli('key', 'create', 'settle', '--name', 'settle')).trim().split('\n').pop();
  // Both instances answer (ingress takes them in turn).
  await waitFor(async () => {
    const results = await Promise.all([one(false), one(false), one(true), one(true)]);
    return results.every((r) => r.complete);
  }, { timeout: 20000, interval: 200, message: 'both dispatch instances answer' });
});

after(async () => {
  await extra?.stop('SIGKILL');
  await proxy?.close();
  await cluster?.stop();
  await mock?.stop();
});

test('SIGKILLs of a dispatch mid-stream and a cut link: one usage row per upstream call', { timeout: 180000 }, async () => {
  const rowsOf = async () => cluster.psql(`SELECT request_id, operator_loss, estimated, cost_micros
      FROM usage WHERE model = '${MODEL}'`);
  // Before the load: everything settled.
  await waitFor(async () => (await rowsOf()).length === await mockCalls(),
    { timeout: 15000, interval: 200, message: 'the warm-up settled' });
  const rowsBefore = new Set((await rowsOf()).map((r) => r.request_id));
  const callsBefore = await mockCalls();

  const results = [];
  let running = true;
  const workers = Array.from({ length: WORKERS }, async (_, worker) => {
    for (let i = 0; running; i++) results.push(await one((i + worker) % 2 === 0));
  });
  const events = [];
  const kill = async (downMs) => {
    await extra.stop('SIGKILL');
    await pause(downMs);
    extra = startExtraDispatch();
    events.push(`SIGKILL, back after ${downMs} ms`);
  };
  await pause(2500);
  await kill(300);
  await pause(2500);
  await kill(1500);
  await pause(2500);
  proxy.cut(2000);
  events.push('link cut for 2 s');
  await pause(4500);
  await kill(0);
  await pause(3000);
  running = false;
  await Promise.all(workers);

  // Everything the instances and their journals hold reaches the ledger.
  const expected = () => mockCalls().then((calls) => calls - callsBefore);
  let rows = [];
  await waitFor(async () => {
    rows = (await rowsOf()).filter((r) => !rowsBefore.has(r.request_id));
    return rows.length >= await expected();
  }, { timeout: 30000, interval: 500, message: 'a usage row for every upstream call' }).catch(() => {});
  await pause(1500); // nothing more arrives
  rows = (await rowsOf()).filter((r) => !rowsBefore.has(r.request_id));
  const calls = await expected();

  const clientIds = new Set(results.map((r) => r.id).filter(Boolean));
  const losses = rows.filter((r) => r.operator_loss === 't');
  const charged = rows.filter((r) => r.operator_loss !== 't');
  const chargedPerId = new Map();
  for (const row of charged) chargedPerId.set(row.request_id, (chargedPerId.get(row.request_id) ?? 0) + 1);
  const doubled = [...chargedPerId.values()].filter((n) => n > 1).length;
  const strangers = charged.filter((r) => !clientIds.has(r.request_id)).length;
  const lossOf = (r) => r.request_id.replace(/~lost-[0-9a-f]{8}$/, '');
  const orphanLosses = losses.filter((r) => !clientIds.has(lossOf(r))).length;
  const estimated = charged.filter((r) => r.estimated === 't').length;
  const completed = results.filter((r) => r.complete);
  const completedWithoutRow = completed.filter((r) => !chargedPerId.has(r.id)).length;
  const statuses = {};
  for (const r of results) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
  console.log(`settlement: ${events.join(', ')}`);
  console.log(`settlement: requests=${results.length} completed=${completed.length} statuses=${JSON.stringify(statuses)}`);
  console.log(`settlement: upstream calls=${calls} usage rows=${rows.length} charged=${charged.length} ` +
    `operator_loss=${losses.length} estimated=${estimated} charged_twice=${doubled}`);

  assert.ok(completed.length > 40, `only ${completed.length} of ${results.length} completed`);
  assert.equal(rows.length, calls, 'exactly one usage row for every call the upstream served');
  assert.equal(doubled, 0, 'no client request charged twice');
  assert.equal(strangers, 0, 'every charged row is a client request');
  assert.equal(orphanLosses, 0, "every operator's-loss row names a client request");
  assert.equal(completedWithoutRow, 0, 'every completed request is charged');
  assert.ok(losses.every((r) => Number(r.cost_micros) === 0), "the operator's losses cost the client nothing");
  // The kills did land mid-request: some calls were lost, some streams settled from their journal.
  assert.ok(losses.length + estimated > 0, 'the kills hit requests in flight');

  const check = await cluster.tollgate(['ledger', 'check', '--dir', cluster.dir]);
  assert.equal(check.code, 0, `tollgate ledger check:\n${check.stdout}${check.stderr}`);
});
