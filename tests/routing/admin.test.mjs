// The admin API for routing through the real processes: explain (POST /admin/routing/decide),
// breakers (list with reason and reopening time, reset), sticky bindings, health, model lists
// and their refresh, mapping rules resolved against the fetched lists, scheduling and
// capabilities set through PATCH, roles and audit rows, 503 when no router answers, and the
// CLI commands (when ops/main.c has their rows).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { waitFor } from '../lib/harness.mjs';
import { addClient, addProvider, chat, explainUntil, fault, ok, setup } from './lib.mjs';

let ctx;
let client;
let pa;
let pb;
const tokens = {};

before(async () => {
  ctx = await setup({
    mocks: [['--models', 'm-a,m-b,other-x'], ['--models', 'm-a,m-c']],
    // Probe often so model lists and health arrive within the test's time.
    env: { TOLLGATE_HEALTH_PROBE_INTERVAL_MS: '1000' },
  });
  pa = await addProvider(ctx, 'pa', ctx.mocks[0].url, { priority: 10 });
  pb = await addProvider(ctx, 'pb', ctx.mocks[1].url);
  await ok(ctx, 'POST', '/admin/models', { name: 'm', routes: [{ provider: 'pa', upstream_model: 'm-a' }, { provider: 'pb', upstream_model: 'm-a' }] });
  client = await addClient(ctx, 'acme');
  const password = `routing-${crypto.randomBytes(6).toString('hex')}`;
  for (const role of ['viewer', 'operator']) {
    await ok(ctx, 'POST', '/admin/users', { username: `r-${role}`, password, role });
    tokens[role] = (await ok(ctx, 'POST', '/admin/login', { username: `r-${role}`, password })).token;
  }
});

after(async () => { await ctx?.stop(); });

describe('explain', () => {
  test('candidates in order with scores; the key given by id or in full', async () => {
    const byId = await explainUntil(ctx, { model: 'm', key: client.keyId }, (e) => e.candidates.length === 2);
    assert.equal(byId.status, 200);
    assert.equal(byId.mode, 'priority');
    assert.deepEqual(byId.candidates.map((c) => c.provider), ['pa', 'pb']);
    assert.deepEqual(byId.candidates.map((c) => c.rank), [1, 2]);
    assert.equal(byId.candidates[0].score.provider_priority, 10);
    assert.equal(typeof byId.router, 'number');
    const byKey = await ok(ctx, 'POST', '/admin/routing/decide', { model: 'm', key: client.key });
    assert.deepEqual(byKey.candidates.map((c) => c.provider), ['pa', 'pb']);
    const unknown = await ctx.api('POST', '/admin/routing/decide', { model: 'm', key: `tg-${'0'.repeat(48)}` });
    assert.equal(unknown.status, 404);
  });

  test('an unknown model explains 404 model_not_found; bad bodies are 400', async () => {
    const answer = await ok(ctx, 'POST', '/admin/routing/decide', { model: 'no-such-model' });
    assert.equal(answer.status, 404);
    assert.equal(answer.error_code, 'model_not_found');
    for (const body of [{}, { model: 'm', colour: 1 }, { model: 'm', capabilities: ['Vision'] }, { model: 'm', capabilities: 7 }]) {
      assert.equal((await ctx.api('POST', '/admin/routing/decide', body)).status, 400, JSON.stringify(body));
    }
  });

  test('capabilities: PATCH the key and the model; explain excludes what lacks a tag', async () => {
    // A tag no candidate of the model declares excludes nobody (docs/routing.md section 2).
    let answer = await ok(ctx, 'POST', '/admin/routing/decide', { model: 'm', capabilities: ['vision'] });
    assert.equal(answer.status, 200, JSON.stringify(answer));
    assert.equal(answer.candidates.length, 2);
    const key = await ok(ctx, 'PATCH', `/admin/provider-keys/${pb.keyId}`, { capabilities: ['vision', 'tools'], max_rps: 1000, max_concurrent: 50 });
    assert.deepEqual(key.capabilities, ['vision', 'tools']);
    assert.equal(key.max_rps, 1000);
    assert.equal(key.max_concurrent, 50);
    answer = await explainUntil(ctx, { model: 'm', capabilities: 'vision,tools' }, (e) => e.candidates.length === 1);
    assert.deepEqual(answer.candidates.map((c) => c.provider), ['pb']);
    assert.deepEqual(answer.excluded.map((e) => [e.provider, e.why]), [['pa', 'capability']]);
    assert.match(answer.excluded[0].detail, /vision/);
    // A tag the model carries counts for all its keys.
    const model = await ok(ctx, 'PATCH', '/admin/models/m', { capabilities: ['context-1m'] });
    assert.deepEqual(model.capabilities, ['context-1m']);
    answer = await explainUntil(ctx, { model: 'm', capabilities: ['context-1m'] }, (e) => e.candidates.length === 2);
    await ok(ctx, 'PATCH', '/admin/models/m', { capabilities: [] });
    const cleared = await ok(ctx, 'PATCH', `/admin/provider-keys/${pb.keyId}`, { max_rps: null, max_concurrent: null, capabilities: [] });
    assert.equal(cleared.max_rps, null);
    assert.equal((await ctx.api('PATCH', `/admin/provider-keys/${pb.keyId}`, { capabilities: ['a b'] })).status, 400);
    assert.equal((await ctx.api('PATCH', `/admin/provider-keys/${pb.keyId}`, { max_rps: 0 })).status, 400);
  });

  test('scheduling through PATCH /admin/models/{m}', async () => {
    const model = await ok(ctx, 'PATCH', '/admin/models/m', { scheduling: 'weighted' });
    assert.equal(model.scheduling, 'weighted');
    const answer = await explainUntil(ctx, { model: 'm' }, (e) => e.mode === 'weighted');
    assert.ok('weight' in answer.candidates[0].score);
    assert.equal((await ctx.api('PATCH', '/admin/models/m', { scheduling: 'fastest' })).status, 400);
    await ok(ctx, 'PATCH', '/admin/models/m', { scheduling: 'priority' });
  });
});

describe('model lists, rules and mappings', () => {
  test('the fetched lists, and a refresh on request', async () => {
    const list = await waitFor(async () => {
      const answer = await ok(ctx, 'GET', '/admin/providers/pa/models');
      return answer.data.length === 3 ? answer : null;
    }, { timeout: 10000, message: 'pa\'s model list' });
    assert.deepEqual(list.data.map((m) => m.model), ['m-a', 'm-b', 'other-x']);
    assert.equal(list.fetch.ok, true);
    assert.equal(list.fetch.model_count, 3);
    const before = Date.parse(list.fetch.fetched_at);
    const answer = await ctx.api('POST', '/admin/providers/pa/models/refresh');
    assert.equal(answer.status, 202);
    assert.equal(answer.body.provider_id, pa.id);
    await waitFor(async () => Date.parse((await ok(ctx, 'GET', '/admin/providers/pa/models')).fetch.fetched_at) > before,
      { timeout: 5000, message: 'a new fetch' });
    assert.equal((await ctx.api('GET', '/admin/providers/nope/models')).status, 404);
  });

  test('rules resolve against the fetched lists; exclusions, explain and requests follow', async () => {
    await ok(ctx, 'POST', '/admin/models', { name: 'r' });
    const prefix = await ok(ctx, 'POST', '/admin/models/r/rules', { kind: 'prefix', pattern: 'm-' }, 201);
    assert.equal(prefix.kind, 'prefix');
    assert.equal(prefix.model, 'r');
    let answer = await explainUntil(ctx, { model: 'r' }, (e) => e.candidates.length === 4);
    assert.deepEqual(answer.candidates.map((c) => `${c.provider}:${c.upstream_model}`).sort(), ['pa:m-a', 'pa:m-b', 'pb:m-a', 'pb:m-c']);
    assert.ok(answer.candidates.every((c) => c.source === 'rule'));
    const keyword = await ok(ctx, 'POST', '/admin/models/r/rules', { kind: 'exclude_keyword', pattern: '-b' }, 201);
    const provider = await ok(ctx, 'POST', '/admin/models/r/rules', { kind: 'exclude_provider', provider: 'pb' }, 201);
    answer = await explainUntil(ctx, { model: 'r' }, (e) => e.candidates.length === 1);
    assert.equal(`${answer.candidates[0].provider}:${answer.candidates[0].upstream_model}`, 'pa:m-a');
    const whys = answer.excluded.filter((e) => e.why === 'rule');
    assert.ok(whys.some((e) => e.rule_id === keyword.id && /-b/.test(e.detail)), JSON.stringify(answer.excluded));
    assert.ok(whys.some((e) => e.rule_id === provider.id), JSON.stringify(answer.excluded));
    // The health instance writes what the rules resolve to.
    const mappings = await waitFor(async () => {
      const rows = (await ok(ctx, 'GET', '/admin/models/r/mappings')).data;
      return rows.length === 1 ? rows : null;
    }, { timeout: 10000, message: 'model_mappings of r' });
    assert.equal(mappings[0].provider, 'pa');
    assert.equal(mappings[0].source, 'rule');
    assert.equal(mappings[0].rule_id, prefix.id);
    const response = await chat(ctx, client.key, { model: 'r' });
    assert.equal(response.status, 200, response.text);
    // Listing and deleting.
    const rules = (await ok(ctx, 'GET', '/admin/models/r/rules')).data;
    assert.deepEqual(rules.map((r) => r.kind), ['prefix', 'exclude_keyword', 'exclude_provider']);
    const gone = await ok(ctx, 'DELETE', `/admin/rules/${provider.id}`);
    assert.equal(gone.id, provider.id);
    assert.equal((await ctx.api('DELETE', `/admin/rules/${provider.id}`)).status, 404);
    answer = await explainUntil(ctx, { model: 'r' }, (e) => e.candidates.length === 3);
    // Broken rules are refused or explained.
    assert.equal((await ctx.api('POST', '/admin/models/r/rules', { kind: 'prefix' })).status, 400);
    assert.equal((await ctx.api('POST', '/admin/models/r/rules', { kind: 'exclude_provider' })).status, 400);
    assert.equal((await ctx.api('POST', '/admin/models/r/rules', { kind: 'glob', pattern: 'x' })).status, 400);
    assert.equal((await ctx.api('POST', '/admin/models/r/rules', { kind: 'exact', pattern: 'x', provider: 'nope' })).status, 404);
    const broken = await ok(ctx, 'POST', '/admin/models/r/rules', { kind: 'regex', pattern: '(' }, 201);
    answer = await explainUntil(ctx, { model: 'r' }, (e) => e.excluded.some((x) => x.rule_id === broken.id));
    assert.match(answer.excluded.find((x) => x.rule_id === broken.id).detail, /invalid regex/);
  });
});

describe('breakers', () => {
  test('a (provider, model) breaker opens on 5xx, shows reason and reopening, and resets', async () => {
    await fault(ctx.mocks[0], 'm-a', '503');
    for (let i = 0; i < 3; i++) {
      const response = await chat(ctx, client.key, { model: 'm' });
      assert.equal(response.status, 200, 'failover hides the failure');
    }
    const open = await waitFor(async () => {
      const list = (await ok(ctx, 'GET', '/admin/breakers')).data;
      // Outcomes reach the router in batches: wait for the third failure.
      return list.find((b) => b.layer === 'model' && b.provider_id === pa.id && b.upstream_model === 'm-a' && b.state === 'open') ?? null;
    }, { timeout: 5000, message: 'the breaker in GET /admin/breakers' });
    assert.equal(open.state, 'open');
    assert.equal(open.reason, '5xx');
    assert.equal(open.status, 503);
    assert.equal(open.provider, 'pa');
    assert.ok(Date.parse(open.reopens_at) > Date.now() - 1000, open.reopens_at);
    assert.equal(open.reopens_at_ms, Date.parse(open.reopens_at));
    assert.deepEqual(open.routers, [0]);
    const one = await ok(ctx, 'GET', '/admin/breakers?router=0');
    assert.equal(one.routers.length, 1);
    assert.equal(one.routers[0].answered, true);
    assert.equal((await ctx.api('GET', '/admin/breakers?router=9')).status, 400);
    const explained = await ok(ctx, 'POST', '/admin/routing/decide', { model: 'm' });
    assert.deepEqual(explained.excluded.map((e) => [e.provider, e.why]), [['pa', 'breaker']]);
    // Reset: only an operator; the breaker is gone everywhere.
    await fault(ctx.mocks[0], 'm-a', '');
    const viewer = await ctx.api('POST', '/admin/breakers/reset', { provider: 'pa', upstream_model: 'm-a' }, tokens.viewer);
    assert.equal(viewer.status, 403);
    const reset = await ctx.api('POST', '/admin/breakers/reset', { provider: 'pa', upstream_model: 'm-a' }, tokens.operator);
    assert.equal(reset.status, 200, JSON.stringify(reset.body));
    assert.equal(reset.body.reset, 1);
    assert.equal(reset.body.routers, 1);
    assert.equal(reset.body.broadcast, true);
    assert.deepEqual((await ok(ctx, 'GET', '/admin/breakers')).data, []);
    const audit = await ctx.cluster.psql("SELECT actor, target FROM audit_log WHERE action = 'breaker.reset' ORDER BY id DESC LIMIT 1");
    assert.deepEqual(audit[0], { actor: 'user:r-operator', target: `${pa.id}/m-a` });
    assert.equal((await ctx.api('POST', '/admin/breakers/reset', { provider: 'pa' })).status, 400);
    assert.equal((await ctx.api('POST', '/admin/breakers/reset', { provider_key_id: 999 })).status, 404);
  });

  test('a 401 disables the key, durably, with its reason; reset makes it active again', async () => {
    await fault(ctx.mocks[0], 'm-a', '401');
    // Dispatch learns of the reset above from the next routing table (within
    // 20 ms): until then it may still skip pa, so ask until pa is tried.
    const disabled = await waitFor(async () => {
      const response = await chat(ctx, client.key, { model: 'm' });
      assert.equal(response.status, 200, 'the second provider answers');
      const list = (await ok(ctx, 'GET', '/admin/breakers')).data;
      return list.find((b) => b.layer === 'key' && b.provider_key_id === pa.keyId) ?? null;
    }, { timeout: 5000, message: 'the key breaker' });
    assert.equal(disabled.state, 'disabled');
    assert.equal(disabled.provider, 'pa');
    assert.equal(disabled.reopens_at, null);
    const key = await waitFor(async () => {
      const row = await ok(ctx, 'GET', `/admin/provider-keys/${pa.keyId}`);
      return row.status === 'disabled' ? row : null;
    }, { timeout: 5000, message: 'the key disabled in PostgreSQL' });
    assert.match(key.disabled_reason, /401/);
    await fault(ctx.mocks[0], 'm-a', '');
    const reset = await ok(ctx, 'POST', '/admin/breakers/reset', { provider_key_id: pa.keyId });
    assert.equal(reset.reenabled, true);
    assert.equal((await ok(ctx, 'GET', `/admin/provider-keys/${pa.keyId}`)).status, 'active');
    await explainUntil(ctx, { model: 'm' }, (e) => e.candidates[0]?.provider === 'pa', 'pa back first');
    assert.deepEqual((await ok(ctx, 'GET', '/admin/breakers')).data, []);
  });
});

describe('sticky bindings', () => {
  test('list (filtered) and delete, audited', async () => {
    const list = await ok(ctx, 'GET', '/admin/sticky?session=s-1');
    assert.ok(Array.isArray(list.data));
    assert.equal(list.routers[0].answered, true);
    const deleted = await ok(ctx, 'DELETE', '/admin/sticky/conv%2F42');
    assert.equal(deleted.deleted, 0);
    assert.equal(deleted.routers, 1);
    const audit = await ctx.cluster.psql("SELECT target FROM audit_log WHERE action = 'sticky.delete' ORDER BY id DESC LIMIT 1");
    assert.equal(audit[0].target, 'conv/42');
    assert.equal((await ctx.api('DELETE', '/admin/sticky/x', undefined, tokens.viewer)).status, 403);
  });
});

test('roles: a viewer may ask and read, not change; decide writes no audit row', async () => {
  const before = Number((await ctx.cluster.psql('SELECT count(*) AS n FROM audit_log'))[0].n);
  assert.equal((await ctx.api('POST', '/admin/routing/decide', { model: 'm' }, tokens.viewer)).status, 200);
  for (const path of ['/admin/breakers', '/admin/sticky', '/admin/health', '/admin/providers/pa/models', '/admin/models/m/rules', '/admin/models/m/mappings']) {
    assert.equal((await ctx.api('GET', path, undefined, tokens.viewer)).status, 200, path);
  }
  const after = Number((await ctx.cluster.psql('SELECT count(*) AS n FROM audit_log'))[0].n);
  assert.equal(after, before);
  for (const [method, path, body] of [['POST', '/admin/models/m/rules', { kind: 'include' }], ['DELETE', '/admin/rules/1'],
    ['POST', '/admin/providers/pa/models/refresh'], ['POST', '/admin/breakers/reset', { provider_key_id: 1 }]]) {
    assert.equal((await ctx.api(method, path, body, tokens.viewer)).status, 403, `${method} ${path}`);
  }
  const actions = (await ctx.cluster.psql('SELECT DISTINCT action FROM audit_log')).map((r) => r.action);
  for (const action of ['rule.create', 'rule.delete', 'provider.models_refresh', 'breaker.reset', 'sticky.delete']) {
    assert.ok(actions.includes(action), action);
  }
});

test('health: per provider, key and model, and the model-list fetches', async () => {
  const health = await waitFor(async () => {
    const answer = await ok(ctx, 'GET', '/admin/health');
    return answer.data.some((h) => h.upstream_model === 'm-a' && h.provider === 'pb') ? answer : null;
  }, { timeout: 15000, interval: 250, message: 'health rows' });
  const row = health.data.find((h) => h.upstream_model === 'm-a' && h.provider === 'pb');
  assert.ok(['up', 'degraded', 'down', 'unknown'].includes(row.state));
  assert.ok(row.attempts > 0 && row.success_ppm > 0);
  assert.ok(health.fetches.some((f) => f.provider === 'pa' && f.ok));
  const only = await ok(ctx, 'GET', '/admin/health?provider=pb');
  assert.ok(only.data.every((h) => h.provider_id === pb.id));
  assert.ok(only.fetches.every((f) => f.provider === 'pb'));
  assert.equal((await ctx.api('GET', '/admin/health?provider=nope')).status, 404);
});

describe('the CLI', () => {
  const cli = async (...args) => {
    const result = await ctx.cluster.tollgate([...args, '--dir', ctx.cluster.dir]);
    assert.equal(result.code, 0, `tollgate ${args.join(' ')}: ${result.stderr}`);
    return result.stdout;
  };

  test('routing decide, breakers, sticky, health', async () => {
    const decide = await cli('routing', 'decide', 'm', '--key', String(client.keyId));
    assert.match(decide, /^model m, mode priority: 200/m);
    assert.match(decide, /RANK\s+PROVIDER\s+KEY/);
    assert.match(decide, /^1\s+pa\s/m);
    assert.match(JSON.parse(await cli('routing', 'decide', 'm', '--json')).model, /^m$/);
    assert.match(await cli('breakers'), /every breaker is closed/);
    assert.match(await cli('breakers', 'reset', '--provider', 'pa', '--model', 'm-a'), /breaker\(s\) closed by 1 router/);
    assert.match(await cli('sticky'), /no bindings/);
    assert.match(await cli('health'), /PROVIDER\s+KEY\s+MODEL\s+STATE/);
    const usage = await ctx.cluster.tollgate(['breakers', 'reset', '--dir', ctx.cluster.dir]);
    assert.equal(usage.code, 2);
  });

  test('model rule add, list, rm; model set; mappings; provider models', async () => {
    await cli('model', 'add', 'cli-model');
    const added = await cli('model', 'rule', 'add', 'cli-model', '--kind', 'keyword', '--pattern', 'other');
    const id = added.match(/^rule (\d+) added to model cli-model: keyword 'other'/m)[1];
    assert.match(await cli('model', 'rule', 'list', 'cli-model'), new RegExp(`^${id}\\s+keyword\\s+other`, 'm'));
    assert.match(await cli('model', 'set', 'cli-model', '--scheduling', 'cost', '--capabilities', 'tools,vision'),
      /scheduling cost, capabilities tools,vision/);
    await explainUntil(ctx, { model: 'cli-model' }, (e) => e.candidates.some((c) => c.upstream_model === 'other-x'));
    assert.match(await cli('model', 'rule', 'rm', id), new RegExp(`^rule ${id} \\(keyword 'other'\\) of model cli-model deleted`));
    assert.match(await cli('model', 'mappings', 'm'), /pa\s+m-a\s+route/);
    assert.match(await cli('provider', 'models', 'pb'), /^m-a\nm-c\n\(last fetch at/);
    assert.match(await cli('provider', 'models', 'refresh', 'pb'), /requested/);
    assert.match(await cli('provider', 'key', 'set', String(pb.keyId), '--max-rps', '100', '--capabilities', 'tools'),
      /capabilities tools, max rps 100/);
    await cli('provider', 'key', 'set', String(pb.keyId), '--max-rps', 'none', '--capabilities', '');
  });
});

// Last: stops the router, so nothing after it can route.
test('no router answers: 503 router_unavailable within the wait, then answers again', async () => {
  const status = await ctx.cluster.status();
  const router = (status.programs ?? Object.values(status).find(Array.isArray)).find((p) => p.name === 'router');
  process.kill(router.pid, 'SIGSTOP');
  try {
    const started = Date.now();
    const answer = await ctx.api('GET', '/admin/breakers');
    assert.equal(answer.status, 503);
    assert.equal(answer.body.error.type, 'router_unavailable');
    const waited = Date.now() - started;
    assert.ok(waited >= 1900 && waited < 4000, `waited ${waited} ms`);
  } finally {
    process.kill(router.pid, 'SIGCONT');
  }
  await waitFor(async () => (await ctx.api('GET', '/admin/breakers')).status === 200,
    { timeout: 5000, message: 'the router answers again' });
});
