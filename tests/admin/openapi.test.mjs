// docs/openapi.json against the admin API tollgate-admin really serves, both ways:
//   - the operations documented are exactly the routes GET /admin/routes lists, with the same
//     least role (x-tollgate-access);
//   - each documented operation is routed by the server (a caller below its role gets 403,
//     one at or above it never gets "no such admin endpoint" or 405), and a method the
//     document does not list for a path is 405.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

import { startCluster } from '../lib/harness.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const spec = JSON.parse(fs.readFileSync(path.join(root, 'docs', 'openapi.json'), 'utf8'));
const METHODS = ['get', 'post', 'put', 'patch', 'delete'];
// In order of power; an account holder's own routes (access `account`) are theirs alone.
const ROLES = ['account', 'viewer', 'operator', 'owner'];

let cluster;
const tokens = {};

async function api(method, pathname, token, body) {
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(cluster.admin + pathname, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  // CSV exports answer in text/csv; everything else is JSON.
  const json = (response.headers.get('content-type') ?? '').includes('json');
  return { status: response.status, body: json ? JSON.parse(text) : text };
}

// The documented operations as "METHOD /path" -> access.
function documented() {
  const operations = new Map();
  for (const [pathname, item] of Object.entries(spec.paths)) {
    for (const method of METHODS) {
      if (item[method]) operations.set(`${method.toUpperCase()} ${pathname}`, item[method]['x-tollgate-access']);
    }
  }
  return operations;
}

const fill = (pathname) => pathname.replace(/\{[^}]+\}/g, '999999');

// True when a documented operation with this method matches the concrete URL; {model} and
// {account} take one or more segments, as the server's {model*} and {account*} do.
function servedBy(method, url) {
  return Object.entries(spec.paths).some(([pathname, item]) => {
    if (!item[method]) return false;
    const pattern = pathname.replace(/[.-]/g, '\\$&')
      .replace(/\{(model|account)\}/g, '.+').replace(/\{[^}]+\}/g, '[^/]+');
    return new RegExp(`^${pattern}$`).test(url);
  });
}

before(async () => {
  cluster = await startCluster();
  // One user of each role; the bootstrap token makes the owner and retires.
  const password = `openapi-${crypto.randomBytes(8).toString('hex')}`;
  const account = await api('POST', '/admin/accounts', cluster.token, { name: 'openapi-account' });
  assert.equal(account.status, 201, JSON.stringify(account.body));
  const holder = await api('POST', '/admin/users', cluster.token,
    { username: 'u-account', password, role: 'account', account: 'openapi-account' });
  assert.equal(holder.status, 201, JSON.stringify(holder.body));
  for (const role of ['operator', 'viewer', 'owner']) {
    const made = await api('POST', '/admin/users', cluster.token, { username: `u-${role}`, password, role });
    assert.equal(made.status, 201, JSON.stringify(made.body));
  }
  for (const role of ROLES) {
    const login = await api('POST', '/admin/login', null, { username: `u-${role}`, password });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    tokens[role] = login.body.token;
  }
});

after(async () => {
  if (cluster) await cluster.stop();
});

test('the document is OpenAPI 3 and every operation says who may call it', () => {
  assert.match(spec.openapi, /^3\./);
  assert.ok(spec.components.securitySchemes.bearer);
  for (const [key, access] of documented()) {
    assert.ok(['public', 'any', ...ROLES].includes(access), `${key}: x-tollgate-access ${access}`);
    const [method, pathname] = key.split(' ');
    const operation = spec.paths[pathname][method.toLowerCase()];
    assert.ok(operation.summary && operation.operationId && operation.responses, key);
    assert.equal(Boolean(operation['x-tollgate-action']), method !== 'GET', `${key}: x-tollgate-action`);
    for (const name of pathname.match(/\{[^}]+\}/g) || []) {
      const declared = (spec.paths[pathname].parameters || []).some((p) => `{${p.name}}` === name && p.in === 'path');
      assert.ok(declared, `${key}: path parameter ${name} is not declared`);
    }
    for (const response of Object.values(operation.responses)) {
      const ref = response.content?.['application/json']?.schema?.$ref;
      if (ref) assert.ok(spec.components.schemas[ref.split('/').pop()], `${key}: ${ref}`);
    }
  }
});

test('documented operations are exactly the served routes, with the same roles', async () => {
  const answer = await api('GET', '/admin/routes', tokens.viewer);
  assert.equal(answer.status, 200);
  const served = new Map(answer.body.data.map((r) => [`${r.method} ${r.path}`, r.access]));
  const docs = documented();
  const missing = [...served.keys()].filter((key) => !docs.has(key));
  const extra = [...docs.keys()].filter((key) => !served.has(key));
  assert.deepEqual(missing, [], 'served but not documented');
  assert.deepEqual(extra, [], 'documented but not served');
  for (const [key, access] of served) assert.equal(docs.get(key), access, `${key}: role`);
});

test('the server routes every documented operation and refuses undocumented methods', async () => {
  let probed = 0;
  for (const [key, access] of documented()) {
    const [method, pathname] = key.split(' ');
    const url = fill(pathname);
    if (access === 'public') {
      // Login: an empty body is a 400 from the handler, so the route is there. The session
      // probe answers anyone, and says whether they are logged in.
      const answer = method === 'GET' ? await api(method, url, null) : await api(method, url, null, {});
      if (method === 'GET') assert.deepEqual([answer.status, answer.body.authenticated], [200, false], key);
      else assert.equal(answer.status, 400, `${key}: ${JSON.stringify(answer.body)}`);
      continue;
    }
    // Below the route's role: 403 proves the route exists and is guarded. An account
    // holder's routes are guarded against staff instead.
    const below = access === 'account' ? 'viewer' : ROLES[ROLES.indexOf(access) - 1];
    if (below) {
      const answer = await api(method, url, tokens[below], method === 'GET' ? undefined : {});
      assert.equal(answer.status, 403, `${key} as ${below}: ${JSON.stringify(answer.body)}`);
    }
    // At its role, only reads are sent (they change nothing): never unrouted.
    if (method === 'GET') {
      const answer = await api(method, url, tokens[access === 'any' ? 'viewer' : access]);
      assert.notEqual(answer.status, 405, key);
      assert.ok(!(answer.status === 404 && /no such admin endpoint/.test(answer.body.error?.message)),
        `${key}: the server does not route it`);
    }
    probed++;
  }
  assert.ok(probed >= 50, `probed ${probed}`);
  for (const [pathname, item] of Object.entries(spec.paths)) {
    for (const method of METHODS) {
      if (item[method]) continue;
      const answer = await api(method.toUpperCase(), fill(pathname), tokens.owner, method === 'get' ? undefined : {});
      // Another documented route may take this URL: GET /admin/keys/999999/revoke is not, but
      // GET /admin/keys/revoke is GET /admin/keys/{id}, and model and account names may hold
      // '/', so PATCH /admin/models/x/routes is PATCH of the model "x/routes".
      if (servedBy(method, fill(pathname))) continue;
      assert.equal(answer.status, 405, `${method.toUpperCase()} ${pathname} is not documented but answered ${answer.status}`);
    }
  }
  // Something not documented at all is not served.
  const unknown = await api('GET', '/admin/not-documented', tokens.owner);
  assert.equal(unknown.status, 404);
});
