// TLS on the client and admin listeners without a terminator in front: `tollgate up --tls-cert
// --tls-key --admin-tls-cert --admin-tls-key` with certificates made here (a CA and two server
// certificates, openssl CLI); the openai SDK trusts the CA alone, plain HTTP on either port gets
// no answer, SIGHUP to the supervisor makes both listeners serve the second certificate (its
// fingerprint is what a new connection sees) without dropping the listener, a bad file at reload
// keeps the certificate being served, and a bad file at start is a clear configuration error.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { Readable } from 'node:stream';
import tls from 'node:tls';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';

import { freePort, startCluster, startMock, startProgram, tempDir, tollgate, waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, ok } from '../routing/lib.mjs';

const dir = tempDir('tollgate-tls-');
const file = (name) => path.join(dir, name);
let mock;
let ctx;
let client;
let ca;
let caFetchFn;

function openssl(args) {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

// A CA, and server certificates `names` signed by it for 127.0.0.1 and localhost.
function makeCertificates(names) {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '2', '-subj', '/CN=tollgate test CA']);
  fs.writeFileSync(file('ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  for (const name of names) {
    openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', `/CN=${name}`]);
    openssl(['x509', '-req', '-in', file(`${name}.csr`), '-CA', file('ca.pem'), '-CAkey', file('ca.key'),
      '-CAcreateserial', '-days', '2', '-out', file(`${name}.pem`), '-extfile', file('ext')]);
  }
}

const fingerprintOf = (name) => new crypto.X509Certificate(fs.readFileSync(file(`${name}.pem`))).fingerprint256;

// The certificate a new TLS connection to `url` is served (verified against the CA).
function servedFingerprint(url) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: hostname, port: Number(port), ca, servername: 'localhost' }, () => {
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      socket.end();
      resolve(fingerprint);
    });
    socket.on('error', reject);
  });
}

// fetch over node's https with our CA (the SDK takes a fetch; node's own has no CA option).
function caFetch(trusted) {
  const agent = new https.Agent({ ca: trusted, keepAlive: true });
  return (url, init = {}) => new Promise((resolve, reject) => {
    const request = https.request(String(url), {
      method: init.method ?? 'GET', headers: Object.fromEntries(new Headers(init.headers ?? {})), agent,
    }, (response) => {
      const headers = new Headers();
      for (const [name, value] of Object.entries(response.headers)) {
        headers.set(name, Array.isArray(value) ? value.join(', ') : value);
      }
      const empty = response.statusCode === 204 || response.statusCode === 304;
      resolve(new Response(empty ? null : Readable.toWeb(response), { status: response.statusCode, headers }));
    });
    request.on('error', reject);
    init.signal?.addEventListener('abort', () => request.destroy(new Error('aborted')));
    request.end(init.body ?? undefined);
  });
}

// A request over plain HTTP to a TLS port: resolves 'answered' or the error's code.
async function plain(url) {
  const { port } = new URL(url);
  try {
    const response = await fetch(`http://127.0.0.1:${port}/healthz`);
    await response.text();
    return 'answered';
  } catch (error) {
    return error.cause?.code ?? error.code ?? 'error';
  }
}

before(async () => {
  makeCertificates(['first', 'second']);
  ca = fs.readFileSync(file('ca.pem'));
  fs.copyFileSync(file('first.pem'), file('live.pem'));
  fs.copyFileSync(file('first.key'), file('live.key'));
  mock = await startMock(['--models', 'up']);
  const cluster = await startCluster({ args: [
    '--tls-cert', file('live.pem'), '--tls-key', file('live.key'),
    '--admin-tls-cert', file('live.pem'), '--admin-tls-key', file('live.key')] });
  caFetchFn = caFetch(ca);
  ctx = { cluster, api: async (method, route, body) => {
    const response = await caFetchFn(cluster.admin + route, {
      method,
      headers: { authorization: `Bearer ${cluster.token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: response.status, body: json ?? text };
  } };
  await addProvider(ctx, 'pa', mock.url);
  await ok(ctx, 'POST', '/admin/models', { name: 'm', routes: [{ provider: 'pa', upstream_model: 'up' }] });
  client = await addClient(ctx, 'tls');
});

after(async () => {
  await ctx?.cluster.stop();
  await mock?.stop();
});

function sdk() {
  return new OpenAI({ apiKey: client.key, baseURL: `${ctx.cluster.gateway}/v1`, maxRetries: 0, fetch: caFetchFn });
}

test('tollgate up prints https URLs; the openai SDK trusting only the CA is served, plain and streamed', async () => {
  assert.match(ctx.cluster.gateway, /^https:\/\/127\.0\.0\.1:\d+$/);
  assert.match(ctx.cluster.admin, /^https:\/\//);
  assert.match(ctx.cluster.console, /^https:\/\//);
  // The new key reaches the gateway's catalog within moments.
  let completion;
  await waitFor(async () => {
    try {
      completion = await sdk().chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }] });
      return true;
    } catch (error) {
      if (error.status !== 401) throw error;
      return false;
    }
  }, { timeout: 10000, message: 'the first request through https' });
  assert.equal(completion.object, 'chat.completion');
  assert.ok(completion.choices[0].message.content.length > 0);
  const stream = await sdk().chat.completions.create({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.ok(text.length > 0);
  assert.equal(await servedFingerprint(ctx.cluster.gateway), fingerprintOf('first'));
  assert.equal(await servedFingerprint(ctx.cluster.admin), fingerprintOf('first'));
  // The CLI reaches the admin API over https with the cluster's own certificate.
  const listed = await ctx.cluster.tollgate(['account', 'list', '--dir', ctx.cluster.dir]);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /tls/);
});

test('plain HTTP on the TLS ports gets no HTTP answer, and a client without the CA refuses the server', async () => {
  assert.notEqual(await plain(ctx.cluster.gateway), 'answered');
  assert.notEqual(await plain(ctx.cluster.admin), 'answered');
  await assert.rejects(fetch(`${ctx.cluster.gateway}/healthz`),
    (error) => /CERT|VERIFY|ISSUER/.test(String(error.cause?.code)) || assert.fail(`${error.cause?.code}: ${error.cause}`));
});

test('SIGHUP to the supervisor: both listeners serve the second certificate, a bad file keeps it', async () => {
  const { supervisor } = await ctx.cluster.status();
  const supervisorPid = supervisor.pid;
  assert.ok(supervisorPid > 0);
  // A connection opened before the reload keeps working after it.
  const keep = sdk();
  await keep.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'before' }] });

  fs.copyFileSync(file('second.key'), file('live.key'));
  fs.copyFileSync(file('second.pem'), file('live.pem'));
  process.kill(supervisorPid, 'SIGHUP');
  for (const url of [ctx.cluster.gateway, ctx.cluster.admin]) {
    await waitFor(async () => (await servedFingerprint(url)) === fingerprintOf('second'),
      { timeout: 5000, message: `${url} serves the second certificate` });
  }
  await keep.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'after' }] });
  const fresh = await sdk().chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'after' }] });
  assert.equal(fresh.object, 'chat.completion');

  // A broken certificate file at reload: logged, and the second certificate stays.
  fs.writeFileSync(file('live.pem'), '-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n');
  process.kill(supervisorPid, 'SIGHUP');
  const log = path.join(ctx.cluster.dir, 'log', 'ingress.log');
  await waitFor(() => fs.readFileSync(log, 'utf8').includes('ingress TLS: reload failed, still serving sha256'),
    { timeout: 5000, message: 'the failed reload in ingress.log' });
  await waitFor(() => fs.readFileSync(path.join(ctx.cluster.dir, 'log', 'admin.log'), 'utf8').includes('admin TLS: reload failed'),
    { timeout: 5000, message: 'the failed reload in admin.log' });
  assert.equal(await servedFingerprint(ctx.cluster.gateway), fingerprintOf('second'));
  assert.equal(await servedFingerprint(ctx.cluster.admin), fingerprintOf('second'));
  const still = await sdk().chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'still' }] });
  assert.equal(still.object, 'chat.completion');
  const { programs } = await ctx.cluster.status();
  for (const program of programs) assert.equal(program.restarts, 0, `${program.name} restarted`);
});

test('bad files at start: a clear configuration error from tollgate up and from the program', async () => {
  const up = await tollgate(['up', '--dir', tempDir('tollgate-tls-bad-'), '--tls-cert', file('missing.pem'),
    '--tls-key', file('first.key')]);
  assert.equal(up.code, 1);
  assert.match(up.stderr, /ingress\.tls_cert: cannot read .*missing\.pem: No such file or directory/);
  const mismatched = await tollgate(['up', '--dir', tempDir('tollgate-tls-bad-'), '--admin-tls-cert', file('first.pem'),
    '--admin-tls-key', file('second.key')]);
  assert.equal(mismatched.code, 1);
  assert.match(mismatched.stderr, /admin\.tls_key: .*second\.key is not the key of the certificate in .*first\.pem/);
  const half = await tollgate(['up', '--dir', tempDir('tollgate-tls-bad-'), '--tls-cert', file('first.pem')]);
  assert.equal(half.code, 1);
  assert.match(half.stderr, /ingress\.tls_cert and ingress\.tls_key go together/);

  const ingress = startProgram('tollgate-ingress', [
    '--set', 'security=none', '--set', `ingress.listen=127.0.0.1:${await freePort()}`,
    '--set', `ingress.control_bind=tcp://127.0.0.1:${await freePort()}`,
    '--set', `ingress.tls_cert=${file('first.pem')}`, '--set', `ingress.tls_key=${file('ca.key')}`]);
  const { code } = await ingress.exited;
  assert.notEqual(code, 0);
  assert.match(ingress.output(), /ingress\.tls_key: .*ca\.key is not the key of the certificate/);
});
