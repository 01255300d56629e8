// The Tollgate console: one page, served by tollgate-admin at / with the admin API under
// /admin. Preact + htm for views and uPlot for charts, loaded from ./vendor (copied from
// node_modules at build time); nothing is fetched from anywhere else. The session is an
// HttpOnly cookie; every change sends the CSRF token the login (or /admin/me) gave.
// Tables and forms of the resources are drawn from GET /admin/resources, the same
// descriptions the server validates with.
import { h, render } from './vendor/preact.mjs';
import { useEffect, useRef, useState } from './vendor/hooks.mjs';
import htm from './vendor/htm.mjs';
import uPlot from './vendor/uPlot.esm.js';

const html = htm.bind(h);
const session = { csrf: null, me: null, schema: null };
const RANK = { any: 0, account: 1, viewer: 2, operator: 3, owner: 4 };

// ---------------------------------------------------------------------------
// The API

async function api(method, path, body) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && session.csrf) headers['x-csrf-token'] = session.csrf;
  const response = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = text;
  try { data = JSON.parse(text); } catch { /* CSV or empty */ }
  if (!response.ok) {
    const error = new Error(data?.error?.message || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

const may = (role) => RANK[session.me?.role] >= RANK[role];
const enc = encodeURIComponent;

function money(micros) {
  if (micros === null || micros === undefined) return '';
  const sign = micros < 0 ? '-' : '';
  const abs = Math.abs(Number(micros));
  const units = Math.floor(abs / 1e6);
  let fraction = String(abs % 1e6).padStart(6, '0').replace(/0+$/, '');
  if (fraction.length < 2) fraction = fraction.padEnd(2, '0');
  return `${sign}${units}.${fraction}`;
}

function cell(column, value) {
  if (value === null || value === undefined) return html`<span class="muted">–</span>`;
  switch (column.type) {
    case 'micros': return money(value);
    case 'time': return new Date(value).toLocaleString();
    case 'list': return Array.isArray(value) ? value.join(', ') || html`<span class="muted">none</span>` : 'any';
    case 'child': return Array.isArray(value) ? value.map((r) => r.provider || r.name || r.id).join(', ') : '';
    case 'json': return html`<span class="mono">${JSON.stringify(value)}</span>`;
    default:
      if (column.name === 'status' || column.name === 'state') return html`<span class=${`pill ${value}`}>${value}</span>`;
      return String(value);
  }
}

// ---------------------------------------------------------------------------
// Small pieces

function useLoad(load, deps = []) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    load().then((data) => live && setState({ data, error: null, loading: false }))
      .catch((error) => live && setState({ data: null, error, loading: false }));
    return () => { live = false; };
  }, [...deps, tick]);
  return { ...state, reload: () => setTick((n) => n + 1) };
}

function Problem({ error }) {
  return error ? html`<div class="error" role="alert">${error.message}</div>` : null;
}

function Secret({ label, value }) {
  const [copied, setCopied] = useState(false);
  const ref = useRef(null);
  const copy = async () => {
    try { await navigator.clipboard.writeText(value); setCopied(true); }
    catch {
      // No clipboard permission: select the text so the user can copy it.
      const range = document.createRange();
      range.selectNodeContents(ref.current);
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
      setCopied(true);
    }
  };
  return html`<div class="secret" data-secret>
    <strong>${label}</strong> <span class="mono" ref=${ref}>${value}</span>
    <button type="button" class="plain" onClick=${copy}>${copied ? 'Copied' : 'Copy'}</button>
    <span class="muted">Shown once: it is not stored and cannot be shown again.</span>
  </div>`;
}

// Turns a form's inputs into a body, by each field's kind.
function bodyFrom(form, fields) {
  const body = {};
  for (const field of fields) {
    const input = form.elements[field.name];
    if (!input) continue;
    const raw = input.value.trim();
    if (raw === '') continue;
    if (field.kind === 'int') body[field.name] = Number(raw);
    else if (field.kind === 'bool') body[field.name] = raw === 'true';
    else if (field.kind === 'names' || field.kind === 'tags') body[field.name] = raw.split(',').map((s) => s.trim()).filter(Boolean);
    else if (field.name === 'routes') body.routes = raw.split(',').map((s) => s.trim()).filter(Boolean).map((provider) => ({ provider }));
    else body[field.name] = raw;
  }
  return body;
}

function Input({ field, value }) {
  const label = field.name.replace(/_/g, ' ') + (field.required ? ' *' : '');
  if (field.kind === 'enum' || field.kind === 'bool') {
    const choices = field.kind === 'bool' ? ['true', 'false'] : field.choices;
    return html`<label>${label}<select name=${field.name}>
      ${field.required ? null : html`<option value="">—</option>`}
      ${choices.map((c) => html`<option value=${c} selected=${String(value) === c}>${c}</option>`)}
    </select></label>`;
  }
  const type = field.kind === 'int' ? 'number' : field.name === 'secret' || field.name === 'password' ? 'password' : 'text';
  const hint = field.kind === 'money' ? 'e.g. 2.50' : field.kind === 'names' || field.kind === 'tags' ? 'a, b, c'
    : field.kind === 'time' ? '2030-01-31T00:00:00Z' : field.name === 'routes' ? 'provider, provider' : '';
  const shown = Array.isArray(value) ? value.join(', ') : value ?? '';
  // defaultValue, not value: preact writes `value` back on every render, which would wipe what
  // someone typed whenever the list under the form reloads.
  return html`<label>${label}<input name=${field.name} type=${type} placeholder=${hint} defaultValue=${shown} autocomplete="off" /></label>`;
}

// A form from a resource's fields for one use (create or patch).
function FieldForm({ schema, use, initial = {}, onSubmit, submit, id }) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const fields = schema.fields.filter((f) => f[use] && !(use === 'create' && f.name === schema.parent));
  const go = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await onSubmit(bodyFrom(event.target, fields), event.target);
    } catch (e) { setError(e); }
    setBusy(false);
  };
  return html`<div>
    <${Problem} error=${error} />
    <form class="inline" data-form=${id} onSubmit=${go}>
      ${fields.map((f) => html`<${Input} field=${f} value=${initial[f.name] ?? (f.micros ? money(initial[f.micros]) || undefined : undefined)} />`)}
      <button type="submit" disabled=${busy}>${submit}</button>
    </form>
  </div>`;
}

function Table({ columns, rows, onPick, picked, rowKey = 'id', empty = 'Nothing yet.' }) {
  if (!rows?.length) return html`<p class="muted">${empty}</p>`;
  return html`<table>
    <thead><tr>${columns.map((c) => html`<th>${c.label}</th>`)}</tr></thead>
    <tbody>${rows.map((row) => html`<tr class=${`${onPick ? 'clickable' : ''} ${picked === row[rowKey] ? 'selected' : ''}`}
        data-row=${row[rowKey]} onClick=${onPick ? () => onPick(row) : null}>
      ${columns.map((c) => html`<td>${c.render ? c.render(row) : cell(c, row[c.name])}</td>`)}</tr>`)}</tbody>
  </table>`;
}

// ---------------------------------------------------------------------------
// Resources: list, create, show, change, remove, all from the descriptions

function Resource({ name, parent, title, extra, onCreated }) {
  const schema = session.schema[name];
  const collection = schema.collection.replace(/\{[^}]+\}/, parent ? enc(parent) : '');
  const list = useLoad(() => api('GET', collection), [collection]);
  const [picked, setPicked] = useState(null);
  const [shown, setShown] = useState(null);
  const [error, setError] = useState(null);
  const columns = schema.columns.filter((c) => c.label);
  const canChange = may(schema.change);
  const item = (row) => schema.item.replace(/\{[^}]+\}/, enc(schema.find_by === 'id' ? row.id : row[schema.find_by]));
  const create = async (body, form) => {
    const made = await api('POST', collection, body);
    form.reset();
    setShown(made.key ? { label: 'New key:', value: made.key } : made.token ? { label: 'New token:', value: made.token } : null);
    list.reload();
    onCreated?.(made);
  };
  const remove = async (row) => {
    setError(null);
    try { await api('DELETE', item(row)); list.reload(); } catch (e) { setError(e); }
  };
  const patch = async (body) => {
    await api('PATCH', item(picked), body);
    list.reload();
  };
  const pickedRow = list.data?.data?.find((r) => r.id === picked?.id) || null;
  return html`<section class="card" data-resource=${name}>
    <h2>${title || schema.title[0].toUpperCase() + schema.title.slice(1) + 's'}</h2>
    <${Problem} error=${list.error || error} />
    ${shown && html`<${Secret} ...${shown} />`}
    ${canChange && schema.ops.includes('create') && html`<${FieldForm} schema=${schema} use="create" id=${`create-${name}`}
      submit=${`Add ${schema.title}`} onSubmit=${create} />`}
    <${Table} columns=${[...columns, ...(canChange && schema.ops.includes('delete') ? [{ label: '', render: (row) =>
      row.status === 'revoked' || row.status === 'disabled' || row.revoked_at ? null
        : html`<button class="danger" type="button" onClick=${(e) => { e.stopPropagation(); remove(row); }}>${schema.remove}</button>` }] : [])]}
      rows=${list.data?.data} picked=${picked?.id} onPick=${(row) => setPicked(row)} />
    ${pickedRow && html`<div class="card">
      <h2>${schema.title} ${pickedRow.name || pickedRow.username || pickedRow.id}</h2>
      ${canChange && schema.ops.includes('patch') && html`<${FieldForm} key=${pickedRow.id} schema=${schema} use="patch" id=${`patch-${name}`}
        initial=${pickedRow} submit="Save" onSubmit=${patch} />`}
      ${extra?.(pickedRow)}
    </div>`}
  </section>`;
}

// ---------------------------------------------------------------------------
// Charts

function Chart({ title, series, data, bars }) {
  const el = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const width = Math.max(300, (el.current.clientWidth || 420) - 34);
    const paths = bars ? uPlot.paths.bars({ size: [0.6, 40] }) : undefined;
    const options = {
      title, width, height: 200,
      series: [{}, ...series.map((s, i) => ({ label: s, stroke: ['#2557d6', '#c4320a', '#067647'][i % 3], width: 2,
        fill: bars ? 'rgba(37,87,214,0.3)' : undefined, paths }))],
      axes: [{}, { size: 60 }],
    };
    plot.current = new uPlot(options, data, el.current);
    return () => plot.current.destroy();
  }, []);
  useEffect(() => { plot.current?.setData(data); }, [data]);
  return html`<div class="card chart" ref=${el} data-chart=${title}></div>`;
}

const columnsOf = (rows, keys) => [rows.map((r) => r.t), ...keys.map((k) => rows.map((r) => (r[k] === null ? null : Number(r[k]))))];

function Figures({ stats }) {
  const t = stats.totals;
  const minutes = stats.minutes;
  const last = stats.series.at(-1);
  const fixed = (v, d = 0) => (v === null || v === undefined ? '–' : Number(v).toFixed(d));
  const tiles = [
    ['requests', `Requests (${minutes} min)`, t.requests],
    ['rps', 'Requests/s (last minute)', last ? (last.requests / 60).toFixed(2) : '0.00'],
    ['errors', 'Error rate', t.requests ? `${((100 * t.errors) / t.requests).toFixed(1)}%` : '0%'],
    ['p50', 'Latency p50 / p99 (ms)', `${fixed(t.p50_ms)} / ${fixed(t.p99_ms)}`],
    ['ttft', 'First token p50 / p99 (ms)', `${fixed(t.ttft_p50_ms)} / ${fixed(t.ttft_p99_ms)}`],
    ['spend', `Spend (${minutes} min)`, money(t.cost_micros)],
  ];
  return html`<div class="tiles">${tiles.map(([key, label, value]) => html`<div class="tile" data-tile=${key}>
    <div class="label">${label}</div><div class="value">${value}</div></div>`)}</div>`;
}

function Overview() {
  const [stats, setStats] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let live = true;
    const poll = () => api('GET', '/admin/stats?minutes=60').then((s) => live && setStats(s)).catch((e) => live && setError(e));
    poll();
    const timer = setInterval(poll, 3000);
    return () => { live = false; clearInterval(timer); };
  }, []);
  if (!stats) return html`<${Problem} error=${error} />`;
  const top = (rows, label) => html`<div class="card"><h2>Top ${label}</h2><${Table} rowKey="name" rows=${rows}
    columns=${[{ name: 'name', label: 'name' }, { name: 'requests', label: 'requests' }, rows[0]?.cost_micros !== undefined
      ? { name: 'cost_micros', label: 'spend', type: 'micros' } : { name: 'errors', label: 'errors' }]} /></div>`;
  return html`<div>
    <h1>Overview</h1>
    <${Problem} error=${error} />
    <${Figures} stats=${stats} />
    <div class="charts">
      <${Chart} title="Requests and errors per minute" series=${['requests', 'errors']} data=${columnsOf(stats.series, ['requests', 'errors'])} />
      <${Chart} title="Latency p50 / p99 and first token p50 (ms)" series=${['p50', 'p99', 'ttft p50']} data=${columnsOf(stats.series, ['p50_ms', 'p99_ms', 'ttft_p50_ms'])} />
      <${Chart} title="Spend per hour (micro-units)" bars series=${['spend']} data=${columnsOf(stats.spend_hourly, ['cost_micros'])} />
      <${Chart} title="Spend per day (micro-units)" bars series=${['spend']} data=${columnsOf(stats.spend_daily, ['cost_micros'])} />
    </div>
    <div class="split">${top(stats.top_models, 'models')}${top(stats.top_accounts, 'accounts')}</div>
    ${top(stats.top_providers, 'providers')}
  </div>`;
}

// ---------------------------------------------------------------------------
// Providers: keys, health, breakers (with a button to close one), model lists

function ProviderDetail({ provider }) {
  const health = useLoad(() => api('GET', `/admin/health?provider=${enc(provider.name)}`), [provider.id]);
  const models = useLoad(() => api('GET', `/admin/providers/${enc(provider.name)}/models`), [provider.id]);
  const breakers = useLoad(() => api('GET', '/admin/breakers').catch((e) => ({ data: [], error: e.message })), [provider.id]);
  const [error, setError] = useState(null);
  const close = async (b) => {
    setError(null);
    try {
      await api('POST', '/admin/breakers/reset', b.layer === 'key' ? { provider_key_id: b.provider_key_id }
        : { provider: provider.name, upstream_model: b.upstream_model });
      breakers.reload();
    } catch (e) { setError(e); }
  };
  const refresh = async () => {
    try { await api('POST', `/admin/providers/${enc(provider.name)}/models/refresh`); models.reload(); } catch (e) { setError(e); }
  };
  const mine = (breakers.data?.data || []).filter((b) => b.provider_id === provider.id);
  return html`<div>
    <${Problem} error=${error} />
    <${Resource} name="provider_key" parent=${provider.name} title="Keys (secrets are sealed; only a hint is shown)" />
    <h2>Breakers</h2>
    ${breakers.data?.error ? html`<p class="muted">${breakers.data.error}</p>` : html`<${Table} rows=${mine} rowKey="upstream_model"
      empty="Every breaker is closed." columns=${[{ name: 'layer', label: 'layer' }, { name: 'key', label: 'key' },
      { name: 'upstream_model', label: 'model' }, { name: 'state', label: 'state' }, { name: 'reopens_at', label: 'reopens', type: 'time' },
      ...(may('operator') ? [{ label: '', render: (b) => html`<button class="plain" type="button" onClick=${() => close(b)}>Close</button>` }] : [])]} />`}
    <h2>Health</h2>
    <${Table} rows=${health.data?.data} rowKey="upstream_model" empty="No health recorded yet."
      columns=${[{ name: 'key', label: 'key' }, { name: 'upstream_model', label: 'model' }, { name: 'state', label: 'state' },
      { name: 'success_ppm', label: 'success ppm' }, { name: 'last_status', label: 'last status' }, { name: 'updated_at', label: 'at', type: 'time' }]} />
    <h2>Model list ${models.data?.fetch ? html`<span class="muted">fetched ${new Date(models.data.fetch.fetched_at).toLocaleString()}</span>` : ''}</h2>
    ${may('operator') && html`<button class="plain" type="button" onClick=${refresh}>Fetch now</button>`}
    <p class="mono">${(models.data?.data || []).map((m) => m.model).join(', ') || 'not fetched yet'}</p>
  </div>`;
}

const Providers = () => html`<div><h1>Providers</h1>
  <${Resource} name="provider" extra=${(p) => html`<${ProviderDetail} provider=${p} />`} /></div>`;

// ---------------------------------------------------------------------------
// Models and routes, with "where would this request go and why"

function Explain() {
  const [answer, setAnswer] = useState(null);
  const [error, setError] = useState(null);
  const go = async (event) => {
    event.preventDefault();
    const form = event.target;
    const body = { model: form.model.value.trim() };
    if (form.key.value.trim()) body.key = form.key.value.trim();
    if (form.session.value.trim()) body.session = form.session.value.trim();
    if (form.capabilities.value.trim()) body.capabilities = form.capabilities.value.trim();
    setError(null);
    try { setAnswer(await api('POST', '/admin/routing/decide', body)); } catch (e) { setError(e); setAnswer(null); }
  };
  return html`<section class="card"><h2>Where would this request go, and why</h2>
    <${Problem} error=${error} />
    <form class="inline" data-form="explain" onSubmit=${go}>
      <label>model *<input name="model" /></label><label>key (id or the whole key)<input name="key" /></label>
      <label>session<input name="session" /></label><label>capabilities<input name="capabilities" placeholder="vision, tools" /></label>
      <button type="submit">Explain</button>
    </form>
    ${answer && html`<div data-explain>
      <h2>Candidates</h2>
      <p>Mode <strong>${answer.mode}</strong>, resolved by <strong>${answer.resolved}</strong>${answer.last_resort ? ' (last resort)' : ''}.</p>
      <${Table} rowKey="rank" rows=${answer.candidates} empty="No candidate." columns=${[{ name: 'rank', label: 'rank' },
        { name: 'provider', label: 'provider' }, { name: 'key', label: 'key' }, { name: 'upstream_model', label: 'upstream model' },
        { name: 'source', label: 'from' }, { name: 'breaker', label: 'breaker' },
        { label: 'score', render: (c) => html`<span class="mono">${JSON.stringify(c.score ?? {})}</span>` }]} />
      <h2>Excluded</h2>
      <${Table} rowKey="provider_key_id" rows=${answer.excluded} empty="Nothing excluded." columns=${[{ name: 'provider_id', label: 'provider' },
        { name: 'provider_key_id', label: 'key' }, { name: 'upstream_model', label: 'upstream model' }, { name: 'why', label: 'why' },
        { name: 'detail', label: 'detail' }]} />
      <pre>${JSON.stringify(answer, null, 2)}</pre>
    </div>`}
  </section>`;
}

const Models = () => html`<div><h1>Models and routes</h1>
  <${Resource} name="model" extra=${(m) => html`<div>
    <${Resource} name="route" parent=${m.name} title="Routes" />
    <${Resource} name="rule" parent=${m.name} title="Mapping rules" />
  </div>`} />
  <${Explain} /></div>`;

// ---------------------------------------------------------------------------
// Accounts: balances, credit and adjustments with a reason, limits, multipliers

function Topup({ account }) {
  const [error, setError] = useState(null);
  const [done, setDone] = useState(null);
  const go = async (event) => {
    event.preventDefault();
    const form = event.target;
    setError(null);
    try {
      const answer = await api('POST', `/admin/accounts/${enc(account.name)}/topup`,
        { amount: form.amount.value.trim(), reason: form.reason.value.trim() });
      setDone(`${answer.journal_entry.kind} recorded; balance ${money(answer.balance_micros)}`);
      form.reset();
    } catch (e) { setError(e); }
  };
  if (!may('operator')) return null;
  return html`<div><h2>Credit or adjust</h2><${Problem} error=${error} />${done && html`<div class="notice">${done}</div>`}
    <form class="inline" data-form="topup" onSubmit=${go}>
      <label>amount (negative: adjustment) *<input name="amount" placeholder="10.00" /></label>
      <label>reason<input name="reason" /></label><button type="submit">Record</button>
    </form></div>`;
}

const Accounts = () => html`<div><h1>Accounts</h1>
  <${Resource} name="account" extra=${(a) => html`<${Topup} account=${a} />`} /></div>`;

const Keys = () => html`<div><h1>Client keys</h1><${Resource} name="key" /></div>`;

// ---------------------------------------------------------------------------
// Requests: a filterable log; one request's timeline as a waterfall, and its details

function Requests() {
  const [query, setQuery] = useState('');
  const list = useLoad(() => api('GET', `/admin/requests?limit=100${query}`), [query]);
  const filter = (event) => {
    event.preventDefault();
    const form = event.target;
    let q = '';
    for (const name of ['account', 'model', 'provider', 'status']) if (form[name].value.trim()) q += `&${name}=${enc(form[name].value.trim())}`;
    if (form.errors.checked) q += '&errors=1';
    setQuery(q);
  };
  return html`<div><h1>Requests</h1>
    <section class="card">
      <form class="inline" data-form="requests" onSubmit=${filter}>
        <label>account<input name="account" /></label><label>model<input name="model" /></label>
        <label>provider<input name="provider" /></label><label>status<input name="status" /></label>
        <label>only errors<input type="checkbox" name="errors" /></label><button type="submit">Filter</button>
      </form>
    </section>
    <${Problem} error=${list.error} />
    <${Table} rowKey="request_id" rows=${list.data?.data} onPick=${(r) => { location.hash = `#/requests/${enc(r.request_id)}`; }}
      columns=${[{ name: 'started_at', label: 'started', type: 'time' }, { name: 'request_id', label: 'request' },
        { name: 'account', label: 'account' }, { name: 'model', label: 'model' }, { name: 'provider', label: 'provider' },
        { name: 'status', label: 'status' }, { name: 'attempts', label: 'attempts' }, { name: 'latency_ms', label: 'ms' },
        { name: 'cost_micros', label: 'cost', type: 'micros' }]} />
  </div>`;
}

function Waterfall({ spans }) {
  if (!spans?.length) return html`<p class="muted">No spans were kept for this request (only failed, failed-over, slow and sampled ones are).</p>`;
  const start = Math.min(...spans.map((s) => Date.parse(s.started_at ?? s.start) || 0));
  const end = Math.max(...spans.map((s) => (Date.parse(s.started_at ?? s.start) || 0) + Number(s.duration_ms ?? (s.duration_us ?? 0) / 1000)));
  const total = Math.max(1, end - start);
  return html`<div class="waterfall card" data-waterfall>${spans.map((s) => {
    const at = (Date.parse(s.started_at ?? s.start) || start) - start;
    const ms = Number(s.duration_ms ?? (s.duration_us ?? 0) / 1000);
    return html`<div class="row">
      <span class="mono">${s.program ? `${s.program} ` : ''}${s.name}</span>
      <div class="track"><div class=${`bar ${Number(s.status) >= 400 ? 'failed' : ''}`}
        style=${{ left: `${(100 * at) / total}%`, width: `${Math.max(0.5, (100 * ms) / total)}%` }}></div></div>
      <span class="mono">${ms.toFixed(1)} ms</span></div>`;
  })}</div>`;
}

function RequestOne({ id }) {
  const one = useLoad(() => api('GET', `/admin/requests/${enc(id)}`), [id]);
  if (!one.data) return html`<div><h1>Request</h1><${Problem} error=${one.error} /></div>`;
  const r = one.data;
  return html`<div data-request=${r.request_id}><h1>Request <span class="mono">${r.request_id}</span></h1>
    <p><a href="#/requests">← all requests</a></p>
    <div class="tiles">
      ${[['status', r.status], ['model', r.model], ['provider', r.provider], ['attempts', r.attempts], ['latency', `${r.latency_ms} ms`],
        ['first byte', `${r.ttfb_ms ?? '–'} ms`], ['tokens', `${r.tokens_in} in / ${r.tokens_out} out`],
        ...(Number(r.images) > 0 ? [['images', r.images]] : []), ['cost', money(r.cost_micros)]]
        .map(([label, value]) => html`<div class="tile"><div class="label">${label}</div><div class="value">${value}</div></div>`)}
    </div>
    <h2>Timeline across programs</h2><${Waterfall} spans=${r.spans} />
    <h2>Captured details (secrets redacted)</h2>
    ${r.details ? html`<pre>${JSON.stringify(r.details, null, 2)}</pre>` : html`<p class="muted">Nothing captured at this request-log level.</p>`}
  </div>`;
}

// ---------------------------------------------------------------------------
// Audit, settings, users

function Audit() {
  const list = useLoad(() => api('GET', '/admin/audit?limit=100'));
  return html`<div><h1>Audit log</h1><${Problem} error=${list.error} />
    <${Table} rows=${list.data?.data} columns=${[{ name: 'at', label: 'at', type: 'time' }, { name: 'actor', label: 'who' },
      { name: 'client_ip', label: 'from' }, { name: 'action', label: 'action' }, { name: 'target', label: 'target' },
      { label: 'change', render: (a) => html`<span class="mono">${JSON.stringify(a.after ?? a.request ?? {}).slice(0, 120)}</span>` }]} /></div>`;
}

function Settings() {
  const levels = useLoad(() => api('GET', '/admin/settings/log-level'));
  const capture = useLoad(() => api('GET', '/admin/settings/request-log'));
  const [error, setError] = useState(null);
  const set = async (path, body, reload) => {
    setError(null);
    try { await api('PATCH', path, body); reload(); } catch (e) { setError(e); }
  };
  const levelForm = (event) => {
    event.preventDefault();
    const f = event.target;
    const body = { level: f.level.value };
    if (f.program.value) body.program = f.program.value;
    set('/admin/settings/log-level', body, levels.reload);
  };
  const captureForm = (event) => {
    event.preventDefault();
    set('/admin/settings/request-log', { level: event.target.level.value }, capture.reload);
  };
  const can = may('operator');
  return html`<div><h1>Settings</h1><${Problem} error=${error || levels.error || capture.error} />
    <section class="card"><h2>Log levels</h2><pre>${JSON.stringify(levels.data, null, 2)}</pre>
      ${can && html`<form class="inline" data-form="log-level" onSubmit=${levelForm}>
        <label>level<select name="level">${['debug', 'info', 'warn', 'error', 'default'].map((l) => html`<option>${l}</option>`)}</select></label>
        <label>program<select name="program"><option value="">every program</option>
          ${['ingress', 'billing', 'router', 'dispatch', 'health', 'ledger'].map((p) => html`<option>${p}</option>`)}</select></label>
        <button type="submit">Set</button></form>`}</section>
    <section class="card"><h2>Request log</h2><pre>${JSON.stringify(capture.data, null, 2)}</pre>
      ${can && html`<form class="inline" data-form="request-log" onSubmit=${captureForm}>
        <label>detail<select name="level">${['base', 'headers', 'full'].map((l) => html`<option selected=${capture.data?.level === l}>${l}</option>`)}</select></label>
        <button type="submit">Set</button></form>`}</section>
  </div>`;
}

const Users = () => html`<div><h1>Admin users and roles</h1>
  <p class="muted">owner: everything; operator: configuration and money; viewer: reads; account: one account's own balance, usage and keys.</p>
  <${Resource} name="user" /><${Resource} name="session" title="Live sessions" /><${Resource} name="token" title="API tokens" /></div>`;

// ---------------------------------------------------------------------------
// An account holder's own page

function Self() {
  const account = useLoad(() => api('GET', '/admin/self'));
  const usage = useLoad(() => api('GET', '/admin/self/usage?minutes=1440'));
  const keys = useLoad(() => api('GET', '/admin/self/keys'));
  const [shown, setShown] = useState(null);
  const [error, setError] = useState(null);
  const create = async (event) => {
    event.preventDefault();
    const f = event.target;
    setError(null);
    try {
      const body = {};
      if (f.name.value.trim()) body.name = f.name.value.trim();
      const made = await api('POST', '/admin/self/keys', body);
      setShown(made.key);
      f.reset();
      keys.reload();
    } catch (e) { setError(e); }
  };
  const revoke = async (key) => {
    try { await api('POST', `/admin/self/keys/${key.id}/revoke`); keys.reload(); } catch (e) { setError(e); }
  };
  const a = account.data;
  return html`<div data-self><h1>My account</h1><${Problem} error=${account.error || error} />
    ${a && html`<div class="tiles">
      <div class="tile" data-tile="account"><div class="label">Account</div><div class="value">${a.name}</div></div>
      <div class="tile" data-tile="balance"><div class="label">Balance (${a.currency})</div><div class="value">${money(a.balance_micros)}</div></div>
      ${usage.data && html`<div class="tile" data-tile="requests"><div class="label">Requests (24 h)</div><div class="value">${usage.data.totals.requests}</div></div>
      <div class="tile"><div class="label">Spend (24 h)</div><div class="value">${money(usage.data.totals.cost_micros)}</div></div>`}
    </div>`}
    ${usage.data && html`<div class="charts"><${Chart} title="My requests per minute" series=${['requests']} data=${columnsOf(usage.data.series, ['requests'])} />
      <${Chart} title="My spend per hour (micro-units)" bars series=${['spend']} data=${columnsOf(usage.data.spend_hourly, ['cost_micros'])} /></div>`}
    <section class="card"><h2>My keys</h2>
      ${shown && html`<${Secret} label="New key:" value=${shown} />`}
      <form class="inline" data-form="self-key" onSubmit=${create}><label>name<input name="name" /></label><button type="submit">Create key</button></form>
      <${Table} rows=${keys.data?.data} columns=${[{ name: 'name', label: 'name' }, { name: 'prefix', label: 'prefix' }, { name: 'status', label: 'status' },
        { name: 'created_at', label: 'created', type: 'time' },
        { label: '', render: (k) => k.status === 'revoked' ? null : html`<button class="danger" type="button" onClick=${() => revoke(k)}>revoke</button>` }]} />
    </section></div>`;
}

// ---------------------------------------------------------------------------
// Login and the frame

function Login({ onIn }) {
  const [error, setError] = useState(null);
  const go = async (event) => {
    event.preventDefault();
    setError(null);
    try {
      const answer = await api('POST', '/admin/login', { username: event.target.username.value, password: event.target.password.value, cookie: true });
      session.csrf = answer.csrf;
      onIn();
    } catch (e) { setError(e); }
  };
  return html`<div class="login card"><h1>Tollgate</h1><${Problem} error=${error} />
    <form onSubmit=${go} data-form="login">
      <label>Username<br /><input id="username" name="username" autocomplete="username" /></label>
      <label>Password<br /><input id="password" name="password" type="password" autocomplete="current-password" /></label>
      <button id="login" type="submit">Log in</button>
    </form></div>`;
}

const PAGES = [
  ['overview', 'Overview', 'viewer', Overview], ['providers', 'Providers', 'viewer', Providers],
  ['models', 'Models and routes', 'viewer', Models], ['accounts', 'Accounts', 'viewer', Accounts],
  ['keys', 'Keys', 'viewer', Keys], ['requests', 'Requests', 'viewer', Requests],
  ['audit', 'Audit log', 'operator', Audit], ['settings', 'Settings', 'viewer', Settings],
  ['users', 'Users and roles', 'owner', Users],
];

function useHash() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
}

function App() {
  const [ready, setReady] = useState(false);
  const [tick, setTick] = useState(0);
  const hash = useHash();
  useEffect(() => {
    (async () => {
      try {
        const me = await api('GET', '/admin/session');
        session.me = me.authenticated ? me : null;
        if (!session.me) { setReady(true); return; }
        session.csrf = session.me.csrf || session.csrf;
        const schema = await api('GET', '/admin/resources');
        session.schema = Object.fromEntries(schema.data.map((r) => [r.name, r]));
      } catch { session.me = null; }
      setReady(true);
    })();
  }, [tick]);
  if (!ready) return html`<p class="loading">Loading…</p>`;
  if (!session.me) return html`<${Login} onIn=${() => { setReady(false); setTick((n) => n + 1); }} />`;
  const holder = session.me.role === 'account';
  const pages = holder ? [['self', 'My account', 'account', Self]] : PAGES.filter(([, , role]) => may(role));
  const [, path, id] = hash.replace(/^#\/?/, '#/').split('/');
  const page = pages.find(([name]) => name === path) || pages[0];
  const logout = async () => {
    try { await api('POST', '/admin/logout'); } catch { /* already out */ }
    session.me = null; session.csrf = null;
    location.hash = '';
    setTick((n) => n + 1);
  };
  const Page = path === 'requests' && id ? () => html`<${RequestOne} id=${decodeURIComponent(id)} />` : page[3];
  return html`<div class="shell">
    <nav class="side"><div class="brand">Tollgate</div>
      ${pages.map(([name, label]) => html`<a href=${`#/${name}`} class=${page[0] === name ? 'active' : ''}>${label}</a>`)}
      <div class="who"><div data-who>${session.me.name} (${session.me.role})</div>
        <button class="plain" type="button" onClick=${logout}>Log out</button></div>
    </nav>
    <main><${Page} key=${hash} /></main>
  </div>`;
}

render(html`<${App} />`, document.getElementById('app'));
