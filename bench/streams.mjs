// Holds N concurrent slow streams open through the gateway and reports how
// many completed and how many were open at once. Usage: node streams.mjs URL KEY MODEL N
//
// Each stream asks the mock upstream for "gather:N": it sends its first event,
// then waits until all N streams wait at once (or 60 s), so the N are open at
// the same moment however long the last ones take to connect. Through the
// gateway the header does not reach the mock (the gateway sends no client
// headers upstream): bench/run.sh sets the same fault on the model instead.
//
// The streams come from as many loopback addresses (127.0.0.2, .3, ...) as
// it takes to keep each at most PER_ADDRESS: the gateway limits the
// connections one client address may hold (ingress.max_connections_per_ip,
// 1,000 by default), and 10,000 streams are 10,000 clients' worth, not one
// client's. From 127.0.0.1 alone, 9,000 of 10,000 were refused.
import http from 'node:http';

const PER_ADDRESS = 500;
const [url, key, model, count = '1000'] = process.argv.slice(2);
const target = new URL(url);
const body = JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: 'hi' }] });
let open = 0, completed = 0, errors = 0, peakOpen = 0;
const reasons = new Map();
const failed = (reason) => { errors++; reasons.set(reason, (reasons.get(reason) || 0) + 1); };
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });

await Promise.all(Array.from({ length: Number(count) }, (_, i) => new Promise((resolve) => {
  const request = http.request({
    host: target.hostname, port: target.port, path: target.pathname, method: 'POST', agent,
    localAddress: `127.0.0.${2 + Math.floor(i / PER_ADDRESS)}`,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`,
      'x-mock-fault': `delay-chunks:500,gather:${count}`, 'content-length': Buffer.byteLength(body) },
  }, (response) => {
    open++;
    peakOpen = Math.max(peakOpen, open);
    let error = '';
    if (response.statusCode !== 200) response.on('data', (bytes) => { error += bytes; });
    else response.resume();
    response.on('end', () => {
      open--;
      completed++;
      if (response.statusCode !== 200) {
        let code = '';
        try { code = JSON.parse(error).error.code || JSON.parse(error).error.type; } catch { /* not JSON */ }
        failed(`status ${response.statusCode} ${code}`.trim());
      }
      resolve();
    });
  });
  request.on('error', (error) => { failed(error.code || error.message); resolve(); });
  request.end(body);
})));
if (errors) console.error(`errors: ${[...reasons].map(([r, n]) => `${r} x${n}`).join(', ')}`);
console.log(`RESULT streams=${count} completed=${completed} peak_open=${peakOpen} errors=${errors}`);
