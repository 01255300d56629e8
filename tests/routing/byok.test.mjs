// Account-owned providers, "bring your own key" (docs/routing.md section 12), through the
// real programs: a provider added for an account (CLI --account, --json) serves only that
// account's requests, never another's (not by route, not pinned), its keys start at
// multiplier 0 so the account pays nothing at our prices for them; explain names the
// exclusion; an unknown account is refused and changes nothing; moving a provider to or from an
// account moves its keys' default multiplier (0 there, 1 at the operator's).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { addClient, addProvider, chat, explainUntil, ok, seen, setup, usageRow } from './lib.mjs';

let ctx;
let own;
let other;

before(async () => {
  ctx = await setup({ mocks: [['--models', 'bm-up'], ['--models', 'bm-up']] });
  own = await addClient(ctx, 'own');
  other = await addClient(ctx, 'other');
  await addProvider(ctx, 'shared', ctx.mocks[0].url);
});

after(async () => { await ctx?.stop(); });

test('an account\'s own provider serves it alone, at multiplier 0', async () => {
  const result = await ctx.cluster.tollgate(['provider', 'add', 'mine', '--protocol', 'openai', '--base-url', ctx.mocks[1].url,
    '--priority', '10', '--account', 'own', '--json', '--dir', ctx.cluster.dir]);
  assert.equal(result.code, 0, result.stderr);
  const added = JSON.parse(result.stdout);
  assert.equal(added.account, 'own');
  assert.equal(added.account_id, own.accountId);
  const key = await ok(ctx, 'POST', '/admin/providers/mine/keys', { secret: 'sk-own-secret-000000' });
  assert.equal(key.multiplier_ppm, 0, 'an account\'s key starts at multiplier 0');
  await ok(ctx, 'POST', '/admin/models', { name: 'bm', price_in: '10', price_out: '10',
    routes: [{ provider: 'shared', upstream_model: 'bm-up' }, { provider: 'mine', upstream_model: 'bm-up' }] });

  // The owner's requests go to its provider first (priority 10); nobody else's ever do.
  const mine = await explainUntil(ctx, { model: 'bm', key: own.keyId }, (e) => e.candidates[0]?.provider === 'mine');
  assert.equal(mine.candidates.length, 2);
  const theirs = await ok(ctx, 'POST', '/admin/routing/decide', { model: 'bm', key: other.keyId });
  assert.deepEqual(theirs.candidates.map((c) => c.provider), ['shared']);
  const excluded = theirs.excluded.find((x) => x.why === 'owner');
  assert.equal(excluded.provider, 'mine');

  const [sharedMock, mineMock] = ctx.mocks;
  const before = { shared: await seen(sharedMock, 'bm-up'), mine: await seen(mineMock, 'bm-up') };
  for (let i = 0; i < 10; i++) {
    const response = await chat(ctx, other.key, { model: 'bm' });
    assert.equal(response.status, 200, response.text);
  }
  assert.equal(await seen(mineMock, 'bm-up'), before.mine, 'no request of another account reached it');
  const pinned = await chat(ctx, other.key, { model: 'mine/bm-up' });
  assert.notEqual(pinned.status, 200, 'nor pinned by name');
  assert.equal(await seen(mineMock, 'bm-up'), before.mine);

  const ownResponse = await chat(ctx, own.key, { model: 'bm' });
  assert.equal(ownResponse.status, 200, ownResponse.text);
  assert.equal(await seen(mineMock, 'bm-up'), before.mine + 1);
  const ownRow = await usageRow(ctx, ownResponse.id);
  assert.equal(ownRow.provider_key_id, String(key.id));
  assert.equal(ownRow.cost_micros, '0', 'billed at its own multiplier, 0');
  const otherResponse = await chat(ctx, other.key, { model: 'bm' });
  const otherRow = await usageRow(ctx, otherResponse.id);
  assert.ok(Number(otherRow.cost_micros) > 0, 'the operator\'s provider at our prices');
});

test('an unknown account is refused naming it; the provider can be given back to the operator', async () => {
  const before = await ok(ctx, 'GET', '/admin/providers/mine');
  const bad = await ctx.api('PATCH', '/admin/providers/mine', { account: 'nobody-here' });
  assert.ok(bad.status === 404 || bad.status === 400, JSON.stringify(bad.body));
  assert.match(bad.body.error.message, /nobody-here|account/);
  const after = await ok(ctx, 'GET', '/admin/providers/mine');
  assert.equal(after.account, before.account);
  const cleared = await ctx.cluster.tollgate(['provider', 'set', 'mine', '--account', 'none', '--json', '--dir', ctx.cluster.dir]);
  assert.equal(cleared.code, 0, cleared.stderr);
  assert.equal(JSON.parse(cleared.stdout).account_id, null);
  await explainUntil(ctx, { model: 'bm', key: other.keyId }, (e) => e.candidates.some((c) => c.provider === 'mine'));
});

test('moving a provider between the operator and an account moves its keys\' default multipliers', async () => {
  const multipliers = async () => Object.fromEntries((await ok(ctx, 'GET', '/admin/providers/moved/keys')).data
    .map((k) => [k.name, k.multiplier_ppm]));
  await addProvider(ctx, 'moved', ctx.mocks[1].url, { key: { name: 'plain' } });
  await ok(ctx, 'POST', '/admin/providers/moved/keys', { secret: 'sk-moved-half-000000', name: 'half', multiplier_ppm: 500000 });
  assert.deepEqual(await multipliers(), { plain: 1000000, half: 500000 });
  // Each key moved has its own provider_key.update audit entry, from the provider's PATCH (same
  // request id as its provider.update entry), with the multiplier before and after.
  const keyIds = Object.fromEntries((await ok(ctx, 'GET', '/admin/providers/moved/keys')).data
    .map((k) => [String(k.id), k.name]));
  const audited = async (action) => (await ok(ctx, 'GET', `/admin/audit?action=${action}&limit=200`)).data;
  const keyMoves = async () => (await audited('provider_key.update'))
    .filter((e) => e.action === 'provider_key.update' && e.method === 'PATCH' && keyIds[e.target]);
  // To an account: the key at list price goes to 0 as if made there; the one set by hand stays.
  const given = await ctx.cluster.tollgate(['provider', 'set', 'moved', '--account', 'own', '--json', '--dir', ctx.cluster.dir]);
  assert.equal(given.code, 0, given.stderr);
  assert.deepEqual(await multipliers(), { plain: 0, half: 500000 });
  const toAccount = await keyMoves();
  assert.equal(toAccount.length, 1, JSON.stringify(toAccount));
  assert.equal(keyIds[toAccount[0].target], 'plain');
  assert.equal(toAccount[0].before.multiplier_ppm, 1000000);
  assert.equal(toAccount[0].after.multiplier_ppm, 0);
  const providerEntry = (await audited('provider.update')).find((e) => e.action === 'provider.update'
    && e.request_id === toAccount[0].request_id);
  assert.ok(providerEntry, 'the key\'s entry shares the provider change\'s request id');
  // To another account: nothing changes.
  await ok(ctx, 'PATCH', '/admin/providers/moved', { account: 'other' });
  assert.deepEqual(await multipliers(), { plain: 0, half: 500000 });
  // A change that is not the owner leaves the keys alone.
  await ok(ctx, 'PATCH', '/admin/providers/moved', { weight: 3 });
  assert.deepEqual(await multipliers(), { plain: 0, half: 500000 });
  // Back to the operator: the key at 0 is at list price again, so no account rides it for free.
  const back = await ctx.cluster.tollgate(['provider', 'set', 'moved', '--account', 'none', '--json', '--dir', ctx.cluster.dir]);
  assert.equal(back.code, 0, back.stderr);
  assert.deepEqual(await multipliers(), { plain: 1000000, half: 500000 });
  // Moves between accounts and other changes audited no key; the way back did.
  const moves = await keyMoves();
  assert.equal(moves.length, 2, JSON.stringify(moves));
  assert.equal(keyIds[moves[0].target], 'plain');
  assert.equal(moves[0].before.multiplier_ppm, 0);
  assert.equal(moves[0].after.multiplier_ppm, 1000000);
  // A refused move changes no key and audits none.
  const bad = await ctx.api('PATCH', '/admin/providers/moved', { account: 'nobody-here' });
  assert.notEqual(bad.status, 200);
  assert.deepEqual(await multipliers(), { plain: 1000000, half: 500000 });
  assert.equal((await keyMoves()).length, 2);
});
