// `tollgate up --demo`: the mock upstream becomes a provider, and the curl it
// prints works; a second `up --demo` reuses it; `down` stops the mock.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { startCluster } from '../lib/harness.mjs';

test('up --demo prints a key and a curl that work', async () => {
  const cluster = await startCluster({ demo: true });
  try {
    const out = cluster.upOutput.stdout;
    const key = out.match(/^demo: .* key (tg-[0-9a-f]{48})$/m)?.[1];
    assert.ok(key, out);
    assert.match(out, /^try: +curl .*\/v1\/chat\/completions/m);
    const response = await fetch(`${cluster.gateway}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'demo-model', messages: [{ role: 'user', content: 'Hello' }] }),
    });
    assert.equal(response.status, 200);
    assert.ok((await response.json()).choices[0].message.content.length > 0);

    const again = await cluster.tollgate(['up', '--dir', cluster.dir, '--demo']);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, new RegExp(`key ${key}$`, 'm'), 'the same demo key again');
  } finally {
    await cluster.stop();
  }
});
