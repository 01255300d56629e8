// Harness for Tollgate's cross-process tests (node:test, ESM, no npm dependencies).
//
//   import { startCluster, startDatabase, startMock, psql, freePort, tollgate } from '../lib/harness.mjs';
//
//   freePort()                 -> a TCP port on 127.0.0.1 that was free a moment ago
//   startCluster({demo, env, timeout, args})
//                              -> `tollgate up ARGS` in a fresh temporary folder on free ports;
//                                 resolves { gateway, admin, console, token, dir, env, stop(), status(),
//                                 tollgate(args), psql(sql) }
//   startDatabase({env})       -> `tollgate up --db-only`: private PostgreSQL, schema and
//                                 tollgate.conf, no programs; resolves { dir, url, config,
//                                 stop(), psql(sql) }
//   startMock(args)            -> `tollgate-mock-upstream --port 0 ARGS`; resolves
//                                 { url, port, process, stop() }
//   startProgram(name, args, {env})
//                              -> spawns tollgate-NAME with its output collected; resolves
//                                 { process, output(), exited, stop(signal) }
//   psql(dir, sql)             -> rows of the cluster's database: an array of objects,
//                                 column name -> string, or null for SQL NULL
//   tollgate(args, {env, input}) -> runs build/bin/tollgate; resolves { code, stdout, stderr }
//   bin(name)                  -> path of a program in the binary folder
//   tempDir(prefix)            -> a folder under /tmp, mode 755 (PostgreSQL runs as another
//                                 user when we are root and must traverse it), removed at exit
//
// Binaries come from $TOLLGATE_BIN (ctest sets it) or build/bin. Everything started here is
// stopped when the process exits, even when a test fails or is interrupted.

import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const binDir = path.resolve(process.env.TOLLGATE_BIN || path.join(repoRoot, 'build', 'bin'));

export function bin(name) {
  return path.join(binDir, name);
}

// The environment for programs we start. TOLLGATE_BIN is ours, not a configuration key:
// the programs reject unknown TOLLGATE_* variables, so it must not reach them.
export function childEnv(extra = {}) {
  const env = { ...process.env, ...extra };
  delete env.TOLLGATE_BIN;
  return env;
}

// What to undo at exit: cluster folders to take down, processes to kill, folders to remove.
const cleanup = { clusters: new Set(), processes: new Set(), dirs: new Set() };

function cleanupNow() {
  for (const dir of cleanup.clusters) {
    spawnSync(bin('tollgate'), ['down', '--dir', dir], { env: childEnv(), stdio: 'ignore', timeout: 30000 });
  }
  cleanup.clusters.clear();
  for (const child of cleanup.processes) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
  cleanup.processes.clear();
  for (const dir of cleanup.dirs) fs.rmSync(dir, { recursive: true, force: true });
  cleanup.dirs.clear();
}
process.on('exit', cleanupNow);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => { cleanupNow(); process.exit(128 + os.constants.signals[signal]); });
}

// The kernel's ephemeral range (bind to port 0, outgoing connections): a port from it can be
// taken by any outgoing connection between our check and the program's bind.
function ephemeralLow() {
  try {
    const low = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 0 ? low : 32768;
  } catch {
    return 32768;
  }
}

async function listenOn(port) {
  const server = net.createServer();
  server.listen(port, '127.0.0.1');
  try {
    await once(server, 'listening'); // rejects on 'error' (EADDRINUSE)
  } catch {
    return 0;
  }
  const bound = server.address().port;
  server.close();
  await once(server, 'close');
  return bound;
}

// A port no listener holds, below the ephemeral range when there is room (so no outgoing
// connection of a concurrent test can take it before the program binds it), else any.
export async function freePort() {
  const low = ephemeralLow();
  for (let attempt = 0; low > 11000 && attempt < 50; attempt++) {
    const port = await listenOn(10000 + Math.floor(Math.random() * (low - 10000)));
    if (port) return port;
  }
  return listenOn(0);
}

export function tempDir(prefix = 'tollgate-test-') {
  const dir = fs.mkdtempSync(path.join('/tmp', prefix));
  fs.chmodSync(dir, 0o755);
  cleanup.dirs.add(dir);
  return dir;
}

// Runs a program to completion. Resolves { code, signal, stdout, stderr }.
export function run(program, args, { env = {}, input, timeout = 120000 } = {}) {
  return new Promise((resolve, reject) => {
    const stdin = input === undefined ? 'ignore' : 'pipe';
    const child = spawn(program, args, { env: childEnv(env), stdio: [stdin, 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => { stdout += chunk; });
    child.stderr.on('data', (chunk) => { stderr += chunk; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
    child.on('error', (error) => { clearTimeout(timer); reject(error); });
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
    if (child.stdin) {
      // A program may exit without reading its input; that is its business.
      child.stdin.on('error', () => {});
      child.stdin.end(input);
    }
  });
}

export function tollgate(args, options = {}) {
  return run(bin('tollgate'), args, options);
}

function parseUp(stdout) {
  const field = (name) => {
    const match = stdout.match(new RegExp(`^${name}:\\s+(\\S+)\\s*$`, 'm'));
    if (!match) throw new Error(`tollgate up printed no ${name} line:\n${stdout}`);
    return match[1];
  };
  return { gateway: field('gateway'), admin: field('admin'), console: field('console'), token: field('token') };
}

export async function startCluster({ demo = false, env = {}, timeout = 60, args: more = [] } = {}) {
  const dir = tempDir('tollgate-cluster-');
  const [port, adminPort] = [await freePort(), await freePort()];
  const args = ['up', '--dir', dir, '--port', String(port), '--admin-port', String(adminPort),
    '--timeout', String(timeout)];
  if (demo) args.push('--demo');
  args.push(...more);
  cleanup.clusters.add(dir);
  const result = await tollgate(args, { env, timeout: (timeout + 90) * 1000 });
  if (result.code !== 0) {
    await tollgate(['down', '--dir', dir], { env });
    cleanup.clusters.delete(dir);
    throw new Error(`tollgate up failed (exit ${result.code}):\n${result.stderr}${result.stdout}`);
  }
  const urls = parseUp(result.stdout);
  const cluster = {
    ...urls,
    dir,
    env,
    upOutput: result,
    tollgate: (more, options = {}) => tollgate(more, { env, ...options }),
    async status() {
      const status = await tollgate(['status', '--dir', dir, '--json'], { env });
      return { code: status.code, ...JSON.parse(status.stdout) };
    },
    psql: (sql) => psql(dir, sql),
    async stop() {
      const down = await tollgate(['down', '--dir', dir], { env });
      cleanup.clusters.delete(dir);
      fs.rmSync(dir, { recursive: true, force: true });
      cleanup.dirs.delete(dir);
      if (down.code !== 0) throw new Error(`tollgate down failed (exit ${down.code}):\n${down.stderr}`);
    },
  };
  return cluster;
}

export async function startDatabase({ env = {} } = {}) {
  const dir = tempDir('tollgate-db-');
  cleanup.clusters.add(dir);
  const result = await tollgate(['up', '--db-only', '--dir', dir], { env });
  if (result.code !== 0) {
    cleanup.clusters.delete(dir);
    throw new Error(`tollgate up --db-only failed (exit ${result.code}):\n${result.stderr}`);
  }
  const url = result.stdout.match(/^database:\s+(.+)$/m)[1].trim();
  return {
    dir,
    url,
    config: path.join(dir, 'tollgate.conf'),
    psql: (sql, database) => psql(dir, sql, database),
    async stop() {
      await tollgate(['down', '--dir', dir], { env });
      cleanup.clusters.delete(dir);
      fs.rmSync(dir, { recursive: true, force: true });
      cleanup.dirs.delete(dir);
    },
  };
}

// Spawns a long-running program and collects its output.
export function startProgram(name, args = [], { env = {} } = {}) {
  const child = spawn(bin(name), args, { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  cleanup.processes.add(child);
  let output = '';
  child.stdout.on('data', (chunk) => { output += chunk; });
  child.stderr.on('data', (chunk) => { output += chunk; });
  const exited = new Promise((resolve) => {
    child.on('close', (code, signal) => { cleanup.processes.delete(child); resolve({ code, signal }); });
  });
  return {
    process: child,
    output: () => output,
    exited,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

export async function startMock(args = [], { env = {}, timeout = 10000 } = {}) {
  const program = startProgram('tollgate-mock-upstream', ['--port', '0', ...args], { env });
  const port = await new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`mock upstream printed no port=N line:\n${program.output()}`)), timeout);
    program.process.stdout.on('data', (chunk) => {
      seen += chunk;
      const match = seen.match(/^port=(\d+)\s*$/m);
      if (match) { clearTimeout(timer); resolve(Number(match[1])); }
    });
    program.exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`mock upstream exited (${code ?? signal}):\n${program.output()}`));
    });
  });
  return { url: `http://127.0.0.1:${port}`, port, process: program.process, stop: () => program.stop() };
}

// psql from the newest installed PostgreSQL, else from PATH.
function psqlProgram() {
  const base = '/usr/lib/postgresql';
  if (fs.existsSync(base)) {
    const versions = fs.readdirSync(base)
      .filter((name) => fs.existsSync(path.join(base, name, 'bin', 'psql')))
      .sort((a, b) => Number(b) - Number(a));
    if (versions.length) return path.join(base, versions[0], 'bin', 'psql');
  }
  return 'psql';
}

// Minimal RFC 4180 reader for psql --csv output.
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(field); field = ''; }
    else if (c === '\n') { row.push(field); rows.push(row); row = []; field = ''; }
    else if (c !== '\r') field += c;
  }
  if (field !== '' || row.length) { row.push(field); rows.push(row); }
  return rows;
}

// Runs SQL against the database of the cluster in `dir` (default database `tollgate`).
// Resolves the rows of the last statement that returns any, as objects of strings.
export async function psql(dir, sql, database = 'tollgate') {
  const nullMark = '\u0001NULL\u0001';
  const result = await run(psqlProgram(), [
    '-X', '-q', '--csv', '-v', 'ON_ERROR_STOP=1', '-P', `null=${nullMark}`,
    '-h', path.join(dir, 'run', 'pg'), '-p', '5432', '-U', 'tollgate', '-d', database, '-c', sql,
  ]);
  if (result.code !== 0) throw new Error(`psql failed (exit ${result.code}): ${result.stderr}`);
  const table = parseCsv(result.stdout);
  if (table.length === 0) return [];
  const [header, ...rows] = table;
  return rows.map((row) => Object.fromEntries(header.map((name, i) => [name, row[i] === nullMark ? null : row[i]])));
}

// Polls `check` (async, returns a truthy value when done) every `interval` ms until
// `timeout` ms pass. Resolves the value; rejects with `message` on timeout. For waiting on
// another process' state where no message can be awaited.
// The admin CLI of a cluster (getCluster() is read at each call, so a test may start its cluster
// later): run resolves { code, stdout, stderr }; cli resolves stdout and throws on a non-zero exit;
// json runs cli with --json and parses it.
export function clusterCli(getCluster) {
  const run = (...args) => getCluster().tollgate(args, { env: { TOLLGATE_DIR: getCluster().dir } });
  const cli = async (...args) => {
    const result = await run(...args);
    if (result.code !== 0) throw new Error(`tollgate ${args.join(' ')} failed: ${result.stderr}`);
    return result.stdout;
  };
  const json = async (...args) => JSON.parse(await cli(...args, '--json'));
  return { run, cli, json };
}

export async function waitFor(check, { timeout = 5000, interval = 50, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) { last = error; }
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeout} ms waiting for ${message}${last ? `: ${last.message}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

export const programs = ['ledger', 'billing', 'health', 'router', 'dispatch', 'ingress', 'admin'];
