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
    assert.ok(container.envFrom.some((e) => e.secretRef?.name === 'tollgate-secrets'));
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

test('the programs accept the ConfigMap and Secret as their environment', () => {
  const config = find('ConfigMap', 'tollgate-config').data;
  const secret = find('Secret', 'tollgate-secrets').stringData;
  for (const name of programs) {
    const program = bin(`tollgate-${name}`);
    if (!fs.existsSync(program)) continue; // the schema checks above need no build
    const env = { PATH: process.env.PATH, ...config, ...secret };
    const result = spawnSync(program, ['--print-config'], { env: { ...childEnv(env), ...env }, encoding: 'utf8' });
    assert.equal(result.status, 0, `tollgate-${name} rejects the manifests' configuration: ${result.stderr}`);
    assert.ok(!result.stdout.includes('CHANGE-ME@'), 'the database password is masked');
  }
});
