// The web console in a real browser: Debian's chromium, headless, driven by playwright-core
// (never a downloaded browser). An owner logs in, adds a provider, a model, an account and a
// key through the pages; a request made with the openai SDK and that key shows in Requests
// with its timeline, and moves the overview's request count; an account holder logs in and
// sees only their account; an image request's page shows its image count; a viewer's pages
// offer no change and the API refuses one; a change without the CSRF token is refused; bad
// input names the field and changes nothing.
// No error reaches the browser's console. With CONSOLE_SCREENSHOTS=DIR every page is
// photographed into DIR (docs/console/ holds the ones the README links).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import OpenAI from 'openai';
import { chromium } from 'playwright-core';

import { startCluster, startMock, waitFor } from '../lib/harness.mjs';

const CHROMIUM = '/usr/bin/chromium';
const shots = process.env.CONSOLE_SCREENSHOTS;
const PASSWORD = 'console owner password';

let cluster;
let owner; // an owner's API token (the bootstrap token retires with the first owner)
let mock;
let browser;
const problems = [];

async function api(method, pathname, body, token = owner) {
  const headers = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(cluster.admin + pathname, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: response.status, headers: response.headers, body: await response.json().catch(() => null) };
}

// A browser context and page whose console errors are collected.
async function open() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on('console', (message) => { if (message.type() === 'error') problems.push(message.text()); });
  page.on('pageerror', (error) => problems.push(error.message));
  await page.goto(`${cluster.admin}/`);
  return { context, page };
}

async function logIn(page, username, password) {
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('#login');
  await page.waitForSelector('nav.side');
}

async function go(page, name) {
  await page.click(`a[href="#/${name}"]`);
  await page.waitForSelector(`a.active[href="#/${name}"]`);
}

async function shoot(page, name) {
  if (!shots) return;
  fs.mkdirSync(shots, { recursive: true });
  await page.waitForTimeout(300); // charts draw on the next frame
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

// Fills a form drawn from a resource description and submits it.
async function submit(page, form, values) {
  const selector = `form[data-form="${form}"]`;
  await page.waitForSelector(selector);
  for (const [name, value] of Object.entries(values)) {
    const input = page.locator(`${selector} [name="${name}"]`);
    if (await input.evaluate((el) => el.tagName === 'SELECT')) await input.selectOption(value);
    else await input.fill(value);
  }
  await page.click(`${selector} button[type="submit"]`);
}

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is not installed (apt-get install chromium)`);
  mock = await startMock(['--models', 'console-model']);
  // Every request keeps its spans, so the one made below has a timeline to show.
  cluster = await startCluster({ env: { TOLLGATE_TRACE_SAMPLE_PPM: '1000000' } });
  assert.equal((await api('POST', '/admin/users', { username: 'olga', password: PASSWORD, role: 'owner' }, cluster.token)).status, 201);
  owner = (await api('POST', '/admin/login', { username: 'olga', password: PASSWORD }, '')).body.token;
  assert.ok(owner);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  await cluster?.stop();
  await mock?.stop();
});

test('the console is static, under a strict CSP, and its session cookie is HttpOnly and SameSite=Strict', async () => {
  const page = await fetch(`${cluster.admin}/`);
  assert.equal(page.status, 200);
  const csp = page.headers.get('content-security-policy');
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:/);
  const html = await page.text();
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)/, 'no inline script');
  assert.doesNotMatch(html, /https?:\/\//, 'nothing fetched from elsewhere');
  for (const file of ['app.js', 'vendor/preact.mjs', 'vendor/hooks.mjs', 'vendor/htm.mjs', 'vendor/uPlot.esm.js']) {
    const answer = await fetch(`${cluster.admin}/${file}`);
    assert.equal(answer.status, 200, file);
    assert.match(answer.headers.get('content-type'), /javascript/);
    assert.doesNotMatch(await answer.text(), /\bfrom\s*["']https?:/, `${file} imports nothing from the internet`);
  }
  const login = await fetch(`${cluster.admin}/admin/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'olga', password: PASSWORD, cookie: true }),
  });
  assert.equal(login.status, 200);
  const cookie = login.headers.get('set-cookie');
  assert.match(cookie, /^tollgate_session=tgs_[0-9a-f]{64};/);
  assert.match(cookie, /HttpOnly/);
  assert.match(cookie, /SameSite=Strict/);
  const body = await login.json();
  assert.equal(body.token, undefined, 'the session is in the cookie only');
  assert.match(body.csrf, /^[0-9a-f]{64}$/);
  // A change proved by the cookie needs the CSRF token; a read does not.
  const session = cookie.split(';')[0];
  const read = await fetch(`${cluster.admin}/admin/providers`, { headers: { cookie: session } });
  assert.equal(read.status, 200);
  const forged = await fetch(`${cluster.admin}/admin/providers`, {
    method: 'POST', headers: { cookie: session, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'forged', protocol: 'openai', base_url: 'http://127.0.0.1:9' }),
  });
  assert.equal(forged.status, 403);
  assert.equal((await forged.json()).error.type, 'csrf_error');
  assert.equal((await api('GET', '/admin/providers/forged')).status, 404, 'nothing was made');
});

test('an owner sets up through the pages; a request shows in Requests and on the overview', async () => {
  const { context, page } = await open();
  await logIn(page, 'olga', PASSWORD);
  await page.waitForSelector('[data-tile="requests"]');
  await shoot(page, 'login-overview-empty');
  const before = Number(await page.textContent('[data-tile="requests"] .value'));

  // Bad input names the field and changes nothing.
  await go(page, 'providers');
  await submit(page, 'create-provider', { name: 'console-prov', protocol: 'openai', base_url: 'ftp://nowhere' });
  await page.waitForSelector('[data-resource="provider"] .error');
  assert.match(await page.textContent('[data-resource="provider"] .error'), /'base_url'/);
  assert.equal((await api('GET', '/admin/providers/console-prov')).status, 404);

  await submit(page, 'create-provider', { name: 'console-prov', protocol: 'openai', base_url: mock.url });
  await page.waitForSelector('[data-resource="provider"] tr[data-row]');
  await page.click('[data-resource="provider"] tr[data-row]');
  await submit(page, 'create-provider_key', { name: 'main', secret: 'sk-console-secret-000000000' });
  await page.waitForSelector('[data-resource="provider_key"] tr[data-row]');
  assert.match(await page.textContent('[data-resource="provider_key"]'), /…0000/, 'the secret is masked to a hint');
  assert.doesNotMatch(await page.content(), /sk-console-secret/, 'the secret is never shown again');
  await shoot(page, 'providers');

  await go(page, 'models');
  await submit(page, 'create-model', { name: 'console-model', price_in: '1', price_out: '2', routes: 'console-prov' });
  await page.waitForSelector('[data-resource="model"] tr[data-row]');
  await page.click('[data-resource="model"] tr[data-row]');
  await page.waitForSelector('[data-resource="route"] tr[data-row]');
  await submit(page, 'explain', { model: 'console-model' });
  await page.waitForSelector('[data-explain]');
  assert.match(await page.textContent('[data-explain]'), /console-prov/);
  await shoot(page, 'models');

  await go(page, 'accounts');
  await submit(page, 'create-account', { name: 'console-acct', balance: '10' });
  await page.waitForSelector('[data-resource="account"] tr[data-row]');
  await page.click('[data-resource="account"] tr[data-row]');
  await submit(page, 'topup', { amount: '5', reason: 'welcome credit' });
  await page.waitForSelector('.notice');
  await shoot(page, 'accounts');

  await go(page, 'keys');
  await submit(page, 'create-key', { account: 'console-acct', name: 'laptop' });
  await page.waitForSelector('[data-secret] .mono');
  const key = (await page.textContent('[data-secret] .mono')).trim();
  assert.match(key, /^tg-[0-9a-f]{48}$/);
  await shoot(page, 'keys');

  // A request with the official SDK and that key.
  const openai = new OpenAI({ apiKey: key, baseURL: `${cluster.gateway}/v1`, maxRetries: 0 });
  const completion = await openai.chat.completions.create({ model: 'console-model', messages: [{ role: 'user', content: 'hello' }] });
  assert.ok(completion.choices[0].message.content);

  // It shows in Requests (once the ledger has written it), with its timeline.
  await go(page, 'requests');
  const row = await waitFor(async () => {
    await submit(page, 'requests', { model: 'console-model' });
    return (await page.locator('tr[data-row]').count()) > 0 ? page.locator('tr[data-row]').first() : null;
  }, { timeout: 15000, interval: 300, message: 'the request in the log' });
  await shoot(page, 'requests');
  await row.click();
  await page.waitForSelector('[data-request]');
  // Each program sends its spans in its own batches: wait for the ingress's, not the first.
  await waitFor(async () => {
    if ((await page.locator('.waterfall .row').count()) > 0 &&
        /ingress/.test((await page.textContent('[data-waterfall]')) ?? '')) return true;
    await page.reload();
    await page.waitForSelector('[data-request]');
    return false;
  }, { timeout: 15000, interval: 300, message: 'the request\'s spans' });
  assert.match(await page.textContent('[data-waterfall]'), /ingress/);
  await shoot(page, 'request-timeline');

  // The overview's count moves (it polls).
  await go(page, 'overview');
  await page.waitForFunction((n) => Number(document.querySelector('[data-tile="requests"] .value')?.textContent) > n,
    before, { timeout: 15000 });
  await shoot(page, 'overview');

  for (const name of ['audit', 'settings']) {
    await go(page, name);
    await page.waitForSelector('main h1');
    await shoot(page, name);
  }
  await go(page, 'users');
  await submit(page, 'create-user', { username: 'acct-holder', password: 'holder password 1', role: 'account', account: 'console-acct' });
  await page.waitForSelector('[data-resource="user"] tr[data-row]');
  await shoot(page, 'users');
  await context.close();
});

test('an account holder sees only their own account, and makes and revokes their own keys', async () => {
  await api('POST', '/admin/accounts', { name: 'someone-else', balance: '99' });
  const { context, page } = await open();
  await logIn(page, 'acct-holder', 'holder password 1');
  await page.waitForSelector('[data-self] [data-tile="balance"]');
  assert.equal((await page.textContent('[data-tile="account"] .value')).trim(), 'console-acct');
  // 10 opening + 5 credit, less the request made with this account's key.
  const balance = Number((await page.textContent('[data-tile="balance"] .value')).trim());
  assert.ok(balance > 14 && balance <= 15, `balance ${balance}`);
  const links = await page.locator('nav.side a').allTextContents();
  assert.deepEqual(links, ['My account']);
  assert.doesNotMatch(await page.content(), /someone-else/);
  await page.fill('form[data-form="self-key"] [name="name"]', 'my-key');
  await page.click('form[data-form="self-key"] button[type="submit"]');
  await page.waitForSelector('[data-secret] .mono');
  await page.waitForSelector('text=my-key');
  await shoot(page, 'account-holder');
  // The API agrees: nothing but their own account.
  const request = context.request;
  assert.equal((await request.get(`${cluster.admin}/admin/accounts`)).status(), 403);
  assert.equal((await request.get(`${cluster.admin}/admin/accounts/someone-else`)).status(), 403);
  const keys = await (await request.get(`${cluster.admin}/admin/self/keys`)).json();
  assert.ok(keys.data.every((k) => k.account === 'console-acct'));
  const mine = keys.data.find((k) => k.name === 'my-key');
  await page.click(`tr[data-row="${mine.id}"] button.danger`);
  await waitFor(async () => (await api('GET', `/admin/keys/${mine.id}`)).body.status === 'revoked',
    { timeout: 5000, message: 'the key revoked' });
  // Another account's key is not theirs to revoke.
  const other = await api('POST', '/admin/keys', { account: 'someone-else' });
  const csrf = (await (await request.get(`${cluster.admin}/admin/session`)).json()).csrf;
  const refused = await request.post(`${cluster.admin}/admin/self/keys/${other.body.id}/revoke`, { headers: { 'x-csrf-token': csrf } });
  assert.equal(refused.status(), 404);
  assert.equal((await api('GET', `/admin/keys/${other.body.id}`)).body.status, 'active');
  await context.close();
});

test('a viewer is offered no change, and the API refuses one', async () => {
  assert.equal((await api('POST', '/admin/users', { username: 'vic', password: 'viewer password 1', role: 'viewer' })).status, 201);
  const { context, page } = await open();
  await logIn(page, 'vic', 'viewer password 1');
  for (const name of ['providers', 'models', 'accounts', 'keys']) {
    await go(page, name);
    await page.waitForSelector('[data-resource] table, [data-resource] p.muted');
    assert.equal(await page.locator('form[data-form^="create-"]').count(), 0, `${name}: a create form`);
    assert.equal(await page.locator('[data-resource] button.danger').count(), 0, `${name}: a remove button`);
  }
  const csrf = (await (await context.request.get(`${cluster.admin}/admin/session`)).json()).csrf;
  const refused = await context.request.post(`${cluster.admin}/admin/providers`, {
    headers: { 'x-csrf-token': csrf }, data: { name: 'viewer-made', protocol: 'openai', base_url: 'http://127.0.0.1:9' },
  });
  assert.equal(refused.status(), 403);
  assert.equal((await refused.json()).error.type, 'permission_error');
  assert.equal((await api('GET', '/admin/providers/viewer-made')).status, 404);
  await context.close();
});

test('an image request shows its image count on its page', async () => {
  const model = await api('POST', '/admin/models', { name: 'console-painter', price_image: '0.04',
    routes: [{ provider: 'console-prov', upstream_model: 'console-model' }] });
  assert.equal(model.status, 201, JSON.stringify(model.body));
  const key = (await api('POST', '/admin/keys', { account: 'console-acct', name: 'painter' })).body.key;
  const openai = new OpenAI({ apiKey: key, baseURL: `${cluster.gateway}/v1`, maxRetries: 0 });
  const { response } = await waitFor(async () => {
    try {
      return await openai.images.generate({ model: 'console-painter', prompt: 'a square', n: 2 }).withResponse();
    } catch { return null; }
  }, { timeout: 10000, interval: 300, message: 'the image request' });
  const id = response.headers.get('x-request-id');
  // Once the ledger has written it (a page asked before would log a 404 to the console).
  await waitFor(async () => (await api('GET', `/admin/requests/${encodeURIComponent(id)}`)).status === 200,
    { timeout: 15000, interval: 300, message: 'the image request in the log' });
  const { context, page } = await open();
  await logIn(page, 'olga', PASSWORD);
  await page.waitForSelector('[data-tile="requests"]');
  await page.evaluate((hash) => { location.hash = hash; }, `#/requests/${encodeURIComponent(id)}`);
  await page.waitForSelector('[data-request]');
  const tiles = await page.textContent('[data-request] .tiles');
  assert.match(tiles, /images\s*2/, tiles);
  await context.close();
});

test('nothing went to the browser console', () => {
  // Chromium logs every 4xx answer to a fetch as a console error; the one 400 provoked above
  // (the bad base_url) is the only such line allowed. No script error, no CSP refusal.
  const provoked = 'Failed to load resource: the server responded with a status of 400 (Bad Request)';
  assert.deepEqual(problems.filter((line) => line !== provoked), []);
  assert.equal(problems.filter((line) => line === provoked).length, 1);
});
