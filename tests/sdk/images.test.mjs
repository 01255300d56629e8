// Image generation (POST /v1/images/generations) through the real programs,
// judged by the official openai SDK's client.images.generate: passed through
// to an OpenAI-protocol provider (the mock answers n small PNGs), admitted
// with a reservation of n x the model's price per image, settled at
// n x price per image, one usage row (images = n), and the account's
// balance lowered by exactly that. Bad n, a missing prompt, a model without
// a price per image and a provider that cannot take the request get clear
// 400s in OpenAI's error shape.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { startCluster, startMock, waitFor } from '../lib/harness.mjs';
import { usageRow } from './common.mjs';

const PRICE = 40000; // micros per image: --price-image 0.04
const BALANCE = 10000000; // micros: --balance 10

let cluster;
let mock;
let client;

async function cli(...args) {
  const result = await cluster.tollgate(args, { env: { TOLLGATE_DIR: cluster.dir } });
  if (result.code !== 0) throw new Error(`tollgate ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

async function newKey(account, balance) {
  await cli('account', 'add', account, '--balance', balance);
  const key = (await cli('key', 'create', account, '--name', account)).trim().split('\n').pop();
  assert.match(key, /^tg-[0-9a-f]{48}$/);
  return key;
}

async function balance(account) {
  const rows = await cluster.psql(`SELECT balance_micros FROM accounts WHERE name = '${account}'`);
  return Number(rows[0].balance_micros);
}

before(async () => {
  mock = await startMock(['--models', 'gpt-image-1,dall-e-3,gpt-4o-mini,claude-3-5-haiku-latest']);
  cluster = await startCluster();
  await cli('provider', 'add', 'up-openai', '--protocol', 'openai', '--base-url', mock.url);
  await cli('provider', 'key', 'add', 'up-openai', '--secret', 'sk-openai-secret');
  await cli('provider', 'add', 'up-anthropic', '--protocol', 'anthropic', '--base-url', mock.url);
  await cli('provider', 'key', 'add', 'up-anthropic', '--secret', 'sk-anthropic-secret');
  await cli('model', 'add', 'painter', '--route', 'up-openai:gpt-image-1', '--price-image', '0.04');
  await cli('model', 'add', 'sketcher', '--route', 'up-openai:dall-e-3', '--price-image', '0.04');
  await cli('model', 'add', 'chatter', '--route', 'up-openai:gpt-4o-mini', '--price-in', '1', '--price-out', '2');
  await cli('model', 'add', 'claude-painter', '--route', 'up-anthropic:claude-3-5-haiku-latest',
    '--price-image', '0.04');
  const key = await newKey('img', '10');
  client = new OpenAI({ apiKey: key, baseURL: `${cluster.gateway}/v1`, maxRetries: 0 });
  await waitFor(async () => {
    const response = await fetch(`${cluster.gateway}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ model: 'chatter', messages: [{ role: 'user', content: 'hi' }] }),
    });
    return response.status === 200;
  }, { timeout: 10000, message: 'the new key and models work' });
});

after(async () => { await cluster?.stop(); await mock?.stop(); });

describe('images.generate', () => {
  test('the admin API shows the price per image; a model without one shows null', async () => {
    const painter = JSON.parse(await cli('model', 'show', 'painter', '--json'));
    assert.equal(painter.price_image_micros, PRICE);
    const chatter = JSON.parse(await cli('model', 'show', 'chatter', '--json'));
    assert.equal(chatter.price_image_micros, null);
  });

  test('n images in b64_json, billed n x price per image, balance lowered by that', async () => {
    const before = await balance('img');
    const { data: result, response } = await client.images.generate({
      model: 'painter', prompt: 'a red square on white', n: 3, size: '1024x1024', quality: 'low',
    }).withResponse();
    assert.equal(result.data.length, 3);
    for (const image of result.data) {
      const bytes = Buffer.from(image.b64_json, 'base64');
      assert.equal(bytes.subarray(1, 4).toString('latin1'), 'PNG');
    }
    assert.ok(result.created > 0);
    assert.ok(result.usage.output_tokens > 0); // gpt-image models report tokens too
    const row = await waitFor(async () => {
      const rows = await cluster.psql(`SELECT * FROM usage WHERE request_id = '${response.headers.get('x-request-id')}'`);
      return rows[0];
    }, { timeout: 5000, message: 'usage row' });
    assert.equal(Number(row.images), 3);
    assert.equal(Number(row.status), 200);
    assert.equal(Number(row.cost_micros), 3 * PRICE);
    assert.equal(row.upstream_model, 'gpt-image-1');
    // The request log (admin API, `tollgate requests show`) says the same.
    const logged = JSON.parse(await cli('requests', 'show', row.request_id, '--json'));
    assert.equal(logged.images, 3);
    assert.equal(logged.cost_micros, 3 * PRICE);
    await waitFor(async () => (await balance('img')) === before - 3 * PRICE,
      { timeout: 5000, message: `balance ${before} - ${3 * PRICE}` });
    // The mock saw the body the client sent, model rewritten to the upstream's.
    const stats = await (await fetch(`${mock.url}/mock/stats`)).json();
    assert.equal(stats.last.path, '/v1/images/generations');
    assert.equal(stats.last.body_json.model, 'gpt-image-1');
    assert.equal(stats.last.body_json.n, 3);
    assert.equal(stats.last.body_json.quality, 'low');
  });

  test('n defaults to 1; response_format url passes through', async () => {
    const { data: result, response } = await client.images.generate({
      model: 'sketcher', prompt: 'a lighthouse', response_format: 'url',
    }).withResponse();
    assert.equal(result.data.length, 1);
    assert.match(result.data[0].url, /^https:\/\/mock\.test\/images\/0\.png$/);
    const row = await usageRow(cluster, response.headers.get('x-request-id'));
    assert.equal(Number(row.images), 1);
    assert.equal(Number(row.cost_micros), PRICE);
    assert.equal(row.estimated, 'f');
  });

  test('bad n, missing or empty prompt, stream: 400 naming the field', async () => {
    for (const [body, field] of [
      [{ model: 'painter', prompt: 'x', n: 11 }, "'n'"],
      [{ model: 'painter', prompt: 'x', n: 0 }, "'n'"],
      [{ model: 'painter', prompt: 'x', n: 1.5 }, "'n'"],
      [{ model: 'painter' }, "'prompt'"],
      [{ model: 'painter', prompt: '' }, "'prompt'"],
      [{ prompt: 'x' }, "'model'"],
    ]) {
      await assert.rejects(client.images.generate(body), (error) =>
        error instanceof OpenAI.BadRequestError && error.message.includes(field)
        && error.error?.type === 'invalid_request_error', JSON.stringify(body));
    }
    const response = await fetch(`${cluster.gateway}/v1/images/generations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${client.apiKey}` },
      body: JSON.stringify({ model: 'painter', prompt: 'x', stream: true }),
    });
    assert.equal(response.status, 400);
    assert.match((await response.json()).error.message, /'stream'/);
  });

  test('a model without a price per image: a clear 400', async () => {
    await assert.rejects(client.images.generate({ model: 'chatter', prompt: 'a cat' }), (error) =>
      error instanceof OpenAI.BadRequestError && /'chatter' does not generate images/.test(error.message)
      && /price per image/.test(error.message));
  });

  test('a provider whose protocol has no image endpoint: a clear 400, nothing charged', async () => {
    const before = await balance('img');
    await assert.rejects(client.images.generate({ model: 'claude-painter', prompt: 'a cat' }), (error) =>
      error instanceof OpenAI.BadRequestError && /openai-images/.test(error.message));
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(await balance('img'), before);
  });

  test('the reservation is n x price per image: more than the balance is refused', async () => {
    const key = await newKey('poor', '0.05'); // 50000 micros: one image fits, two do not
    const poor = new OpenAI({ apiKey: key, baseURL: `${cluster.gateway}/v1`, maxRetries: 0 });
    await waitFor(async () => {
      try {
        await poor.models.list();
        return true;
      } catch { return false; }
    }, { timeout: 10000, message: 'the poor key works' });
    await assert.rejects(poor.images.generate({ model: 'painter', prompt: 'two cats', n: 2 }), (error) =>
      error.status === 402 && /balance/i.test(error.message));
    const one = await poor.images.generate({ model: 'painter', prompt: 'one cat', n: 1 });
    assert.equal(one.data.length, 1);
    await waitFor(async () => (await balance('poor')) === 50000 - PRICE,
      { timeout: 5000, message: 'poor balance after one image' });
  });
  test('reports count images: rollups, spend by model (CLI CSV and JSON), usage records', async () => {
    // What the usage rows say, per model, for the rollups to match.
    const sums = await cluster.psql(`SELECT model, sum(images) AS images, sum(cost_micros) AS cost
      FROM usage WHERE NOT operator_loss AND model IN ('painter', 'sketcher') GROUP BY model`);
    const want = Object.fromEntries(sums.map((r) => [r.model, Number(r.images)]));
    assert.ok(want.painter >= 4, JSON.stringify(sums)); // 3 + the poor key's 1
    assert.equal(want.sketcher, 1);
    for (const table of ['usage_hourly', 'usage_daily']) {
      const rows = await cluster.psql(`SELECT model, sum(images) AS images FROM ${table}
        WHERE model IN ('painter', 'sketcher') GROUP BY model`);
      for (const row of rows) assert.equal(Number(row.images), want[row.model], `${table} ${row.model}`);
      assert.equal(rows.length, 2, table);
    }
    const spend = JSON.parse(await cli('ledger', 'spend', '--by', 'model', '--json'));
    assert.equal(spend.rows.find((r) => r.group === 'painter').images, want.painter);
    assert.equal(spend.rows.find((r) => r.group === 'sketcher').images, want.sketcher);
    assert.equal(spend.rows.find((r) => r.group === 'chatter').images, 0);
    assert.ok(spend.total.images >= want.painter + want.sketcher);
    const csv = (await cli('ledger', 'spend', '--by', 'model', '--csv')).trim().split('\n');
    const header = csv[0].split(',');
    const images = header.indexOf('images');
    assert.ok(images > 0, csv[0]);
    const painter = csv.find((line) => line.startsWith('"painter"')).split(',');
    assert.equal(Number(painter[images]), want.painter);
    const table = await cli('ledger', 'spend', '--by', 'model');
    assert.match(table.split('\n')[0], /images/);
    // The console's statistics (GET /admin/stats; /admin/self/usage is the same for one account).
    const stats = await (await fetch(`${cluster.admin}/admin/stats?minutes=60`,
      { headers: { authorization: `Bearer ${cluster.token}` } })).json();
    assert.equal(stats.totals.images, Number((await cluster.psql(`SELECT sum(images) AS n FROM usage
      WHERE started_at > now() - interval '60 minutes'`))[0].n), JSON.stringify(stats.totals));
    const usage = JSON.parse(await cli('ledger', 'usage', '--model', 'sketcher', '--json'));
    assert.equal(usage.records.length, 1);
    assert.equal(usage.records[0].images, 1);
    const records = (await cli('ledger', 'usage', '--model', 'sketcher', '--csv')).trim().split('\n');
    const column = records[0].split(',').indexOf('images');
    assert.ok(column > 0, records[0]);
    assert.equal(records[1].split(',')[column], '1');
    // The ledger check compares the daily rollup's images with the rows' too.
    const env = { env: { TOLLGATE_DIR: cluster.dir } };
    assert.equal((await cluster.tollgate(['ledger', 'check'], env)).code, 0);
    await cluster.psql(`UPDATE usage_daily SET images = images + 1 WHERE model = 'painter'`);
    try {
      const broken = await cluster.tollgate(['ledger', 'check'], env);
      assert.notEqual(broken.code, 0);
      assert.match(broken.stdout + broken.stderr, /images/);
    } finally {
      await cluster.psql(`UPDATE usage_daily SET images = images - 1 WHERE model = 'painter'`);
    }
    assert.equal((await cluster.tollgate(['ledger', 'check'], env)).code, 0);
  });
});
