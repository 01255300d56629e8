// Reaching providers as they are (migration 0012, docs/routing.md "Reaching providers as they
// are") through the real programs: extra headers, a relay's own path, a (provider, model) with
// its own protocol and path, HTTP and SOCKS proxies in turn with a breaker for a dead one, a
// provider's model block list, the statuses a provider fails over on or returns as they are;
// the admin API, the CLI (--json) and bad input that names its field and changes nothing.
import assert from 'node:assert/strict';
import net from 'node:net';
import http from 'node:http';
import { after, before, test } from 'node:test';

import { freePort, waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, chat, explainUntil, fault, ok, setup, usageRow } from './lib.mjs';

// A forward HTTP proxy (absolute-URI requests, and CONNECT) on 127.0.0.1, counting what it
// carried; with `auth` ("user:password") it wants that Proxy-Authorization.
function startHttpProxy({ auth } = {}) {
  const proxy = { requests: 0, refused: 0 };
  const expected = auth ? `Basic ${Buffer.from(auth).toString('base64')}` : null;
  const server = http.createServer((request, response) => {
    if (expected && request.headers['proxy-authorization'] !== expected) {
      proxy.refused++;
      response.writeHead(407, { 'proxy-authenticate': 'Basic realm="test"' }).end();
      return;
    }
    proxy.requests++;
    const target = new URL(request.url);
    const headers = { ...request.headers };
    delete headers['proxy-authorization'];
    delete headers['proxy-connection'];
    const upstream = http.request({ host: target.hostname, port: target.port, path: target.pathname + target.search, method: request.method, headers }, (answer) => {
      response.writeHead(answer.statusCode, answer.headers);
      answer.pipe(response);
    });
    upstream.on('error', () => response.writeHead(502).end());
    request.pipe(upstream);
  });
  server.on('connect', (request, socket, head) => {
    proxy.requests++;
    const [host, port] = request.url.split(':');
    const upstream = net.connect(Number(port), host, () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(socket).pipe(upstream);
    });
    upstream.on('error', () => socket.destroy());
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    proxy.port = server.address().port;
    proxy.close = () => new Promise((done) => { server.closeAllConnections?.(); server.close(done); });
    resolve(proxy);
  }));
}

// A SOCKS5 proxy (no authentication, CONNECT only) on 127.0.0.1, counting connections.
function startSocksProxy() {
  const proxy = { connections: 0 };
  const server = net.createServer((socket) => {
    socket.once('data', (greeting) => {
      if (greeting[0] !== 5) return socket.destroy();
      socket.write(Buffer.from([5, 0]));
      socket.once('data', (request) => {
        if (request[0] !== 5 || request[1] !== 1) return socket.destroy();
        let host;
        let offset;
        if (request[3] === 1) { host = [...request.subarray(4, 8)].join('.'); offset = 8; }
        else if (request[3] === 3) { host = request.subarray(5, 5 + request[4]).toString(); offset = 5 + request[4]; }
        else return socket.destroy();
        const port = request.readUInt16BE(offset);
        proxy.connections++;
        const upstream = net.connect(port, host, () => {
          socket.write(Buffer.from([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
          upstream.pipe(socket).pipe(upstream);
        });
        upstream.on('error', () => socket.destroy());
      });
    });
    socket.on('error', () => {});
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    proxy.port = server.address().port;
    proxy.close = () => new Promise((done) => server.close(done));
    resolve(proxy);
  }));
}

async function journal(mock) {
  return (await (await fetch(`${mock.url}/mock/requests`)).json()).requests;
}

async function resetMock(mock) {
  await fetch(`${mock.url}/mock/reset`, { method: 'POST' });
}

let ctx;
let client;
const proxies = {};

before(async () => {
  ctx = await setup({
    mocks: [
      ['--models', 'm'],
      ['--models', 'm', '--alias', '/api/chat/completions=/v1/chat/completions',
        '--alias', '/anthropic/v1/messages=/v1/messages'],
      ['--models', 'm'],
      ['--models', 'm'],
    ],
  });
  client = await addClient(ctx, 'reach');
  proxies.http = await startHttpProxy();
  proxies.socks = await startSocksProxy();
  proxies.auth = await startHttpProxy({ auth: 'tg-user:pr0xy-pa55word' });
});

after(async () => {
  await ctx?.stop();
  for (const proxy of Object.values(proxies)) await proxy.close();
});

// A model routed to one provider, asked until the gateway knows it.
async function served(model, provider, upstream = model) {
  await ok(ctx, 'POST', '/admin/models', { name: model, routes: [{ provider, upstream_model: upstream }] });
  await waitFor(async () => (await chat(ctx, client.key, { model })).status === 200,
    { timeout: 8000, message: `${model} to be served` });
}

test('extra headers set with the CLI reach the upstream, and User-Agent replaces ours', async () => {
  const [mock] = ctx.mocks;
  const result = await ctx.cluster.tollgate(['provider', 'add', 'hdr', '--protocol', 'openai', '--base-url', mock.url,
    '--header', 'User-Agent: relay-client/1.0', '--header', 'Origin: https://app.example',
    '--header', 'Referer: https://app.example/chat', '--json', '--dir', ctx.cluster.dir]);
  assert.equal(result.code, 0, result.stderr);
  const added = JSON.parse(result.stdout);
  assert.deepEqual(added.headers, { 'Origin': 'https://app.example', 'Referer': 'https://app.example/chat', 'User-Agent': 'relay-client/1.0' });
  await ok(ctx, 'POST', '/admin/providers/hdr/keys', { secret: 'sk-hdr-secret-0000' });
  await resetMock(mock);
  await served('hm', 'hdr', 'm');
  const seen = (await journal(mock)).filter((entry) => entry.path === '/v1/chat/completions');
  assert.ok(seen.length >= 1);
  const headers = seen.at(-1).headers;
  assert.equal(headers['user-agent'], 'relay-client/1.0');
  assert.equal(headers.origin, 'https://app.example');
  assert.equal(headers.referer, 'https://app.example/chat');
  // Emptied with --header none: our own User-Agent again.
  const cleared = await ctx.cluster.tollgate(['provider', 'set', 'hdr', '--header', 'none', '--json', '--dir', ctx.cluster.dir]);
  assert.equal(cleared.code, 0, cleared.stderr);
  assert.deepEqual(JSON.parse(cleared.stdout).headers, {});
  await waitFor(async () => {
    await chat(ctx, client.key, { model: 'hm' });
    return (await journal(mock)).at(-1).headers['user-agent'].startsWith('tollgate/');
  }, { timeout: 5000, message: 'the headers to be gone' });
});

test('a relay serving chat at its own path, and a (provider, model) with its own protocol and path', async () => {
  const relayMock = ctx.mocks[1];
  await addProvider(ctx, 'relay', relayMock.url);
  const patched = await ok(ctx, 'PATCH', '/admin/providers/relay', { path: '/api/chat/completions' });
  assert.equal(patched.path, '/api/chat/completions');
  await resetMock(relayMock);
  await served('rm', 'relay', 'm');
  const paths = (await journal(relayMock)).map((entry) => entry.path);
  assert.ok(paths.includes('/api/chat/completions'), JSON.stringify(paths));
  assert.ok(!paths.includes('/v1/chat/completions'));

  // claude-x at the same relay speaks Anthropic's Messages at /anthropic/v1/messages.
  const cli = await ctx.cluster.tollgate(['provider', 'model', 'set', 'relay', 'claude-x', '--protocol', 'anthropic',
    '--path', '/anthropic/v1/messages', '--json', '--dir', ctx.cluster.dir]);
  assert.equal(cli.code, 0, cli.stderr);
  const setting = JSON.parse(cli.stdout);
  assert.equal(setting.protocol, 'anthropic');
  assert.equal(setting.model, 'claude-x');
  const listed = await ok(ctx, 'GET', '/admin/providers/relay/model-settings');
  assert.deepEqual(listed.data.map((row) => [row.model, row.protocol, row.path]), [['claude-x', 'anthropic', '/anthropic/v1/messages']]);
  await resetMock(relayMock);
  await served('cx', 'relay', 'claude-x');
  const entry = (await journal(relayMock)).at(-1);
  assert.equal(entry.path, '/anthropic/v1/messages');
  assert.equal(entry.headers['anthropic-version'], '2023-06-01');
  assert.equal(entry.body.model, 'claude-x');
  assert.ok(Array.isArray(entry.body.messages) && entry.body.max_tokens > 0, 'converted to Messages');
  // The other models of the relay keep its path and protocol.
  await chat(ctx, client.key, { model: 'rm' });
  assert.equal((await journal(relayMock)).at(-1).path, '/api/chat/completions');
  // Unset: the provider's again.
  const unset = await ctx.cluster.tollgate(['provider', 'model', 'unset', 'relay', 'claude-x', '--dir', ctx.cluster.dir]);
  assert.equal(unset.code, 0, unset.stderr);
  assert.deepEqual((await ok(ctx, 'GET', '/admin/providers/relay/model-settings')).data, []);
});

test('HTTP and SOCKS proxies in turn; proxy credentials are sealed and never shown', async () => {
  const mock = ctx.mocks[2];
  await addProvider(ctx, 'proxied', mock.url);
  const set = await ok(ctx, 'PATCH', '/admin/providers/proxied', {
    proxies: [`http://127.0.0.1:${proxies.http.port}`, `socks5h://127.0.0.1:${proxies.socks.port}`,
      `http://tg-user:pr0xy-pa55word@127.0.0.1:${proxies.auth.port}`],
  });
  assert.deepEqual(set.proxies, [`http://127.0.0.1:${proxies.http.port}`, `socks5h://127.0.0.1:${proxies.socks.port}`,
    `http://***@127.0.0.1:${proxies.auth.port}`]);
  const shown = await ctx.cluster.tollgate(['provider', 'show', 'proxied', '--json', '--dir', ctx.cluster.dir]);
  assert.ok(!shown.stdout.includes('pr0xy-pa55word'));
  const stored = await ctx.cluster.psql("SELECT proxy_hints::text, encode(proxies_sealed, 'escape') AS sealed FROM providers WHERE name = 'proxied'");
  assert.ok(!JSON.stringify(stored).includes('pr0xy-pa55word'), 'sealed at rest');
  const audit = await ctx.cluster.psql("SELECT * FROM audit_log WHERE target LIKE '%proxied%' OR action = 'provider.update'");
  assert.ok(!JSON.stringify(audit).includes('pr0xy-pa55word'), 'not in the audit log');

  await served('pm', 'proxied', 'm');
  const before = { http: proxies.http.requests, socks: proxies.socks.connections, auth: proxies.auth.requests };
  for (let i = 0; i < 12; i++) assert.equal((await chat(ctx, client.key, { model: 'pm' })).status, 200);
  const carried = {
    http: proxies.http.requests - before.http,
    socks: proxies.socks.connections - before.socks,
    auth: proxies.auth.requests - before.auth,
  };
  // In turn per dispatch instance: every proxy carries some, none all.
  assert.ok(carried.http >= 2 && carried.socks >= 1 && carried.auth >= 2, JSON.stringify(carried));
  assert.equal(proxies.auth.refused, 0, 'the credentials reached the proxy');
});

test('a dead proxy: the same candidate goes through the next one, and its breaker opens', async () => {
  const mock = ctx.mocks[3];
  await addProvider(ctx, 'lossy', mock.url);
  const dead = await freePort();
  await ok(ctx, 'PATCH', '/admin/providers/lossy', { proxies: [`http://127.0.0.1:${dead}`, `http://127.0.0.1:${proxies.http.port}`] });
  await served('lm', 'lossy', 'm');
  const ids = [];
  for (let i = 0; i < 20; i++) {
    const response = await chat(ctx, client.key, { model: 'lm' });
    assert.equal(response.status, 200, response.text);
    ids.push(response.id);
  }
  const rows = await waitFor(async () => {
    const found = await ctx.cluster.psql(`SELECT request_id, attempts FROM usage WHERE request_id IN (${ids.map((id) => `'${id}'`).join(',')})`);
    return found.length === ids.length ? found : null;
  }, { timeout: 10000, message: 'the usage rows' });
  const retried = rows.filter((row) => Number(row.attempts) > 1).length;
  // The breaker opens after 3 failures in a row (router.breaker_threshold) in each dispatch
  // instance (one or two here); without it about half of the requests would pay a retry.
  assert.ok(retried >= 1 && retried <= 6, `${retried} requests retried through the other proxy`);
});

test('health probes through the proxies in turn: a dead first proxy fails no probe', async () => {
  const mock = ctx.mocks[3];
  await addProvider(ctx, 'probed', mock.url);
  const dead = await freePort();
  await ok(ctx, 'PATCH', '/admin/providers/probed', { proxies: [`http://127.0.0.1:${dead}`, `http://127.0.0.1:${proxies.http.port}`] });
  await ok(ctx, 'POST', '/admin/models', { name: 'prm', routes: [{ provider: 'probed', upstream_model: 'm' }] });
  // Health's catalog has the proxies once it maps the model added after them.
  await waitFor(async () => (await ctx.cluster.psql(`SELECT 1 FROM model_mappings m JOIN models ON models.id = m.model_id
    WHERE models.name = 'prm'`)).length > 0, { timeout: 10000, message: 'health to map prm' });
  const carried = proxies.http.requests;
  // Each probe starts at the next proxy; one that starts at the dead one goes on through the
  // live one, so every probe passes and the key is never failed for the proxy's sake.
  for (let i = 0; i < 4; i++) {
    const probe = await ctx.cluster.tollgate(['health', 'probe', 'probed', '--model', 'm', '--json', '--dir', ctx.cluster.dir]);
    assert.equal(probe.code, 0, `probe ${i}: ${probe.stdout}${probe.stderr}`);
  }
  assert.ok(proxies.http.requests - carried >= 4, `${proxies.http.requests - carried} probes through the live proxy`);
  // The key's model list is fetched through them too (that it takes the proxies at all is
  // health_server's selftest, whose provider only a proxy reaches).
  const [{ id, now }] = await ctx.cluster.psql("SELECT id, now() AS now FROM providers WHERE name = 'probed'");
  await ctx.cluster.psql(`NOTIFY tollgate_health, 'fetch:${id}'`);
  await waitFor(async () => (await ctx.cluster.psql(`SELECT 1 FROM provider_model_fetches WHERE provider_id = ${id}
    AND ok AND fetched_at > '${now}'::timestamptz`)).length > 0, { timeout: 10000, message: 'a model-list fetch through the proxies' });
});

test('a provider-wide block list excludes its models; explain says why', async () => {
  const [first, , , fourth] = ctx.mocks;
  const blockProvider = await addProvider(ctx, 'blocky', first.url, { priority: 10 });
  const openProvider = await addProvider(ctx, 'open', fourth.url);
  await ok(ctx, 'POST', '/admin/models', { name: 'bm', routes: [{ provider: 'blocky', upstream_model: 'm-preview' }, { provider: 'open', upstream_model: 'm-preview' }] });
  const cli = await ctx.cluster.tollgate(['provider', 'set', 'blocky', '--blocked-models', '*-preview,legacy-*', '--json', '--dir', ctx.cluster.dir]);
  assert.equal(cli.code, 0, cli.stderr);
  assert.deepEqual(JSON.parse(cli.stdout).blocked_models, ['*-preview', 'legacy-*']);
  const explained = await explainUntil(ctx, { model: 'bm' }, (e) => e.candidates.length === 1 && e.excluded.some((x) => x.why === 'blocked'));
  assert.equal(explained.candidates[0].provider, 'open');
  assert.equal(explained.excluded.find((x) => x.why === 'blocked').provider_id, blockProvider.id);
  // The router explains from its own table; dispatch has it once a request reaches 'open'
  // (before, 'blocky' comes first by priority).
  await waitFor(async () => {
    const response = await chat(ctx, client.key, { model: 'bm' });
    return response.status === 200 && Number((await usageRow(ctx, response.id)).provider_id) === openProvider.id;
  }, { timeout: 10000, message: "dispatch to have the router's table with the block" });
  await resetMock(first);
  for (let i = 0; i < 5; i++) assert.equal((await chat(ctx, client.key, { model: 'bm' })).status, 200);
  assert.equal((await journal(first)).filter((entry) => entry.model === 'm-preview').length, 0);
});

test('per provider: a 429 returned as it is, a 400 failed over', async () => {
  const [first, , , fourth] = ctx.mocks;
  await addProvider(ctx, 'strictly', first.url, { priority: 10 });
  await addProvider(ctx, 'backup', fourth.url);
  // Set before the model exists: a catalog that has the model has the statuses too.
  const cli = await ctx.cluster.tollgate(['provider', 'set', 'strictly', '--return-statuses', '429', '--failover-statuses', '400,409',
    '--json', '--dir', ctx.cluster.dir]);
  assert.equal(cli.code, 0, cli.stderr);
  const answer = JSON.parse(cli.stdout);
  assert.deepEqual([answer.return_statuses, answer.failover_statuses], [[429], [400, 409]]);
  await ok(ctx, 'POST', '/admin/models', { name: 'sm', routes: [{ provider: 'strictly', upstream_model: 'sm-up' }, { provider: 'backup', upstream_model: 'sm-up' }] });
  await waitFor(async () => (await chat(ctx, client.key, { model: 'sm' })).status === 200, { timeout: 8000 });

  await fault(first, 'sm-up', '429:7');
  await resetMock(fourth);
  const limited = await waitFor(async () => {
    const response = await chat(ctx, client.key, { model: 'sm' });
    return response.status === 429 ? response : null;
  }, { timeout: 5000, message: 'the 429 to come back as it is' });
  assert.equal(limited.status, 429);
  assert.equal((await journal(fourth)).filter((entry) => entry.model === 'sm-up').length, 0, 'no failover on 429');

  // The breaker the 429 opened is the model's: reset it, then fault with 400.
  await ok(ctx, 'POST', '/admin/breakers/reset', { provider: 'strictly', upstream_model: 'sm-up' });
  await fault(first, 'sm-up', '400');
  // Once the reset reached dispatch, the 400 at `strictly` fails over: 200 in two attempts.
  const over = await waitFor(async () => {
    const response = await chat(ctx, client.key, { model: 'sm' });
    if (response.status !== 200) return null;
    const row = await usageRow(ctx, response.id);
    return Number(row.attempts) === 2 ? response : null;
  }, { timeout: 8000, message: 'the 400 to fail over' });
  assert.equal(over.status, 200);
  assert.ok((await journal(fourth)).some((entry) => entry.model === 'sm-up'), 'the backup answered');
  await fault(first, 'sm-up', '');
  // Back to the default classification with none.
  const reset = await ok(ctx, 'PATCH', '/admin/providers/strictly', { return_statuses: [], failover_statuses: [] });
  assert.deepEqual([reset.return_statuses, reset.failover_statuses], [[], []]);
});

test('bad input names the field and changes nothing', async () => {
  const before = await ok(ctx, 'GET', '/admin/providers/relay');
  const cases = [
    [{ headers: { Authorization: 'Bearer x' } }, 'headers'],
    [{ headers: { 'Bad Name': 'x' } }, 'headers'],
    [{ headers: { 'X-Ok': 'line\r\nbreak' } }, 'headers'],
    [{ headers: ['User-Agent: x'] }, 'headers'],
    [{ proxies: ['ftp://127.0.0.1:1'] }, 'proxies'],
    [{ proxies: 'http://127.0.0.1:1' }, 'proxies'],
    [{ proxies: ['http://user:secret-pass@'] }, 'proxies'],
    [{ path: 'api/chat' }, 'path'],
    [{ path: '/api chat' }, 'path'],
    [{ blocked_models: 'x' }, 'blocked_models'],
    [{ failover_statuses: [200] }, 'failover_statuses'],
    [{ return_statuses: ['429'] }, 'return_statuses'],
    [{ failover_statuses: [429], return_statuses: [429] }, 'failover_statuses'],
  ];
  for (const [body, field] of cases) {
    const answer = await ctx.api('PATCH', '/admin/providers/relay', body);
    assert.equal(answer.status, 400, JSON.stringify(body));
    assert.ok(answer.body.error.message.includes(field), `${JSON.stringify(body)}: ${answer.body.error.message}`);
    assert.ok(!answer.body.error.message.includes('secret-pass'));
  }
  // A status cannot join the other list of what is stored.
  await ok(ctx, 'PATCH', '/admin/providers/relay', { return_statuses: [429] });
  const overlap = await ctx.api('PATCH', '/admin/providers/relay', { failover_statuses: [429] });
  assert.equal(overlap.status, 400);
  assert.match(overlap.body.error.message, /failover_statuses/);
  await ok(ctx, 'PATCH', '/admin/providers/relay', { return_statuses: [] });
  const after = await ok(ctx, 'GET', '/admin/providers/relay');
  delete before.updated_at;
  delete after.updated_at;
  assert.deepEqual(after, before);
  // A model setting's protocol and path are checked too; a create without a model is refused.
  for (const body of [{ model: 'x', protocol: 'grpc' }, { model: 'x', path: 'nope' }, { protocol: 'openai' }]) {
    const answer = await ctx.api('POST', '/admin/providers/relay/model-settings', body);
    assert.equal(answer.status, 400, JSON.stringify(body));
  }
  // The CLI refuses what it cannot send.
  const bad = await ctx.cluster.tollgate(['provider', 'set', 'relay', '--header', 'no-colon', '--dir', ctx.cluster.dir]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--header/);
});
