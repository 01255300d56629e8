// The soak's load (bench/soak.sh): for SECONDS, WORKERS clients send a mix at about RATE
// requests/s in all, each picking in turn:
//   plain      non-streamed completion (model soak-plain)              expect 200
//   stream     streamed completion of 20 chunks (soak-stream)          expect 200 and [DONE]
//   failing    the upstream answers 500 (soak-fail), a key that does
//              not exist (401) or a model that does not (404)          expect that status
//   cancelled  a slow stream (soak-slow) the client drops after its
//              first bytes                                             expect 200, then gone
// Every minute one line on stdout: `MINUTE n plain=… stream=… failing=… cancelled=… unexpected=…`;
// at the end `TOTAL …` the same over the whole run.
//   node bench/soak.mjs GATEWAY KEY SECONDS RATE WORKERS
import http from 'node:http';

const [gateway, key, seconds = '60', rate = '40', workers = '16'] = process.argv.slice(2);
const target = new URL(gateway);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(workers) });
const kinds = ['plain', 'plain', 'plain', 'stream', 'stream', 'stream', 'failing', 'failing', 'cancelled', 'cancelled'];
const zero = () => ({ plain: 0, stream: 0, failing: 0, cancelled: 0, unexpected: 0 });
let minute = zero();
const total = zero();
const notes = new Map(); // unexpected outcomes, counted by description

function note(kind, what) {
  const text = `${kind}: ${what}`;
  notes.set(text, (notes.get(text) ?? 0) + 1);
  minute.unexpected++;
  total.unexpected++;
}

function count(kind) {
  minute[kind]++;
  total[kind]++;
}

function request({ model, stream, bearer = key, cancelAfterBytes = 0 }) {
  const body = JSON.stringify({ model, stream, messages: [{ role: 'user', content: 'soak' }] });
  return new Promise((resolve) => {
    let settled = false;
    const done = (value) => { if (!settled) { settled = true; resolve(value); } };
    const req = http.request({
      host: target.hostname, port: target.port, path: '/v1/chat/completions', method: 'POST', agent,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${bearer}`,
        'content-length': Buffer.byteLength(body) },
      timeout: 60000,
    }, (response) => {
      let text = '';
      response.on('data', (chunk) => {
        text += chunk;
        if (cancelAfterBytes && text.length >= cancelAfterBytes) {
          req.destroy();
          done({ status: response.statusCode, text, cancelled: true });
        }
      });
      response.on('end', () => done({ status: response.statusCode, text }));
      response.on('error', () => done({ status: response.statusCode, text, cancelled: true }));
    });
    req.on('timeout', () => { req.destroy(); done({ status: 0, text: 'timeout' }); });
    req.on('error', (error) => done({ status: 0, text: String(error.code ?? error) }));
    req.end(body);
  });
}

async function one(kind, turn) {
  if (kind === 'plain') {
    const { status, text } = await request({ model: 'soak-plain', stream: false });
    if (status === 200 && text.includes('chat.completion')) count(kind); else note(kind, `status ${status}`);
  } else if (kind === 'stream') {
    const { status, text } = await request({ model: 'soak-stream', stream: true });
    if (status === 200 && text.includes('[DONE]')) count(kind); else note(kind, `status ${status}`);
  } else if (kind === 'failing') {
    const variant = turn % 3;
    const { status } = variant === 0 ? await request({ model: 'soak-fail', stream: false })
      : variant === 1 ? await request({ model: 'soak-plain', stream: false, bearer: 'tg-not-a-key' })
        : await request({ model: 'soak-nosuch', stream: false });
    const wanted = variant === 0 ? status >= 500 : status === (variant === 1 ? 401 : 404);
    if (wanted) count(kind); else note(kind, `variant ${variant} status ${status}`);
  } else {
    const { status, cancelled } = await request({ model: 'soak-slow', stream: true, cancelAfterBytes: 1 });
    if (status === 200 && cancelled) count(kind); else note(kind, `status ${status}`);
  }
}

const end = Date.now() + Number(seconds) * 1000;
const interval = (1000 * Number(workers)) / Number(rate);
let nextMinute = Date.now() + 60000;
let minuteNumber = 1;
const line = (label, counts) => `${label} plain=${counts.plain} stream=${counts.stream} failing=${counts.failing} cancelled=${counts.cancelled} unexpected=${counts.unexpected}`;
const ticker = setInterval(() => {
  if (Date.now() < nextMinute) return;
  console.log(line(`MINUTE ${minuteNumber}`, minute));
  minute = zero();
  minuteNumber++;
  nextMinute += 60000;
}, 250);

async function worker(index) {
  let turn = index;
  while (Date.now() < end) {
    const started = Date.now();
    await one(kinds[turn % kinds.length], Math.floor(turn / kinds.length));
    turn += Number(workers);
    const wait = interval - (Date.now() - started);
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

await Promise.all(Array.from({ length: Number(workers) }, (_, i) => worker(i)));
clearInterval(ticker);
if (minute.plain + minute.stream + minute.failing + minute.cancelled + minute.unexpected > 0) {
  console.log(line(`MINUTE ${minuteNumber}`, minute));
}
console.log(line('TOTAL', total));
for (const [text, n] of notes) console.log(`UNEXPECTED ${n} ${text}`);
agent.destroy();
