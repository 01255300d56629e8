// The real CLI agents through Tollgate (issue 16): Claude Code, Codex CLI and Gemini CLI
// from node_modules, each run non-interactively in a throwaway HOME against a Tollgate
// cluster whose providers (one per upstream protocol) point at one mock upstream.
//
//   to-openai     -> provider up-openai     (OpenAI Chat Completions)
//   to-responses  -> provider up-responses  (OpenAI Responses)
//   to-anthropic  -> provider up-anthropic  (Anthropic Messages)
//   to-gemini     -> provider up-gemini     (Gemini generateContent)
//
// Between each agent and the gateway sits a small recording proxy (in this process): it
// keeps what the agent sent and the gateway's response headers (x-tollgate-dropped-fields),
// so a test can compare each agent request with what the mock upstream received
// (GET /mock/requests) and find anything lost that the gateway did not name.
//
// Nothing here talks to anything but 127.0.0.1: every agent's telemetry, update checks and
// feedback are off in its environment or settings, and its HOME is a fresh folder.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { childEnv, startCluster, startMock, tempDir, waitFor } from '../lib/harness.mjs';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const binOf = (name) => path.join(repoRoot, 'node_modules', '.bin', name);

export const UPSTREAMS = ['openai', 'responses', 'anthropic', 'gemini'];
export const AGENTS = ['claude', 'codex', 'gemini'];
const PROVIDER_PROTOCOL = { openai: 'openai', responses: 'openai-responses', anthropic: 'anthropic', gemini: 'gemini' };
// The model name each provider is asked for (Gemini's goes into the URL path).
const UPSTREAM_MODEL = { openai: 'gpt-4o-mini', responses: 'gpt-5-mini', anthropic: 'claude-sonnet-4-5', gemini: 'gemini-2.5-flash' };
// The protocol each agent speaks to the gateway.
export const AGENT_PROTOCOL = { claude: 'anthropic', codex: 'responses', gemini: 'gemini' };

export async function cli(cluster, ...args) {
  const result = await cluster.tollgate(args, { env: { TOLLGATE_DIR: cluster.dir } });
  if (result.code !== 0) throw new Error(`tollgate ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

// A recording HTTP proxy in front of the gateway. Resolves { url, exchanges, stop() };
// exchanges is [{method, path, body (parsed JSON or text), status, headers, response}].
async function startRecorder(target) {
  const exchanges = [];
  const server = http.createServer(async (request, response) => {
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    const headers = { ...request.headers };
    delete headers.host;
    delete headers['content-length'];
    delete headers.connection;
    const entry = { method: request.method, path: request.url, status: 0, headers: {}, response: '' };
    try { entry.body = JSON.parse(body.toString()); } catch { entry.body = body.toString(); }
    exchanges.push(entry);
    try {
      const upstream = await fetch(target + request.url, {
        method: request.method, headers, body: request.method === 'GET' ? undefined : body,
      });
      entry.status = upstream.status;
      entry.headers = Object.fromEntries(upstream.headers);
      const out = { ...entry.headers };
      for (const name of ['content-length', 'content-encoding', 'transfer-encoding', 'connection']) delete out[name];
      response.writeHead(upstream.status, out);
      // Streamed on as it comes, so the agent reads each event when the gateway sends it.
      const reader = upstream.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        entry.response += Buffer.from(value).toString();
        response.write(value);
      }
      response.end();
    } catch (error) {
      entry.error = String(error);
      if (!response.headersSent) response.writeHead(502);
      response.end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    exchanges,
    stop: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

// Starts the mock and the cluster, a provider and a model per upstream protocol, and a key.
// With faults (mock --fault specs for upstream model `broken-model`), a model
// broken-to-PROTOCOL per protocol routes there too.
// Resolves { cluster, mock, key, recorder, stop(), upstreamRequests(), reset() }.
export async function setup({ faults = [] } = {}) {
  const mock = await startMock(['--models', Object.values(UPSTREAM_MODEL).join(','),
    ...faults.flatMap((fault) => ['--fault', fault])]);
  const cluster = await startCluster();
  for (const upstream of UPSTREAMS) {
    await cli(cluster, 'provider', 'add', `up-${upstream}`, '--protocol', PROVIDER_PROTOCOL[upstream],
      '--base-url', mock.url);
    await cli(cluster, 'provider', 'key', 'add', `up-${upstream}`, '--secret', `sk-${upstream}-upstream-secret`);
    await cli(cluster, 'model', 'add', `to-${upstream}`, '--route', `up-${upstream}:${UPSTREAM_MODEL[upstream]}`,
      '--price-in', '1', '--price-out', '2');
    if (faults.length) {
      await cli(cluster, 'model', 'add', `broken-to-${upstream}`, '--route', `up-${upstream}:broken-model`,
        '--price-in', '1', '--price-out', '2');
    }
  }
  await cli(cluster, 'account', 'add', 'agents', '--balance', '1000');
  const key = (await cli(cluster, 'key', 'create', 'agents', '--name', 'agents')).trim().split('\n').pop();
  assert.match(key, /^tg-[0-9a-f]{48}$/);
  await waitFor(async () => {
    const response = await fetch(`${cluster.gateway}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ model: 'to-responses', messages: [{ role: 'user', content: 'hi' }] }),
    });
    return response.status === 200;
  }, { timeout: 10000, message: 'the new key and models work' });
  const recorder = await startRecorder(cluster.gateway);
  return {
    cluster, mock, key, recorder,
    async upstreamRequests() {
      const answer = await (await fetch(`${mock.url}/mock/requests`)).json();
      return answer.requests;
    },
    async reset() {
      await fetch(`${mock.url}/mock/reset`, { method: 'POST' });
      recorder.exchanges.length = 0;
    },
    async stop() { await recorder.stop(); await cluster.stop(); await mock.stop(); },
  };
}

// Runs a program to completion with a hard time limit. Resolves { code, signal, stdout,
// stderr, ms }.
function runAgent(program, args, { env, cwd, timeout = 90000 }) {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => { stdout += chunk; });
    child.stderr.on('data', (chunk) => { stderr += chunk; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
    child.on('error', (error) => { clearTimeout(timer); reject(error); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

// The environment every agent runs in: a fresh HOME, no proxy, nothing but 127.0.0.1.
function baseEnv(home) {
  const env = childEnv({ HOME: home, XDG_CONFIG_HOME: path.join(home, '.config'),
    XDG_CACHE_HOME: path.join(home, '.cache'), XDG_DATA_HOME: path.join(home, '.local', 'share'),
    NO_COLOR: '1', CI: '1', TERM: 'dumb', NO_PROXY: '127.0.0.1,localhost', no_proxy: '127.0.0.1,localhost' });
  for (const name of Object.keys(env)) {
    if (/^(HTTPS?_PROXY|ALL_PROXY|https?_proxy|all_proxy)$/.test(name)) delete env[name];
    if (/^(ANTHROPIC|OPENAI|CODEX|GEMINI|GOOGLE|CLAUDE)_/.test(name)) delete env[name];
  }
  return env;
}

// Claude Code: `claude -p` with ANTHROPIC_BASE_URL; no telemetry, error reports, update
// checks or other traffic beside the model calls.
function claude(setup, { model, prompt, home, cwd }) {
  const env = {
    ...baseEnv(home),
    ANTHROPIC_BASE_URL: setup.recorder.url,
    ANTHROPIC_API_KEY: setup.key,
    ANTHROPIC_MODEL: model,
    ANTHROPIC_SMALL_FAST_MODEL: model,
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    DISABLE_TELEMETRY: '1',
    DISABLE_ERROR_REPORTING: '1',
    DISABLE_AUTOUPDATER: '1',
    DISABLE_BUG_COMMAND: '1',
    CLAUDE_CODE_DISABLE_TERMINAL_TITLE: '1',
  };
  return runAgent(binOf('claude'), ['-p', prompt, '--allowedTools', 'Read'], { env, cwd });
}

// Codex CLI: a model provider in $CODEX_HOME/config.toml speaking the Responses API.
function codex(setup, { model, prompt, home, cwd }) {
  const codexHome = path.join(home, '.codex');
  fs.mkdirSync(codexHome, { recursive: true });
  fs.writeFileSync(path.join(codexHome, 'config.toml'), [
    `model = "${model}"`,
    'model_provider = "tollgate"',
    'check_for_update_on_startup = false',
    '',
    '[model_providers.tollgate]',
    'name = "Tollgate"',
    `base_url = "${setup.recorder.url}/v1"`,
    'env_key = "TOLLGATE_API_KEY"',
    'wire_api = "responses"',
    '',
    '[analytics]',
    'enabled = false',
    '',
    '[feedback]',
    'enabled = false',
    '',
    '# Codex syncs its curated plugins from github.com and chatgpt.com at start.',
    '[features]',
    'plugins = false',
    'remote_plugin = false',
    'apps = false',
    '',
  ].join('\n'));
  const env = { ...baseEnv(home), CODEX_HOME: codexHome, TOLLGATE_API_KEY: setup.key };
  return runAgent(binOf('codex'), ['exec', '--skip-git-repo-check', '--sandbox', 'danger-full-access', prompt],
    { env, cwd });
}

// Gemini CLI: GOOGLE_GEMINI_BASE_URL and an API key; telemetry, usage statistics and update
// checks off in its settings.
function gemini(setup, { model, prompt, home, cwd }) {
  const settings = path.join(home, '.gemini');
  fs.mkdirSync(settings, { recursive: true });
  fs.writeFileSync(path.join(settings, 'settings.json'), JSON.stringify({
    security: { auth: { selectedType: 'gemini-api-key' } },
    privacy: { usageStatisticsEnabled: false },
    telemetry: { enabled: false },
    general: { disableAutoUpdate: true, disableUpdateNag: true },
  }));
  const env = {
    ...baseEnv(home),
    GOOGLE_GEMINI_BASE_URL: setup.recorder.url,
    GEMINI_API_KEY: setup.key,
    GEMINI_CLI_TRUST_WORKSPACE: 'true',
  };
  return runAgent(binOf('gemini'), ['-m', model, '-p', prompt], { env, cwd });
}

const RUNNERS = { claude, codex, gemini };

// Runs an agent once in a fresh HOME and working folder. Resolves the run's result plus
// { exchanges: what the agent sent and got, upstream: what the mock received, cwd }.
export async function runOnce(setup, agent, { model, prompt, files = {} }) {
  await setup.reset();
  const home = tempDir(`tollgate-${agent}-home-`);
  const cwd = tempDir(`tollgate-${agent}-work-`);
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(cwd, name), text);
  const result = await RUNNERS[agent](setup, { model, prompt: prompt(cwd), home, cwd });
  const exchanges = setup.recorder.exchanges.slice();
  const upstream = await setup.upstreamRequests();
  return { ...result, exchanges, upstream, cwd };
}

// The generation calls among what an agent sent (not model lists or token counts).
export function generations(exchanges) {
  return exchanges.filter((x) => x.method === 'POST' &&
    /\/v1\/(messages|responses|chat\/completions)(\?|$)|:(stream)?[gG]enerateContent/.test(x.path));
}
export function upstreamGenerations(requests) {
  return requests.filter((x) => x.method === 'POST' &&
    /\/v1\/(messages|responses|chat\/completions)$|:(stream)?[gG]enerateContent/.test(x.path));
}

// Why a failed run failed, for assertion messages.
export function describe(run) {
  const lines = [`exit ${run.code ?? run.signal} after ${run.ms} ms`, `stdout: ${run.stdout.slice(-1500)}`,
    `stderr: ${run.stderr.slice(-2500)}`];
  for (const x of run.exchanges) {
    lines.push(`${x.method} ${x.path} -> ${x.status} dropped=[${x.headers['x-tollgate-dropped-fields'] ?? ''}] ` +
      `${x.status >= 400 ? x.response.slice(0, 400) : ''}`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------
// What a request means, protocol by protocol, so an agent's request and the upstream
// request it became can be compared: system text, conversation text, tool definitions,
// tool calls and results with their ids, sampling settings (by the client's field name).

const squash = (text) => String(text ?? '').replace(/\s+/g, '');
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}
const parseArgs = (text) => { try { return canonical(JSON.parse(text || '{}')); } catch { return `raw:${text}`; } };
function textOf(content) {
  if (content == null) return '';
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((part) => (typeof part === 'string' ? part : part.text ?? '')).join('');
  return '';
}
// A tool result as text: Gemini carries an object ({"result": text} for text results).
function resultText(value) {
  if (typeof value === 'string' || Array.isArray(value)) return squash(textOf(value));
  if (value && typeof value === 'object') {
    const keys = Object.keys(value);
    if (keys.length === 1 && ['result', 'output', 'content', 'error'].includes(keys[0]) && typeof value[keys[0]] === 'string') {
      return squash(value[keys[0]]);
    }
    return squash(canonical(value));
  }
  return squash(String(value ?? ''));
}
function summaryOf(protocol, body) {
  const s = { system: [], texts: [], calls: [], results: [], tools: [], builtins: [], params: {} };
  const param = (name, value) => { if (value !== undefined && value !== null) s.params[name] = value; };
  if (protocol === 'anthropic') {
    if (typeof body.system === 'string') s.system.push(body.system);
    else for (const block of body.system ?? []) s.system.push(block.text);
    for (const message of body.messages ?? []) {
      const blocks = typeof message.content === 'string' ? [{ type: 'text', text: message.content }] : message.content;
      for (const block of blocks) {
        if (message.role === 'system') s.system.push(block.text);
        else if (block.type === 'text') s.texts.push(block.text);
        else if (block.type === 'tool_use') s.calls.push({ id: block.id, name: block.name, args: canonical(block.input) });
        else if (block.type === 'tool_result') s.results.push({ id: block.tool_use_id, text: resultText(block.content) });
      }
    }
    for (const tool of body.tools ?? []) (tool.type && tool.type !== 'custom' ? s.builtins : s.tools).push(tool.type && tool.type !== 'custom' ? tool.type : tool.name);
    for (const name of ['temperature', 'top_p', 'top_k', 'max_tokens', 'stop_sequences']) param(name, body[name]);
  } else if (protocol === 'openai') {
    for (const message of body.messages ?? []) {
      if (message.role === 'system' || message.role === 'developer') s.system.push(textOf(message.content));
      else if (message.role === 'tool') s.results.push({ id: message.tool_call_id, text: resultText(message.content) });
      else {
        s.texts.push(textOf(message.content));
        for (const call of message.tool_calls ?? []) s.calls.push({ id: call.id, name: call.function.name, args: parseArgs(call.function.arguments) });
      }
    }
    for (const tool of body.tools ?? []) (tool.type === 'function' ? s.tools : s.builtins).push(tool.type === 'function' ? tool.function.name : tool.type);
    param('temperature', body.temperature);
    param('top_p', body.top_p);
    param('max_tokens', body.max_completion_tokens ?? body.max_tokens);
    param('stop', body.stop);
  } else if (protocol === 'responses') {
    if (body.instructions) s.system.push(body.instructions);
    const input = typeof body.input === 'string' ? [{ role: 'user', content: body.input }] : body.input ?? [];
    for (const item of input) {
      const type = item.type ?? 'message';
      if (type === 'message' && (item.role === 'system' || item.role === 'developer')) s.system.push(textOf(item.content));
      else if (type === 'message') s.texts.push(textOf(item.content));
      else if (type === 'function_call') s.calls.push({ id: item.call_id, name: item.name, args: parseArgs(item.arguments) });
      else if (type === 'function_call_output') s.results.push({ id: item.call_id, text: resultText(item.output) });
    }
    for (const tool of body.tools ?? []) (tool.type === 'function' ? s.tools : s.builtins).push(tool.type === 'function' ? tool.name : tool.type);
    param('temperature', body.temperature);
    param('top_p', body.top_p);
    param('max_output_tokens', body.max_output_tokens);
  } else if (protocol === 'gemini') {
    for (const part of body.systemInstruction?.parts ?? []) s.system.push(part.text);
    for (const content of body.contents ?? []) {
      for (const part of content.parts ?? []) {
        if (typeof part.text === 'string' && !part.thought) s.texts.push(part.text);
        else if (part.functionCall) s.calls.push({ id: part.functionCall.id, name: part.functionCall.name, args: canonical(part.functionCall.args ?? {}) });
        else if (part.functionResponse) s.results.push({ id: part.functionResponse.id, text: resultText(part.functionResponse.response) });
      }
    }
    for (const tool of body.tools ?? []) {
      for (const [key, value] of Object.entries(tool)) {
        if (key === 'functionDeclarations') for (const declaration of value) s.tools.push(declaration.name);
        else s.builtins.push(key);
      }
    }
    const config = body.generationConfig ?? {};
    for (const [name, field] of [['temperature', 'temperature'], ['topP', 'top_p'], ['topK', 'top_k'], ['maxOutputTokens', 'max_tokens'], ['stopSequences', 'stop']]) {
      param(`generationConfig.${name}`, config[name]);
    }
  }
  return s;
}

// The neutral name of a sampling setting, whatever its field is called.
const NEUTRAL = {
  temperature: 'temperature', top_p: 'top_p', top_k: 'top_k', max_tokens: 'max_tokens', max_output_tokens: 'max_tokens',
  stop_sequences: 'stop', stop: 'stop', 'generationConfig.temperature': 'temperature', 'generationConfig.topP': 'top_p',
  'generationConfig.topK': 'top_k', 'generationConfig.maxOutputTokens': 'max_tokens', 'generationConfig.stopSequences': 'stop',
};

// The top-level fields the converters carry for each client protocol (docs/conversion.md);
// any other field the agent sent must be named in x-tollgate-dropped-fields.
const CARRIED = {
  anthropic: ['model', 'messages', 'system', 'tools', 'tool_choice', 'max_tokens', 'temperature', 'top_p', 'top_k', 'stop_sequences', 'stream', 'metadata', 'thinking', 'output_config'],
  responses: ['model', 'input', 'instructions', 'tools', 'tool_choice', 'parallel_tool_calls', 'max_output_tokens', 'temperature', 'top_p', 'text', 'reasoning', 'stream', 'user'],
  gemini: ['contents', 'systemInstruction', 'tools', 'toolConfig', 'generationConfig', 'model'],
  openai: ['model', 'messages', 'stream', 'stream_options', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'stop', 'tools', 'tool_choice', 'parallel_tool_calls', 'response_format', 'reasoning_effort', 'user', 'n', 'seed', 'presence_penalty', 'frequency_penalty'],
};

// Checks that nothing the client sent was lost on the way to the upstream other than what
// the gateway named. Returns a list of problems (empty when none).
export function lostFields(clientProtocol, client, upstreamProtocol, upstream, droppedHeader) {
  const dropped = droppedHeader ? droppedHeader.split(',') : [];
  const problems = [];
  if (clientProtocol === upstreamProtocol) {
    // Passthrough: the same body but for the model (Gemini's is in the URL).
    const strip = (body) => { const copy = { ...body }; delete copy.model; return canonical(copy); };
    if (strip(client) !== strip(upstream)) problems.push('a passthrough request was changed beyond its model');
    if (dropped.length) problems.push(`a passthrough named dropped fields: ${droppedHeader}`);
    return problems;
  }
  const named = (field) => dropped.some((name) => name === field || name.startsWith(`${field}.`) || name.startsWith(`${field}[`));
  for (const key of Object.keys(client)) {
    if (!CARRIED[clientProtocol].includes(key) && !named(key)) problems.push(`field '${key}' was not carried and not named`);
  }
  const a = summaryOf(clientProtocol, client);
  const b = summaryOf(upstreamProtocol, upstream);
  if (squash(a.system.join('')) !== squash(b.system.join(''))) problems.push('the system prompt changed');
  if (squash(a.texts.join('')) !== squash(b.texts.join(''))) problems.push('the conversation text changed');
  if (canonical([...a.tools].sort()) !== canonical([...b.tools].sort())) problems.push(`tools differ: ${a.tools} vs ${b.tools}`);
  for (const builtin of a.builtins) {
    if (!dropped.some((name) => name.endsWith(`[].${builtin}`))) problems.push(`built-in tool ${builtin} not named`);
  }
  const calls = (s) => canonical(s.calls.map(({ name, args }) => ({ name, args })));
  if (calls(a) !== calls(b)) problems.push(`tool calls differ: ${calls(a)} vs ${calls(b)}`);
  if (canonical(a.results.map((r) => r.text)) !== canonical(b.results.map((r) => r.text))) problems.push('tool results differ');
  // Ids: each upstream result answers an upstream call (where the protocol has ids), in
  // the same pairing as the client's.
  a.results.forEach((result, index) => {
    const callIndex = a.calls.findIndex((call) => call.id === result.id);
    const up = b.results[index];
    if (callIndex >= 0 && up?.id !== undefined && b.calls[callIndex]?.id !== undefined && b.calls[callIndex].id !== up.id) {
      problems.push(`tool result ${index} answers another call upstream`);
    }
  });
  const upstreamParams = Object.fromEntries(Object.entries(b.params).map(([k, v]) => [NEUTRAL[k], v]));
  for (const [name, value] of Object.entries(a.params)) {
    if (named(name)) continue;
    if (canonical(upstreamParams[NEUTRAL[name]]) !== canonical(value)) problems.push(`${name}=${canonical(value)} was not carried and not named`);
  }
  return problems;
}
