// Holds N concurrent slow streams open through the gateway and reports how
// many completed. Usage: node streams.mjs URL KEY MODEL N
import http from 'node:http';

const [url, key, model, count = '1000'] = process.argv.slice(2);
const target = new URL(url);
const body = JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: 'hi' }] });
let open = 0, completed = 0, errors = 0, peakOpen = 0;
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });

await Promise.all(Array.from({ length: Number(count) }, () => new Promise((resolve) => {
  const request = http.request({
    host: target.hostname, port: target.port, path: target.pathname, method: 'POST', agent,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`,
      'x-mock-fault': 'delay-chunks:200', 'content-length': Buffer.byteLength(body) },
  }, (response) => {
    open++;
    peakOpen = Math.max(peakOpen, open);
    if (response.statusCode !== 200) errors++;
    response.resume();
    response.on('end', () => { open--; completed++; resolve(); });
  });
  request.on('error', () => { errors++; resolve(); });
  request.end(body);
})));
console.log(`RESULT streams=${count} completed=${completed} peak_open=${peakOpen} errors=${errors}`);
