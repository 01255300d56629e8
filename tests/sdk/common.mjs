// Shared setup of the SDK client tests: one mock upstream speaking every
// protocol, one Tollgate cluster, and a provider of each upstream protocol
// pointing at that same mock. A logical model per upstream protocol lets a
// client of any protocol reach an upstream of any other:
//
//   to-openai     -> provider up-openai    (OpenAI Chat Completions)
//   to-anthropic  -> provider up-anthropic (Anthropic Messages)
//   to-gemini     -> provider up-gemini    (Gemini generateContent)
//
// and per protocol the bug-list variants:
//   cached-to-P   upstream model `cached-model`: the mock reports 20 cached prompt tokens
//   slow-to-P     upstream model `slow-model`: 500 ms between stream events
//   fail-to-P     upstream model `fail-model`: the upstream answers 400 in its own shape
//   cut-to-P      upstream model `cut-model`: the stream is cut after 3 events
import assert from 'node:assert/strict';

import { startCluster, startMock, waitFor } from '../lib/harness.mjs';

export const UPSTREAMS = ['openai', 'anthropic', 'gemini'];
export const CACHED_TOKENS = 20;

// The provider-side model name per upstream protocol (Gemini's goes into the path).
const UPSTREAM_MODEL = { openai: 'gpt-4o-mini', anthropic: 'claude-3-5-haiku-latest', gemini: 'gemini-2.0-flash' };

export const WEATHER_TOOL = {
  name: 'get_weather',
  description: 'Weather of a city',
  parameters: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] },
};
export const TOOL_ARGS = { location: 'Paris' };

async function cli(cluster, ...args) {
  const result = await cluster.tollgate(args, { env: { TOLLGATE_DIR: cluster.dir } });
  if (result.code !== 0) throw new Error(`tollgate ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

// Starts the mock and the cluster and configures providers, models and a key.
// Resolves { cluster, mock, key, gateway, stop() }.
export async function setup() {
  const mock = await startMock(['--models', Object.values(UPSTREAM_MODEL).join(','),
    '--fault', `cached-model=cached:${CACHED_TOKENS}`,
    '--fault', 'slow-model=delay-chunks:500',
    '--fault', 'fail-model=400',
    '--fault', 'cut-model=cut:3']);
  const cluster = await startCluster();
  for (const protocol of UPSTREAMS) {
    await cli(cluster, 'provider', 'add', `up-${protocol}`, '--protocol', protocol, '--base-url', mock.url);
    await cli(cluster, 'provider', 'key', 'add', `up-${protocol}`, '--secret', `sk-${protocol}-secret`);
    await cli(cluster, 'model', 'add', `to-${protocol}`, '--route', `up-${protocol}:${UPSTREAM_MODEL[protocol]}`,
      '--price-in', '1', '--price-out', '2');
    for (const variant of ['cached', 'slow', 'fail', 'cut']) {
      await cli(cluster, 'model', 'add', `${variant}-to-${protocol}`, '--route', `up-${protocol}:${variant}-model`,
        '--price-in', '1', '--price-out', '2');
    }
  }
  await cli(cluster, 'account', 'add', 'sdk', '--balance', '1000');
  const key = (await cli(cluster, 'key', 'create', 'sdk', '--name', 'sdk')).trim().split('\n').pop();
  assert.match(key, /^tg-[0-9a-f]{48}$/);
  await waitFor(async () => {
    const response = await fetch(`${cluster.gateway}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ model: 'to-gemini', messages: [{ role: 'user', content: 'hi' }] }),
    });
    return response.status === 200;
  }, { timeout: 10000, message: 'the new key and models work' });
  return {
    cluster, mock, key, gateway: cluster.gateway,
    async stop() { await cluster.stop(); await mock.stop(); },
    async mockStats() { return (await fetch(`${mock.url}/mock/stats`)).json(); },
  };
}

// Waits for the usage row of a request and returns it.
export async function usageRow(cluster, requestId) {
  return waitFor(async () => {
    const rows = await cluster.psql(`SELECT * FROM usage WHERE request_id = '${requestId}'`);
    return rows[0];
  }, { timeout: 5000, message: `usage row of ${requestId}` });
}
