// Slow and greedy clients (slowloris): 2,000 connections from one address that send a request
// a byte at a time take at most ingress.max_connections_per_ip of the gateway, and another
// address is still served; a request whose headers trickle in is closed at
// ingress.read_timeout_ms, however steadily its bytes come.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { freePort, startMock, startProgram, waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, ok, setup } from '../routing/lib.mjs';

let ctx;
let client;
let port;
const slow = new Set();

before(async () => {
  ctx = await setup({ mocks: [['--models', 'up']], env: {
    TOLLGATE_INGRESS_MAX_CONNECTIONS_PER_IP: '100',
    TOLLGATE_INGRESS_READ_TIMEOUT_MS: '0',
  } });
  await addProvider(ctx, 'pa', ctx.mocks[0].url);
  await ok(ctx, 'POST', '/admin/models', { name: 'm', routes: [{ provider: 'pa', upstream_model: 'up' }] });
  client = await addClient(ctx, 'slow');
  port = Number(new URL(ctx.cluster.gateway).port);
});

after(async () => {
  for (const socket of slow) socket.destroy();
  await ctx?.stop();
});

// A request from `localAddress`. Resolves the status, or the error's code when the gateway
// closed the connection.
function chatFrom(localAddress, gatewayPort = port) {
  return new Promise((resolve) => {
    const body = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] });
    const request = http.request({ host: '127.0.0.1', port: gatewayPort, localAddress, method: 'POST', path: '/v1/chat/completions',
      agent: false, headers: { 'content-type': 'application/json', authorization: `Bearer ${client.key}` } }, (response) => {
      response.resume();
      response.on('end', () => resolve(response.statusCode));
    });
    request.on('error', (error) => resolve(error.code));
    request.end(body);
  });
}

// A connection that sends a request one header byte every `every` ms, forever. Resolves
// when it is open; `closed` resolves with the bytes the server sent when the server closes it.
function trickle(gatewayPort, every) {
  const socket = net.connect({ host: '127.0.0.1', port: gatewayPort, localAddress: '127.0.0.1' });
  slow.add(socket);
  let received = 0;
  socket.on('data', (chunk) => { received += chunk.length; });
  socket.on('error', () => {});
  const closed = new Promise((resolve) => socket.on('close', () => { slow.delete(socket); clearInterval(timer); resolve(received); }));
  const text = 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ';
  let timer;
  const opened = new Promise((resolve) => socket.on('connect', () => {
    socket.write(text);
    timer = setInterval(() => { if (!socket.destroyed) socket.write('a'); }, every);
    resolve();
  }));
  return { socket, opened, closed };
}

test('2,000 slow connections from one address: at most 100 held, another address served', { timeout: 120000 }, async () => {
  const connections = [];
  for (let i = 0; i < 2000; i++) connections.push(trickle(port, 1000));
  await Promise.all(connections.map((c) => c.opened.catch(() => {})));
  // Beyond the per-address limit the gateway closes them at once; the rest it holds (no
  // deadline on this ingress) for as long as they trickle.
  await waitFor(() => slow.size <= 100, { timeout: 60000, interval: 100, message: 'the connections over the limit to be closed' });
  assert.ok(slow.size >= 50, `the gateway holds the connections under the limit (${slow.size})`);
  assert.equal(await chatFrom('127.0.0.2'), 200, 'another address is served');
  const refused = await chatFrom('127.0.0.1');
  assert.notEqual(refused, 200, 'the greedy address gets no more connections');
  for (const socket of slow) socket.destroy();
  await waitFor(async () => (await chatFrom('127.0.0.1')) === 200, { timeout: 10000, message: 'the address to be served again once it lets go' });
});

test('a request trickling a byte at a time is closed at the read deadline', { timeout: 60000 }, async () => {
  const [listen, control] = [await freePort(), await freePort()];
  const second = startProgram('tollgate-ingress', [
    '--set', `ingress.listen=127.0.0.1:${listen}`, '--set', `ingress.control_bind=tcp://127.0.0.1:${control}`,
    '--set', 'ingress.metrics_listen=', '--set', 'ingress.read_timeout_ms=1000', '--set', 'ingress.max_connections_per_ip=0',
  ], { env: { TOLLGATE_CONFIG: path.join(ctx.cluster.dir, 'tollgate.conf') } });
  try {
    await waitFor(async () => (await chatFrom('127.0.0.2', listen)) === 200, { timeout: 15000, message: 'the second ingress to serve' });
    const connections = [];
    for (let i = 0; i < 20; i++) connections.push(trickle(listen, 100));
    // Each keeps sending a byte every 100 ms; only the gateway can end it.
    const received = await Promise.all(connections.map((c) => c.closed));
    assert.ok(received.every((bytes) => bytes === 0), 'closed without an answer');
    assert.equal(await chatFrom('127.0.0.2', listen), 200, 'and the gateway still serves');
  } finally {
    await second.stop();
  }
});
