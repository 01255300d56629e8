// Multi-host: the cluster as operators run it, on "hosts" made of network namespaces.
//
//   switch namespace: bridge br0, one veth port per host
//   h1 10.77.0.1  PostgreSQL                    h2 10.77.0.2  one instance of every program
//   mk 10.77.0.4  mock upstream                 h3 10.77.0.3  one instance of every program
//   cl 10.77.0.5  load generator, admin CLI, pings
//
// Every instance binds on its host's address and finds its peers through endpoint lists
// naming both hosts. Under load through both gateways, in turn: SIGTERM each instance and
// start it again; SIGKILL each instance and start it again; cut h3's link for 5 s; restart
// PostgreSQL. Then: the ledger check is clean, every request the client saw complete has
// exactly one usage row, and every count is printed.
//
// Run through tests/cluster/multihost.sh (root, namespaces, cleanup). Addresses are private
// (10.77.0.0/24) and exist only inside this run's namespaces.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { bin, childEnv, psql, run, tempDir, waitFor } from '../lib/harness.mjs';

const tag = process.env.TG_CLUSTER_TAG;
const here = path.dirname(fileURLToPath(import.meta.url));
const strict = process.env.TG_CLUSTER_STRICT === '1';

const net = '10.77.0';
const hosts = {
  db: { ns: `${tag}h1`, ip: `${net}.1`, link: `${tag}h1` },
  a: { ns: `${tag}h2`, ip: `${net}.2`, link: `${tag}h2` },
  b: { ns: `${tag}h3`, ip: `${net}.3`, link: `${tag}h3` },
  mock: { ns: `${tag}mk`, ip: `${net}.4`, link: `${tag}mk` },
  client: { ns: `${tag}cl`, ip: `${net}.5`, link: `${tag}cl` },
};
const switchNs = `${tag}sw`;
const programHosts = [hosts.a, hosts.b];
// Start order is deliberately the reverse of the request path: nothing needs a peer first.
const programs = ['ingress', 'dispatch', 'router', 'billing', 'health', 'ledger', 'admin'];
const controlPort = { ingress: 7110, billing: 7121, router: 7131, dispatch: 7142, health: 7151, ledger: 7161, admin: 7170 };

function ip(...args) {
  const result = spawnSync('ip', args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`ip ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
}

// Bytes through each host's link so far: { name: { rx, tx } }, for network per request.
function linkBytes() {
  const bytes = {};
  for (const [name, host] of Object.entries(hosts)) {
    const [link] = JSON.parse(ip('-j', '-s', '-n', host.ns, 'link', 'show', 'dev', host.link));
    bytes[name] = { rx: link.stats64.rx.bytes, tx: link.stats64.tx.bytes };
  }
  return bytes;
}

function makeNetwork() {
  ip('netns', 'add', switchNs);
  ip('-n', switchNs, 'link', 'set', 'lo', 'up');
  ip('-n', switchNs, 'link', 'add', 'br0', 'type', 'bridge');
  ip('-n', switchNs, 'link', 'set', 'br0', 'up');
  for (const host of Object.values(hosts)) {
    ip('netns', 'add', host.ns);
    ip('link', 'add', host.link, 'type', 'veth', 'peer', 'name', `${host.link}s`);
    ip('link', 'set', host.link, 'netns', host.ns);
    ip('link', 'set', `${host.link}s`, 'netns', switchNs);
    ip('-n', switchNs, 'link', 'set', `${host.link}s`, 'master', 'br0', 'up');
    ip('-n', host.ns, 'link', 'set', 'lo', 'up');
    ip('-n', host.ns, 'addr', 'add', `${host.ip}/24`, 'dev', host.link);
    ip('-n', host.ns, 'link', 'set', host.link, 'up');
  }
}

// Everything this file started, for the exit handler (the wrapper removes the namespaces).
const children = new Set();
process.on('exit', () => { for (const child of children) { try { child.kill('SIGKILL'); } catch { /* gone */ } } });

function inNs(host, program, args, options = {}) {
  return ['netns', 'exec', host.ns, program, ...args];
}

function runIn(host, program, args, options = {}) {
  return run('ip', inNs(host, program, args), options);
}

// One program instance on one host, restartable.
class Instance {
  constructor(program, host, config, logDir) {
    Object.assign(this, { program, host, config, name: `${program}@${host.ip}` });
    this.curveDir = path.join(path.dirname(config), 'curve');
    this.log = path.join(logDir, `${program}-${host.ip}.log`);
  }

  start() {
    const log = fs.openSync(this.log, 'a');
    this.child = spawn('ip', inNs(this.host, bin(`tollgate-${this.program}`), ['--config', this.config]),
      { env: childEnv(), stdio: ['ignore', log, log] });
    fs.closeSync(log);
    children.add(this.child);
    const child = this.child;
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => { children.delete(child); resolve({ code, signal }); }));
    this.pid = child.pid;
  }

  async stop(signal) {
    const sentAt = Date.now();
    this.child.kill(signal);
    const exit = await this.exited;
    return { ...exit, ms: Date.now() - sentAt };
  }

  endpoint() { return `tcp://${this.host.ip}:${controlPort[this.program]}`; }

  // PING on the control socket from the client host. Resolves the PONG's meta, or null.
  async ping() {
    const result = await runIn(hosts.client, bin('tollgate'), ['ping', '--endpoint', this.endpoint(), '--ready', '--timeout', '1'],
      { env: { TOLLGATE_CURVE_DIR: this.curveDir } });
    if (result.code !== 0) return null;
    try { return JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))); } catch { return {}; }
  }

  async ready() {
    await waitFor(async () => {
      const meta = await this.ping();
      if (!meta || meta.pid !== this.pid) return false;
      if (this.program !== 'ingress') return true;
      const health = await runIn(hosts.client, 'curl', ['-fsS', '-o', '/dev/null', `http://${this.host.ip}:8080/healthz`]);
      return health.code === 0;
    }, { timeout: 20000, interval: 50, message: `${this.name} to answer` }).catch((error) => {
      throw new Error(`${error.message}\n--- ${this.log}\n${tail(this.log)}`);
    });
  }
}

function tail(file, lines = 30) {
  try { return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n'); } catch { return ''; }
}

function hostConfig(dir, host, index, secrets) {
  const both = (port) => programHosts.map((h) => `tcp://${h.ip}:${port}`).join(',');
  const lines = {
    log_level: 'info',
    database_url: `postgresql://tollgate@${hosts.db.ip}:5432/tollgate`,
    db_connect_attempts: '100',
    secret_key: secrets.secretKey,
    state_dir: path.join(dir, `state-${host.ip}`),
    'ingress.listen': `${host.ip}:8080`,
    'admin.listen': `${host.ip}:8081`,
    'admin.token': secrets.adminToken,
    'admin.control_bind': `tcp://${host.ip}:7170`,
    // Every host gets the cluster's certificates (CURVE on every socket).
    'curve.dir': path.join(dir, 'curve'),
    // A request stranded on a killed dispatch instance ends at this timeout (see docs/cluster.md).
    'ingress.request_timeout_ms': '8000',
    'ingress.control_bind': `tcp://${host.ip}:7110`,
    'billing.bind': `tcp://${host.ip}:7120`,
    'billing.control_bind': `tcp://${host.ip}:7121`,
    'billing.endpoints': both(7120),
    'router.bind': `tcp://${host.ip}:7130`,
    'router.control_bind': `tcp://${host.ip}:7131`,
    'router.endpoints': both(7130),
    'router.table.bind': `tcp://${host.ip}:7132`,
    'router.table.endpoints': both(7132),
    'dispatch.bind': `tcp://${host.ip}:7140`,
    'dispatch.events.bind': `tcp://${host.ip}:7141`,
    'dispatch.control_bind': `tcp://${host.ip}:7142`,
    'dispatch.endpoints': both(7140),
    'dispatch.events.endpoints': both(7141),
    'health.events.bind': `tcp://${host.ip}:7150`,
    'health.control_bind': `tcp://${host.ip}:7151`,
    'health.events.endpoints': both(7150),
    'health.instance_index': String(index),
    'health.instance_count': '2',
    'ledger.bind': `tcp://${host.ip}:7160`,
    'ledger.control_bind': `tcp://${host.ip}:7161`,
    'ledger.endpoints': both(7160),
  };
  fs.mkdirSync(lines.state_dir, { recursive: true });
  const file = path.join(dir, `tollgate-${host.ip}.conf`);
  fs.writeFileSync(file, Object.entries(lines).map(([k, v]) => `${k} = ${v}\n`).join(''), { mode: 0o600 });
  return file;
}

function pgBin(name) {
  const base = '/usr/lib/postgresql';
  const version = fs.readdirSync(base).filter((v) => fs.existsSync(path.join(base, v, 'bin', name))).sort((x, y) => y - x)[0];
  return path.join(base, version, 'bin', name);
}

async function startPostgres(dir) {
  const data = path.join(dir, 'pg');
  const socket = path.join(dir, 'run', 'pg');
  fs.mkdirSync(socket, { recursive: true });
  fs.mkdirSync(path.join(dir, 'log'), { recursive: true });
  spawnSync('chown', ['-R', 'postgres', path.join(dir, 'run'), path.join(dir, 'log')]);
  fs.mkdirSync(data, { mode: 0o700 });
  spawnSync('chown', ['postgres', data]);
  const init = await run('runuser', ['-u', 'postgres', '--', pgBin('initdb'), '-D', data, '-A', 'trust', '-U', 'tollgate', '--no-sync']);
  assert.equal(init.code, 0, init.stderr);
  fs.appendFileSync(path.join(data, 'pg_hba.conf'), `host all all ${net}.0/24 trust\n`);
  const options = `-k ${socket} -p 5432 -c listen_addresses=${hosts.db.ip} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200`;
  const pgCtl = (...args) => runIn(hosts.db, 'runuser', ['-u', 'postgres', '--', pgBin('pg_ctl'), '-D', data, '-l', path.join(dir, 'log', 'postgres.log'), '-w', ...args]);
  // The schema goes in while the server listens on its socket only; the programs, already
  // running and retrying, reach it over the network only once it is complete (a program
  // that finds the database without its tables exits: docs/cluster.md, "Gaps").
  const start = await pgCtl('-o', `-k ${socket} -p 5432 -c listen_addresses=`, 'start');
  assert.equal(start.code, 0, `${start.stderr}\n${tail(path.join(dir, 'log', 'postgres.log'))}`);
  const create = await run(pgBin('createdb'), ['-h', socket, '-p', '5432', '-U', 'tollgate', 'tollgate']);
  assert.equal(create.code, 0, create.stderr);
  const migrate = await run(bin('tollgate'), ['migrate', '--database-url', `host=${socket} port=5432 dbname=tollgate user=tollgate`]);
  assert.equal(migrate.code, 0, migrate.stderr);
  const listen = await pgCtl('-o', options, '-m', 'fast', 'restart');
  assert.equal(listen.code, 0, `${listen.stderr}\n${tail(path.join(dir, 'log', 'postgres.log'))}`);
  return {
    restart: () => pgCtl('-m', 'fast', 'restart'),
    stop: () => pgCtl('-m', 'immediate', 'stop'),
  };
}

async function startMock() {
  const child = spawn('ip', inNs(hosts.mock, bin('tollgate-mock-upstream'),
    ['--host', hosts.mock.ip, '--port', '0', '--models', 'cluster-model', '--fault', '*=delay-headers:40,delay-chunks:5']),
  { env: childEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  const port = await new Promise((resolve, reject) => {
    let seen = '';
    child.stdout.on('data', (chunk) => {
      seen += chunk;
      const match = seen.match(/^port=(\d+)$/m);
      if (match) resolve(Number(match[1]));
    });
    child.on('exit', () => reject(new Error(`mock upstream exited: ${seen}`)));
  });
  return { url: `http://${hosts.mock.ip}:${port}`, child };
}

// The load generator in the client namespace, driven over its stdin/stdout.
function startLoad(options) {
  const child = spawn('ip', inNs(hosts.client, process.execPath, [path.join(here, 'load.mjs'), JSON.stringify(options)]),
    { env: childEnv(), stdio: ['pipe', 'pipe', 'inherit'] });
  children.add(child);
  const failures = [];
  const waiting = [];
  let summary;
  const done = new Promise((resolve) => { summary = resolve; });
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    let event;
    try { event = JSON.parse(line); } catch { console.log(`load: ${line.slice(0, 200)}`); return; }
    if (event.ev === 'fail') failures.push(event);
    else if (event.ev === 'mark') waiting.shift()?.(event);
    else if (event.ev === 'summary') summary(event);
  });
  return {
    failures,
    mark() {
      return new Promise((resolve) => { waiting.push(resolve); child.stdin.write('mark\n'); });
    },
    stop() { child.stdin.write('stop\n'); return done; },
    kill() { child.kill('SIGKILL'); },
  };
}

test('many instances on several hosts: restarts, kills, a cut link and a database restart under load', { timeout: 420000 }, async (t) => {
  if (!tag) {
    t.skip('run through tests/cluster/multihost.sh (needs root and network namespaces)');
    return;
  }
  const began = Date.now();
  const dir = tempDir('tollgate-multihost-');
  const logDir = path.join(dir, 'log');
  fs.mkdirSync(logDir, { recursive: true });
  makeNetwork();

  const secrets = {
    secretKey: spawnSync('openssl', ['rand', '-hex', '32'], { encoding: 'utf8' }).stdout.trim(),
    adminToken: `tga_${spawnSync('openssl', ['rand', '-hex', '32'], { encoding: 'utf8' }).stdout.trim()}`,
  };
  const certs = spawnSync(bin('tollgate'), ['cert', 'make', '--curve-dir', path.join(dir, 'curve')], { env: childEnv(), encoding: 'utf8' });
  assert.equal(certs.status, 0, certs.stderr);
  const configs = programHosts.map((host, index) => hostConfig(dir, host, index, secrets));
  const instances = programs.flatMap((program) => programHosts.map((host, index) => new Instance(program, host, configs[index], logDir)));
  const counts = { phases: [] };
  let load;
  let pg;
  let mock;
  try {
    // The programs first, PostgreSQL after: nothing has to start before anything else.
    for (const instance of instances) instance.start();
    pg = await startPostgres(dir);
    mock = await startMock();
    const mockUrl = mock.url;
    await Promise.all(instances.map((instance) => instance.ready()));
    const setupMs = Date.now() - began;

    // Provider, model, two accounts (one per billing shard, ids permitting) and their keys.
    const admin = { TOLLGATE_ADMIN_URL: `http://${hosts.a.ip}:8081`, TOLLGATE_ADMIN_TOKEN: secrets.adminToken };
    const cli = async (...args) => {
      const result = await runIn(hosts.client, bin('tollgate'), args, { env: admin });
      assert.equal(result.code, 0, `tollgate ${args.join(' ')}: ${result.stderr}${result.stdout}`);
      return result.stdout.trim().split('\n').pop();
    };
    await cli('provider', 'add', 'mock', '--protocol', 'openai', '--base-url', mockUrl);
    await cli('provider', 'key', 'add', 'mock', '--secret', 'mock-secret');
    await cli('model', 'add', 'cluster-model', '--route', 'mock:cluster-model', '--price-in', '1', '--price-out', '2');
    const keys = [];
    for (const name of ['team-a', 'team-b']) {
      await cli('account', 'add', name, '--balance', '1000000');
      keys.push(await cli('key', 'create', name, '--name', name));
    }
    for (const key of keys) assert.match(key, /^tg-/);
    // Every gateway accepts every key (each catalog has reloaded). These requests are billed
    // too: their ids are kept so the usage check below counts them as seen.
    const warmupIds = [];
    for (const host of programHosts) {
      for (const key of keys) {
        await waitFor(async () => {
          const answer = await runIn(hosts.client, 'curl', ['-fsS', '-o', '/dev/null', '-w', '%header{x-request-id}',
            '-H', `authorization: Bearer ${key}`, '-H', 'content-type: application/json',
            '-d', '{"model":"cluster-model","messages":[{"role":"user","content":"hi"}]}',
            `http://${host.ip}:8080/v1/chat/completions`]);
          if (answer.code !== 0) return false;
          warmupIds.push(answer.stdout.trim());
          return true;
        }, { timeout: 15000, interval: 100, message: `gateway ${host.ip} to accept the key` });
      }
    }
    assert.ok(warmupIds.every((id) => id.length > 0), `warm-up answers carry their request id: ${warmupIds}`);

    const bytesBefore = linkBytes();
    load = startLoad({
      gateways: programHosts.map((h) => `http://${h.ip}:8080`), keys, model: 'cluster-model',
      concurrency: 16, timeoutMs: 20000,
    });
    // Traffic flows through both gateways after `since`; resolves the mark that shows it.
    const flowing = async (since, atLeast = 10) => {
      let last;
      await waitFor(async () => {
        last = await load.mark();
        return last.okByGateway.every((n, i) => n - since.okByGateway[i] >= atLeast) ? last : null;
      }, { timeout: 30000, interval: 100, message: 'requests to complete through both gateways' });
      return last;
    };
    // Every request in flight at `at` has finished (answered or failed).
    const settled = (at) => waitFor(async () => {
      const mark = await load.mark();
      return mark.oldestInFlight === null || mark.oldestInFlight > at;
    }, { timeout: 30000, interval: 100, message: 'requests in flight at the event to finish' });
    await flowing(await load.mark());

    const phase = async (name, action) => {
      const before = await load.mark();
      const failuresBefore = load.failures.length;
      const result = (await action(before)) ?? {};
      // Requests that started before the instance was back must have finished too.
      const actionDone = Date.now();
      await flowing(await load.mark(), 25);
      await settled(actionDone);
      const after = await load.mark();
      const failures = load.failures.slice(failuresBefore);
      const record = {
        name, ms: after.t - before.t, ok: after.ok - before.ok, failed: after.failed - before.failed,
        retried: after.retried - before.retried,
        reasons: [...new Set(failures.map((f) => f.reason))].join(' '),
        failures, ...result,
      };
      if (record.at !== undefined) record.killedAt = record.at;
      delete record.at;
      counts.phases.push(record);
      console.log(`  ${name.padEnd(34)} ok ${String(record.ok).padStart(5)}  failed ${String(record.failed).padStart(3)}` +
        `  retried ${String(record.retried).padStart(3)}${record.inFlight !== undefined ? `  in flight ${record.inFlight}` : ''}` +
        `  ${record.ms} ms${record.reasons ? `  (${record.reasons})` : ''}`);
      return record;
    };

    // 1. SIGTERM each instance: it drains and exits 0; started again, it answers.
    for (const instance of instances) {
      await phase(`SIGTERM ${instance.name}`, async () => {
        const exit = await instance.stop('SIGTERM');
        assert.equal(exit.signal, null, `${instance.name} died of ${exit.signal}`);
        assert.equal(exit.code, 0, `${instance.name} exit code after SIGTERM:\n${tail(instance.log)}`);
        assert.ok(exit.ms < 3000, `${instance.name} took ${exit.ms} ms to drain`);
        instance.start();
        await instance.ready();
        return { exitMs: exit.ms };
      });
    }

    // 2. SIGKILL each instance: only what it held in flight may fail. A failed request must
    // have started before the kill (it was in flight somewhere), and for an ingress it must
    // have gone to that gateway; requests started afterwards must all succeed. "Before" has
    // a grace of `deathNoticeMs`: a message a peer sends in the moment the instance dies was
    // handed to it, and the peer learns of the death only when TCP tells it.
    const deathNoticeMs = 250;
    for (const instance of instances) {
      const gateway = programHosts.indexOf(instance.host);
      const record = await phase(`SIGKILL ${instance.name}`, async () => {
        // For the record: what the instance held just before (the dispatch's own count; the
        // gateway's open requests for an ingress; every open request for the others).
        const meta = instance.program === 'dispatch' ? await instance.ping() : null;
        const mark = await load.mark();
        const inFlight = instance.program === 'ingress' ? mark.inFlight[gateway]
          : instance.program === 'dispatch' ? (meta?.status?.in_flight ?? null)
            : mark.inFlight.reduce((a, b) => a + b);
        const at = Date.now();
        await instance.stop('SIGKILL');
        instance.start();
        await instance.ready();
        return { inFlight, at };
      });
      for (const failure of record.failures) {
        assert.ok(failure.started <= record.killedAt + deathNoticeMs,
          `SIGKILL ${instance.name}: a request started ${failure.started - record.killedAt} ms after the kill failed (${failure.reason})`);
        if (instance.program === 'ingress') {
          assert.equal(failure.gateway, gateway, `SIGKILL ${instance.name}: a request through the other gateway failed (${failure.reason})`);
        }
      }
    }

    // 3. h3's link down for 5 s and up again: the cluster recovers by itself.
    const pids = instances.map((instance) => instance.pid);
    const cut = await phase(`link of ${hosts.b.ip} down 5 s`, async () => {
      ip('-n', switchNs, 'link', 'set', `${hosts.b.link}s`, 'down');
      await new Promise((resolve) => setTimeout(resolve, 5000)); // the outage itself
      ip('-n', switchNs, 'link', 'set', `${hosts.b.link}s`, 'up');
      const upAt = Date.now();
      await flowing(await load.mark(), 20);
      return { recoveredMs: Date.now() - upAt, at: upAt };
    });
    assert.deepEqual(instances.map((instance) => instance.pid), pids, 'no instance restarted');
    for (const instance of instances) assert.equal(instance.child.exitCode, null, `${instance.name} still runs`);

    // 4. PostgreSQL restarts under load: the hot path never waits on it.
    await phase('PostgreSQL restart', async () => {
      const restart = await pg.restart();
      assert.equal(restart.code, 0, restart.stderr);
    });

    const summary = await load.stop();
    load = null;
    const bytesAfter = linkBytes();
    // Everything settles: no SETTLE, ENTRY or batch waits anywhere, usage stops growing.
    let previous = -1;
    await waitFor(async () => {
      const metas = await Promise.all(instances.map((instance) => instance.ping()));
      const pending = metas.reduce((sum, meta, i) => {
        const status = meta?.status ?? {};
        return sum + (status.settle_pending ?? 0) + (status.outbox ?? 0) + (status.queue ?? 0) +
          (instances[i].program === 'dispatch' ? (status.in_flight ?? 0) : 0);
      }, 0);
      const [{ n }] = await psql(dir, 'SELECT count(*) AS n FROM usage');
      const stable = Number(n) === previous;
      previous = Number(n);
      return pending === 0 && stable;
    }, { timeout: 60000, interval: 500, message: 'settlements to reach the ledger' });

    // The ledger check: `tollgate ledger check` when it exists, and these queries always.
    const ledgerCheck = await run(bin('tollgate'), ['ledger', 'check', '--database-url',
      `host=${path.join(dir, 'run', 'pg')} port=5432 dbname=tollgate user=tollgate`]);
    const checks = {
      'account balances equal their journal lines': `SELECT count(*) AS n FROM (SELECT a.id FROM accounts a
         LEFT JOIN ledger_accounts la ON la.account_id = a.id LEFT JOIN journal_lines l ON l.ledger_account_id = la.id
         GROUP BY a.id, a.balance_micros HAVING a.balance_micros <> coalesce(sum(l.amount_micros), 0)) bad`,
      'journal entries balance to zero': `SELECT count(*) AS n FROM (SELECT e.id FROM journal_entries e
         LEFT JOIN journal_lines l ON l.entry_id = e.id GROUP BY e.id
         HAVING count(l.entry_id) < 2 OR coalesce(sum(l.amount_micros), 0) <> 0) bad`,
      // Usage is journaled per (account, batch): a request's money is its journal_requests row
      // (migration 0020), in an entry whose customer line is minus the sum of its requests.
      'usage rows with cost have their journaled request': `SELECT count(*) AS n FROM usage u
         LEFT JOIN journal_requests r ON r.request_id = u.request_id
         LEFT JOIN journal_entries e ON e.id = r.entry_id AND e.kind = 'usage'
         LEFT JOIN ledger_accounts la ON la.account_id = u.account_id
         LEFT JOIN journal_lines l ON l.entry_id = e.id AND l.ledger_account_id = la.id
         WHERE u.cost_micros > 0 AND (l.amount_micros IS NULL OR r.amount_micros <> u.cost_micros)`,
      'usage entries equal their requests': `SELECT count(*) AS n FROM journal_entries e
         LEFT JOIN (SELECT entry_id, sum(amount_micros) AS total FROM journal_requests GROUP BY entry_id) r
           ON r.entry_id = e.id
         LEFT JOIN (SELECT l.entry_id, count(*) AS n, sum(l.amount_micros) AS total FROM journal_lines l
           JOIN ledger_accounts la ON la.id = l.ledger_account_id WHERE la.account_id IS NOT NULL
           GROUP BY l.entry_id) c ON c.entry_id = e.id
         WHERE e.kind = 'usage' AND (r.total IS NULL OR c.n IS DISTINCT FROM 1 OR c.total <> -r.total)`,
      'journaled requests have their usage row': `SELECT count(*) AS n FROM journal_requests r
         WHERE NOT EXISTS (SELECT 1 FROM usage u WHERE u.request_id = r.request_id
           AND u.cost_micros = r.amount_micros)`,
    };
    const checkCounts = {};
    for (const [name, sql] of Object.entries(checks)) checkCounts[name] = Number((await psql(dir, sql))[0].n);

    const rows = await psql(dir, 'SELECT request_id, status FROM usage');
    const byId = new Map(rows.map((row) => [row.request_id, Number(row.status)]));
    const okIds = new Set([...summary.okIds, ...warmupIds]);
    const completedWithRow = summary.okIds.filter((id) => byId.get(id) === 200).length;
    const billedNotSeen = rows.filter((row) => Number(row.status) === 200 && !okIds.has(row.request_id)).length;

    counts.setupMs = setupMs;
    counts.totalMs = Date.now() - began;
    const line = (label, value) => console.log(`  ${label.padEnd(52)} ${value}`);
    console.log('\nmulti-host totals');
    line('requests started', summary.started);
    line('completed (client saw a whole answer)', summary.ok);
    line('failed (by reason)', `${summary.failed} ${JSON.stringify(summary.reasons)}`);
    line('retried on the other gateway (never reached one)', summary.retried);
    line('failures in SIGTERM phases', counts.phases.filter((p) => p.name.startsWith('SIGTERM')).reduce((s, p) => s + p.failed, 0));
    line('failures in SIGKILL phases', counts.phases.filter((p) => p.name.startsWith('SIGKILL')).reduce((s, p) => s + p.failed, 0));
    line('failures while the link was down, recovered after', `${cut.failed}, ${cut.recoveredMs} ms`);
    line('failures across the PostgreSQL restart', counts.phases.at(-1).failed);
    line('usage rows', rows.length);
    line('usage rows with status 200', rows.filter((row) => Number(row.status) === 200).length);
    line('completed requests with their usage row', `${completedWithRow} of ${summary.ok}`);
    line('usage 200 rows the client did not see complete', billedNotSeen);
    // A completed request without its 200 row: say which case it is (no request id on the
    // answer, no row, or a row with another status) and what the programs logged for it.
    const unbilled = summary.okIds.filter((id) => byId.get(id) !== 200);
    for (const id of unbilled.slice(0, 5)) {
      const related = id ? await psql(dir, `SELECT request_id, status, cost_micros, estimated, operator_loss
         FROM usage WHERE request_id LIKE '${String(id).replace(/[^0-9a-zA-Z-]/g, '')}%'`) : [];
      line(`completed without a 200 row: ${id ?? '(no x-request-id)'}`, JSON.stringify(related));
      if (!id) continue;
      for (const file of fs.readdirSync(logDir)) {
        const hits = fs.readFileSync(path.join(logDir, file), 'utf8').split('\n').filter((l) => l.includes(id));
        for (const hit of hits.slice(0, 10)) console.log(`    ${file}: ${hit}`);
      }
    }
    for (const [name, n] of Object.entries(checkCounts)) line(`ledger: ${name}`, n === 0 ? 'ok' : `${n} bad`);
    line('tollgate ledger check', ledgerCheck.code === 0 ? 'clean' : ledgerCheck.code === 2 ? 'not available' : `exit ${ledgerCheck.code}`);
    line('setup, whole run (ms)', `${setupMs}, ${counts.totalMs}`);
    for (const [name, host] of Object.entries(hosts)) {
      const per = (way) => Math.round((bytesAfter[name][way] - bytesBefore[name][way]) / summary.started);
      line(`bytes per request on ${host.ip} (${name}) in / out`, `${per('rx')} / ${per('tx')}`);
    }

    // Hard requirements.
    for (const [name, n] of Object.entries(checkCounts)) assert.equal(n, 0, `ledger: ${name}`);
    if (ledgerCheck.code !== 2) assert.equal(ledgerCheck.code, 0, `tollgate ledger check:\n${ledgerCheck.stdout}${ledgerCheck.stderr}`);
    assert.equal(completedWithRow, summary.ok, 'every completed request has exactly one usage row');
    assert.ok(billedNotSeen <= summary.failed, `${billedNotSeen} usage rows for requests the client never saw, more than the ${summary.failed} failures`);
    assert.ok(summary.ok > 1000, `only ${summary.ok} requests completed`);
    // The targets: a graceful restart and a database restart lose nothing. Known gaps in
    // programs (docs/cluster.md, "Gaps") are reported, not failed on, unless
    // TG_CLUSTER_STRICT=1; any other failure in these phases fails the test.
    const knownGaps = {
      // A draining ingress closes its listener with connections still in the accept backlog
      // (or accepted, request not yet read): those are reset.
      ingress: /^ECONNRESET$/,
    };
    for (const record of counts.phases.filter((p) => p.name.startsWith('SIGTERM') || p.name.startsWith('PostgreSQL'))) {
      const program = record.name.split(' ')[1].split('@')[0];
      const unexplained = record.failures.filter((f) => strict || !knownGaps[program]?.test(f.reason));
      assert.equal(unexplained.length, 0, `${record.name}: ${unexplained.length} failed (${record.reasons})`);
    }
  } catch (error) {
    if (process.env.TG_CLUSTER_LOGS) fs.cpSync(logDir, process.env.TG_CLUSTER_LOGS, { recursive: true });
    for (const instance of instances) {
      if (fs.existsSync(instance.log)) console.log(`--- ${instance.log}\n${tail(instance.log, 8)}`);
    }
    throw error;
  } finally {
    if (load) {
      await Promise.race([load.stop(), new Promise((resolve) => setTimeout(resolve, 25000))]);
      load.kill();
    }
    if (process.env.TG_CLUSTER_LOGS) fs.cpSync(logDir, process.env.TG_CLUSTER_LOGS, { recursive: true });
    mock?.child.kill('SIGKILL');
    for (const instance of instances) if (instance.child?.exitCode === null) instance.child.kill('SIGKILL');
    if (pg) await pg.stop();
  }
});
