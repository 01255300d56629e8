// ops/k8s: every manifest validates against the Kubernetes schemas (kubernetes-models), and the
// set hangs together: a workload, a Service and a PodDisruptionBudget per program, autoscalers
// for the stateless ones, probes on every container that ping the program's own control
// socket, selectors that select, and a ConfigMap whose every key the programs accept.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { bin, childEnv } from '../lib/harness.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const folder = path.join(root, 'ops', 'k8s');
const programs = ['ingress', 'router', 'dispatch', 'health', 'billing', 'ledger', 'admin'];
const stateless = ['ingress', 'router', 'dispatch', 'admin'];

// YAML -> JSON through PyYAML (installed with docker-compose), so the test needs no YAML
// package of its own.
function loadYaml(file) {
  const result = spawnSync('python3', ['-c',
    'import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)',
    file], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`cannot parse ${file}: ${result.stderr}`);
  return JSON.parse(result.stdout);
}

const documents = fs.readdirSync(folder).filter((name) => /\.ya?ml$/.test(name)).sort()
  .flatMap((name) => loadYaml(path.join(folder, name)).map((doc) => ({ file: name, doc })));

async function model(apiVersion, kind) {
  // "v1" is the core group; "apps/v1" is group/version.
  const module = await import(`kubernetes-models/${apiVersion}/${kind}`);
  return module[kind];
}

const find = (kind, name) => documents.map((d) => d.doc)
  .find((doc) => doc.kind === kind && doc.metadata?.name === name);
const workloadOf = (name) => find('Deployment', name) ?? find('StatefulSet', name);
const matches = (selector, labels) => Object.entries(selector).every(([k, v]) => labels?.[k] === v);

test('every manifest validates against the Kubernetes schemas', async () => {
  assert.ok(documents.length >= 20, `only ${documents.length} documents in ops/k8s`);
  for (const { file, doc } of documents) {
    assert.ok(doc.apiVersion && doc.kind, `${file}: a document without apiVersion/kind`);
    const Model = await model(doc.apiVersion, doc.kind);
    assert.ok(Model, `${file}: no schema for ${doc.apiVersion} ${doc.kind}`);
    assert.doesNotThrow(() => new Model(doc).validate(), `${file}: ${doc.kind}/${doc.metadata?.name}`);
    assert.equal(doc.metadata.namespace ?? doc.metadata.name, 'tollgate', `${file}: namespace`);
  }
  // The validator is not vacuous: a broken Deployment is refused.
  const Deployment = await model('apps/v1', 'Deployment');
  const broken = structuredClone(workloadOf('router'));
  broken.spec.replicas = 'two';
  assert.throws(() => new Deployment(broken).validate());
});

test('each program: workload, Service, PDB, probes on its control socket; autoscalers', () => {
  const config = find('ConfigMap', 'tollgate-config').data;
  for (const name of programs) {
    const workload = workloadOf(name);
    assert.ok(workload, `no Deployment or StatefulSet for ${name}`);
    const labels = workload.spec.template.metadata.labels;
    assert.ok(matches(workload.spec.selector.matchLabels, labels), `${name}: selector`);
    assert.ok(workload.spec.replicas >= 2, `${name}: at least two instances`);
    const [container] = workload.spec.template.spec.containers;
    assert.ok(container.readinessProbe && container.livenessProbe, `${name}: probes`);
    assert.ok(container.resources?.requests?.cpu, `${name}: a CPU request (autoscaling needs it)`);
    assert.ok(container.envFrom.some((e) => e.configMapRef?.name === 'tollgate-config'));
    assert.ok(container.envFrom.some((e) => e.secretRef?.name === 'tollgate-db'));
    // The master key only where provider secrets are opened; the bootstrap token only in admin.
    const secretRefs = container.envFrom.filter((e) => e.secretRef).map((e) => e.secretRef.name).sort();
    const wanted = ['tollgate-db', ...(['dispatch', 'health', 'admin'].includes(name) ? ['tollgate-master-key'] : []),
      ...(name === 'billing' ? ['tollgate-billing-grant-key'] : []),
      ...(name === 'admin' ? ['tollgate-admin-token'] : [])].sort();
    assert.deepEqual(secretRefs, wanted, `${name}: secrets in its environment`);
    // CURVE: the cluster's public certificates and this program's own secret one, nobody else's.
    const volumes = Object.fromEntries(workload.spec.template.spec.volumes.map((v) => [v.name, v]));
    const mounts = Object.fromEntries(container.volumeMounts.map((m) => [m.mountPath, m.name]));
    assert.equal(volumes[mounts['/etc/tollgate/curve/public']]?.secret?.secretName, 'tollgate-curve-public', `${name}: public certificates`);
    assert.equal(volumes[mounts['/etc/tollgate/curve/secret']]?.secret?.secretName, `tollgate-curve-${name}`, `${name}: own certificate`);
    const controlPort = config[`TOLLGATE_${name.toUpperCase()}_CONTROL_BIND`].split(':').pop();
    assert.deepEqual(container.livenessProbe.exec.command.slice(0, 4),
      ['tollgate', 'ping', '--endpoint', `tcp://127.0.0.1:${controlPort}`], `${name}: liveness pings control`);
    if (name !== 'ingress' && name !== 'admin') {
      assert.ok(container.readinessProbe.exec.command.includes('--ready'), `${name}: readiness fails while draining`);
    } else {
      assert.equal(container.readinessProbe.httpGet.path, '/healthz');
    }
    assert.ok(workload.spec.template.spec.terminationGracePeriodSeconds >= 5, `${name}: room to drain`);

    const service = find('Service', name);
    assert.ok(service, `no Service for ${name}`);
    assert.ok(matches(service.spec.selector, labels), `${name}: Service selects the pods`);
    const containerPorts = new Set(container.ports.map((p) => p.name));
    for (const port of service.spec.ports) assert.ok(containerPorts.has(port.targetPort), `${name}: port ${port.name}`);
    // Nobody dials ingress or admin but people and load balancers: a ClusterIP Service.
    if (name !== 'ingress' && name !== 'admin') {
      // Peers connect to every instance: the name must resolve to each pod.
      assert.equal(service.spec.clusterIP, 'None', `${name}: headless Service`);
    }
    if (workload.kind === 'StatefulSet') assert.equal(workload.spec.serviceName, name);

    const pdb = find('PodDisruptionBudget', name);
    assert.ok(pdb, `no PodDisruptionBudget for ${name}`);
    assert.ok(matches(pdb.spec.selector.matchLabels, labels), `${name}: PDB selects the pods`);

    const hpa = find('HorizontalPodAutoscaler', name);
    if (stateless.includes(name)) {
      assert.ok(hpa, `no autoscaler for ${name}`);
      assert.equal(hpa.spec.scaleTargetRef.kind, workload.kind);
      assert.equal(hpa.spec.scaleTargetRef.name, name);
      assert.ok(hpa.spec.minReplicas >= 2);
    } else {
      assert.equal(hpa, undefined, `${name} keeps state or identity and must not be autoscaled`);
    }
  }
  // Billing shards by position in billing.endpoints: the list names exactly its pods.
  const billing = workloadOf('billing');
  const listed = config.TOLLGATE_BILLING_ENDPOINTS.split(',');
  assert.equal(listed.length, billing.spec.replicas);
  listed.forEach((endpoint, i) => assert.equal(endpoint, `tcp://billing-${i}.billing:7120`));
  assert.equal(Number(config.TOLLGATE_HEALTH_INSTANCE_COUNT), workloadOf('health').spec.replicas);
});

test('no secret or placeholder in the manifests; the configuration turns CURVE on', () => {
  for (const name of fs.readdirSync(folder)) {
    const text = fs.readFileSync(path.join(folder, name), 'utf8');
    assert.ok(!/CHANGE-ME/i.test(text), `${name}: a placeholder secret`);
  }
  assert.equal(documents.filter(({ doc }) => doc.kind === 'Secret').length, 0, 'Secrets come from secrets.sh, not the manifests');
  const config = find('ConfigMap', 'tollgate-config').data;
  assert.equal(config.TOLLGATE_SECURITY, 'curve');
  assert.equal(config.TOLLGATE_CURVE_DIR, '/etc/tollgate/curve');
  const script = fs.readFileSync(path.join(folder, 'secrets.sh'), 'utf8');
  for (const name of ['tollgate-db', 'tollgate-master-key', 'tollgate-billing-grant-key', 'tollgate-admin-token', 'tollgate-curve-public', 'tollgate-curve-$name']) {
    assert.ok(script.includes(name), `secrets.sh makes ${name}`);
  }
});

test('NetworkPolicies: deny by default; each server port admits only its peers', () => {
  const policies = documents.map((d) => d.doc).filter((doc) => doc.kind === 'NetworkPolicy');
  const deny = policies.find((p) => p.metadata.name === 'default-deny');
  assert.ok(deny && Object.keys(deny.spec.podSelector).length === 0);
  assert.deepEqual(deny.spec.policyTypes.sort(), ['Egress', 'Ingress']);
  assert.equal(deny.spec.ingress, undefined);
  assert.equal(deny.spec.egress, undefined);
  // Who may connect to which port of whom (null: anyone).
  const peers = {
    router: { 7130: ['admin'], 7132: ['dispatch'] },
    dispatch: { 7140: ['ingress'], 7141: ['health', 'router'] },
    health: { 7150: ['router'] },
    billing: { 7120: ['dispatch', 'ingress'] },
    ledger: { 7160: ['admin', 'billing', 'dispatch', 'health', 'ingress', 'router'] },
    ingress: { 8080: null },
    admin: { 8081: null },
  };
  const component = (selector) => selector.podSelector?.matchLabels?.['app.kubernetes.io/component'];
  for (const name of programs) {
    const policy = policies.find((p) => p.spec.podSelector.matchLabels?.['app.kubernetes.io/component'] === name);
    assert.ok(policy, `no NetworkPolicy for ${name}`);
    const admitted = {};
    for (const rule of policy.spec.ingress) {
      for (const port of rule.ports) admitted[port.port] = rule.from ? rule.from.map(component).sort() : null;
    }
    assert.deepEqual(admitted, peers[name], `${name}: who may connect`);
    // Its egress names exactly the servers it is a peer of (plus providers for dispatch, health).
    const reaches = new Set();
    for (const rule of policy.spec.egress) {
      for (const to of rule.to ?? []) {
        if (to.ipBlock) assert.ok(['dispatch', 'health'].includes(name), `${name}: reaches any address`);
        else for (const port of rule.ports) reaches.add(`${component(to)}:${port.port}`);
      }
    }
    const expected = Object.entries(peers).flatMap(([server, ports]) => Object.entries(ports)
      .filter(([, from]) => from?.includes(name)).map(([port]) => `${server}:${port}`));
    assert.deepEqual([...reaches].sort(), expected.sort(), `${name}: whom it may reach`);
  }
});

test('the programs accept the ConfigMap and Secrets as their environment', () => {
  const config = find('ConfigMap', 'tollgate-config').data;
  // What secrets.sh puts in the Secrets.
  const secret = {
    TOLLGATE_DATABASE_URL: 'postgresql://tollgate:pw@postgres.example:5432/tollgate',
    TOLLGATE_SECRET_KEY: '00'.repeat(32),
    TOLLGATE_BILLING_GRANT_KEY: '11'.repeat(32),
    TOLLGATE_ADMIN_TOKEN: 'tga_0123',
  };
  for (const name of programs) {
    const program = bin(`tollgate-${name}`);
    if (!fs.existsSync(program)) continue; // the schema checks above need no build
    const env = { PATH: process.env.PATH, ...config, ...secret };
    const result = spawnSync(program, ['--print-config'], { env: { ...childEnv(env), ...env }, encoding: 'utf8' });
    assert.equal(result.status, 0, `tollgate-${name} rejects the manifests' configuration: ${result.stderr}`);
    assert.ok(!result.stdout.includes(':pw@'), 'the database password is masked');
  }
});
