// An upstream that quotes our provider key back in an error body (some relays
// and self-hosted servers do): the client gets the error, never the key.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';

import { freePort, startCluster, waitFor } from '../lib/harness.mjs';

const secret = 'sk-echoed-provider-secret-0123456789';
let cluster;
let upstream;
let key;

before(async () => {
  const port = await freePort();
  upstream = http.createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      const seen = request.headers.authorization ?? request.headers['x-api-key'] ?? '';
      response.writeHead(400, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ error: { message: `bad request with header ${seen}`, type: 'invalid_request_error' } }));
    });
  });
  await new Promise((resolve) => upstream.listen(port, '127.0.0.1', resolve));
  cluster = await startCluster();
  const env = { TOLLGATE_DIR: cluster.dir };
  const cli = async (...args) => {
    const result = await cluster.tollgate(args, { env });
    assert.equal(result.code, 0, result.stderr);
    return result.stdout;
  };
  await cli('provider', 'add', 'echo', '--protocol', 'openai', '--base-url', `http://127.0.0.1:${port}`);
  await cli('provider', 'key', 'add', 'echo', '--secret', secret);
  await cli('provider', 'add', 'echo-anthropic', '--protocol', 'anthropic', '--base-url', `http://127.0.0.1:${port}`);
  await cli('provider', 'key', 'add', 'echo-anthropic', '--secret', secret);
  await cli('model', 'add', 'echo-model', '--route', 'echo:echo-model');
  await cli('model', 'add', 'echo-converted', '--route', 'echo-anthropic:echo-converted');
  await cli('account', 'add', 'echoer', '--balance', '10');
  key = (await cli('key', 'create', 'echoer')).trim().split('\n').pop();
});

after(async () => {
  await cluster?.stop();
  upstream?.close();
});

for (const model of ['echo-model', 'echo-converted']) {
  test(`a relayed upstream error does not carry the provider key (${model})`, async () => {
    let response;
    await waitFor(async () => {
      response = await fetch(`${cluster.gateway}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model, max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] }),
      });
      return response.status !== 401;
    });
    assert.equal(response.status, 400);
    const text = await response.text();
    assert.ok(!text.includes(secret), `the key reached the client: ${text}`);
    assert.match(text, /\*\*\*/, text);
    assert.ok(JSON.parse(text).error.message, 'still an OpenAI error body');
  });
}
