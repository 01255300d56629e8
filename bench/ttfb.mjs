// Time to first byte of streamed completions: N requests over C connections,
// reporting p50/p99 of the time until the first body byte, and of the whole
// stream. Usage: node ttfb.mjs URL KEY MODEL CONNECTIONS REQUESTS
import http from 'node:http';

const [url, key, model, connections = '32', total = '2000'] = process.argv.slice(2);
const target = new URL(url);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(connections) });
const body = JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: 'Say hello' }] });
const firstBytes = [];
const wholes = [];
let errors = 0;

function one() {
  return new Promise((resolve) => {
    const start = process.hrtime.bigint();
    let first = null;
    const request = http.request({
      host: target.hostname, port: target.port, path: target.pathname, method: 'POST', agent,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`,
        'content-length': Buffer.byteLength(body) },
    }, (response) => {
      if (response.statusCode !== 200) errors++;
      response.on('data', () => {
        if (first === null) first = process.hrtime.bigint();
      });
      response.on('end', () => {
        const end = process.hrtime.bigint();
        if (first !== null) firstBytes.push(Number(first - start) / 1e6);
        wholes.push(Number(end - start) / 1e6);
        resolve();
      });
    });
    request.on('error', () => { errors++; resolve(); });
    request.end(body);
  });
}

const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : NaN;
};

let issued = 0;
const started = process.hrtime.bigint();
async function worker() {
  while (issued < Number(total)) {
    issued++;
    await one();
  }
}
await Promise.all(Array.from({ length: Number(connections) }, worker));
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
console.log(`RESULT rps=${(wholes.length / seconds).toFixed(1)} ttfb_p50_ms=${percentile(firstBytes, 0.5).toFixed(3)} ttfb_p99_ms=${percentile(firstBytes, 0.99).toFixed(3)} p50_ms=${percentile(wholes, 0.5).toFixed(3)} p99_ms=${percentile(wholes, 0.99).toFixed(3)} requests=${wholes.length} errors=${errors}`);
agent.destroy();
