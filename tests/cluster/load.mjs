// Load for the multi-host test: a fixed number of workers send chat completions (every other
// one streamed) through a list of gateways in turn, until told to stop. One connection per
// request (`Connection: close`): a request then either reached a gateway process (its
// connection was accepted) or provably did not, with no stale keep-alive socket in between
// whose fate the client cannot know. It behaves like a
// load balancer in front of them: a request that provably never reached a gateway's request
// handling -- the connection was refused or not set up within a second, or the gateway said
// 503 `shutting_down` -- goes to the next gateway; those are counted as retries, not failures.
// Everything else that is not a complete answer counts as a failure.
//
//   node load.mjs '{"gateways":["http://10.77.0.2:8080",...],"keys":[...],"model":"m",
//                   "concurrency":8,"timeoutMs":20000}'
//
// stdin: "mark\n" -> prints {"ev":"mark",...counts, in flight per gateway}; "stop\n" -> stops
// starting requests, waits for those in flight, prints {"ev":"summary",...} and exits.
// stdout: one JSON object per line; every failure as {"ev":"fail",...} when it happens.
import http from 'node:http';
import readline from 'node:readline';

const config = JSON.parse(process.argv[2]);
const gateways = config.gateways.map((url) => new URL(url));
const agents = gateways.map(() => new http.Agent({ keepAlive: false }));
const counts = {
  started: 0, ok: 0, failed: 0, retried: 0,
  okByGateway: gateways.map(() => 0), failedByGateway: gateways.map(() => 0),
  inFlight: gateways.map(() => 0), reasons: {},
};
const okIds = [];
const open = new Map(); // request number -> when it started, for requests not yet finished
let stopping = false;

const print = (object) => process.stdout.write(`${JSON.stringify(object)}\n`);
const snapshot = () => ({
  t: Date.now(), started: counts.started, ok: counts.ok, failed: counts.failed, retried: counts.retried,
  okByGateway: [...counts.okByGateway], failedByGateway: [...counts.failedByGateway],
  inFlight: [...counts.inFlight],
  oldestInFlight: open.size ? Math.min(...open.values()) : null,
});

// One HTTP exchange. Resolves { ok, status, reason, retryable, id }.
function attempt(index, key, stream, n) {
  const gateway = gateways[index];
  const body = JSON.stringify({
    model: config.model, stream, max_tokens: 16,
    messages: [{ role: 'user', content: `cluster load ${n}` }],
  });
  return new Promise((resolve) => {
    let settled = false;
    const finish = (result) => {
      if (settled) return;
      settled = true;
      clearTimeout(total);
      resolve(result);
    };
    const request = http.request({
      host: gateway.hostname, port: gateway.port, path: '/v1/chat/completions', method: 'POST',
      agent: agents[index],
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json',
        'content-length': Buffer.byteLength(body), connection: 'close' },
    });
    const total = setTimeout(() => request.destroy(Object.assign(new Error('no answer in time'),
      { code: 'TOTAL_TIMEOUT' })), config.timeoutMs);
    request.on('socket', (socket) => {
      if (!socket.connecting) return;
      // A gateway host that is unreachable must not hold a request for the kernel's
      // connect timeout; like a balancer, give up after a second and try the next.
      const timer = setTimeout(() => request.destroy(Object.assign(new Error('connect timeout'),
        { code: 'CONNECT_TIMEOUT' })), 1000);
      socket.once('connect', () => clearTimeout(timer));
      socket.once('close', () => clearTimeout(timer));
    });
    request.on('error', (error) => {
      const retryable = ['ECONNREFUSED', 'CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH'].includes(error.code);
      finish({ ok: false, status: 0, reason: error.code || error.message, retryable });
    });
    request.on('response', (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => { text += chunk; });
      response.on('error', (error) => finish({ ok: false, status: response.statusCode, reason: `body ${error.code || error.message}`, retryable: false }));
      response.on('aborted', () => finish({ ok: false, status: response.statusCode, reason: 'body aborted', retryable: false }));
      response.on('end', () => {
        const id = response.headers['x-request-id'];
        if (response.statusCode === 200) {
          const complete = stream ? /data: \[DONE\]/.test(text) && !/"error"/.test(text)
            : (() => { try { return JSON.parse(text).choices?.length > 0; } catch { return false; } })();
          finish(complete ? { ok: true, status: 200, id }
            : { ok: false, status: 200, reason: stream ? 'stream cut' : 'bad body', retryable: false, id });
          return;
        }
        let code = '';
        try { code = JSON.parse(text).error?.code ?? JSON.parse(text).error?.type ?? ''; } catch { /* not JSON */ }
        finish({ ok: false, status: response.statusCode, reason: `${response.statusCode} ${code}`.trim(),
          retryable: response.statusCode === 503 && code === 'shutting_down', id });
      });
    });
    request.end(body);
  });
}

async function one(worker, n) {
  counts.started++;
  const started = Date.now();
  open.set(n, started);
  try {
    await request(worker, n, started);
  } finally {
    open.delete(n);
  }
}

// Request n of the whole run picks gateway, then stream or not, then key, so that every
// combination comes round evenly.
async function request(worker, n, started) {
  const stream = Math.floor(n / gateways.length) % 2 === 1;
  const key = config.keys[Math.floor(n / (2 * gateways.length)) % config.keys.length];
  let index = n % gateways.length;
  for (let tries = 0; ; tries++) {
    counts.inFlight[index]++;
    const result = await attempt(index, key, stream, n);
    counts.inFlight[index]--;
    if (result.ok) {
      counts.ok++;
      counts.okByGateway[index]++;
      okIds.push(result.id);
      return;
    }
    if (result.retryable && tries < 10) {
      counts.retried++;
      index = (index + 1) % gateways.length;
      await new Promise((resolve) => setTimeout(resolve, Math.min(20 * tries, 200)));
      continue;
    }
    counts.failed++;
    counts.failedByGateway[index]++;
    counts.reasons[result.reason] = (counts.reasons[result.reason] ?? 0) + 1;
    print({ ev: 'fail', t: Date.now(), started, gateway: index, stream, status: result.status,
      reason: result.reason, id: result.id ?? null });
    // Like a real client, do not spin on errors: a worker pauses before its next request.
    await new Promise((resolve) => setTimeout(resolve, 50));
    return;
  }
}

let sequence = 0;
const workers = Array.from({ length: config.concurrency }, async (_, worker) => {
  while (!stopping) await one(worker, sequence++);
});

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  if (line === 'mark') print({ ev: 'mark', ...snapshot() });
  if (line === 'stop' && !stopping) {
    stopping = true;
    await Promise.all(workers);
    // Exit only once the (long) summary line is out: writes to a pipe are asynchronous.
    process.stdout.write(`${JSON.stringify({ ev: 'summary', ...snapshot(), reasons: counts.reasons, okIds })}\n`,
      () => process.exit(0));
  }
});
print({ ev: 'started', ...snapshot() });
