// A strict parser of the Prometheus text exposition format (version 0.0.4), enough to hold
// Tollgate's /metrics to the format: every sample belongs to a family declared by # TYPE
// before it, names and labels follow the grammar, label values are properly escaped, values
// are floats, no series appears twice, and histograms have increasing `le` buckets ending at
// +Inf whose count equals _count. Throws an Error naming the line on the first violation.
//
//   parsePrometheus(text) -> Map family name -> { type, help, samples: [{ name, labels, value }] }

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseValue(text, where) {
  if (/^[+-]?Inf$/.test(text)) return text.startsWith('-') ? -Infinity : Infinity;
  if (text === 'NaN') return NaN;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) throw new Error(`${where}: bad value '${text}'`);
  return Number(text);
}

// Parses `{a="x",b="y"}` starting at text[i] === '{'. Returns [labels, index after '}'].
function parseLabels(text, i, where) {
  const labels = {};
  i++;
  while (text[i] !== '}') {
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new Error(`${where}: label without '='`);
    const name = text.slice(i, eq);
    if (!LABEL.test(name)) throw new Error(`${where}: bad label name '${name}'`);
    if (name in labels) throw new Error(`${where}: label '${name}' twice`);
    if (text[eq + 1] !== '"') throw new Error(`${where}: label value not quoted`);
    let value = '';
    let j = eq + 2;
    for (;;) {
      if (j >= text.length) throw new Error(`${where}: unterminated label value`);
      const c = text[j];
      if (c === '\\') {
        const next = text[j + 1];
        if (next === 'n') value += '\n';
        else if (next === '\\' || next === '"') value += next;
        else throw new Error(`${where}: bad escape '\\${next}'`);
        j += 2;
      } else if (c === '"') { j++; break; } else if (c === '\n') {
        throw new Error(`${where}: newline in a label value`);
      } else { value += c; j++; }
    }
    labels[name] = value;
    if (text[j] === ',') j++;
    else if (text[j] !== '}') throw new Error(`${where}: expected ',' or '}' after a label`);
    i = j;
  }
  return [labels, i + 1];
}

function familyOf(name, families) {
  if (families.has(name)) return name;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length);
      const family = families.get(base);
      if (family && (family.type === 'histogram' || (family.type === 'summary' && suffix !== '_bucket'))) return base;
    }
  }
  return null;
}

export function parsePrometheus(text) {
  if (!text.endsWith('\n')) throw new Error('the exposition does not end with a newline');
  const families = new Map();
  const seen = new Set();
  const lines = text.split('\n');
  lines.pop();
  lines.forEach((line, index) => {
    const where = `line ${index + 1} '${line}'`;
    if (line === '') return;
    if (line.startsWith('#')) {
      const match = line.match(/^# (HELP|TYPE) (\S+) ?(.*)$/);
      if (!match) return; // a plain comment
      const [, kind, name, rest] = match;
      if (!NAME.test(name)) throw new Error(`${where}: bad metric name`);
      const family = families.get(name) ?? { type: 'untyped', help: '', samples: [], typed: false, helped: false };
      if (kind === 'TYPE') {
        if (family.typed) throw new Error(`${where}: second TYPE for ${name}`);
        if (family.samples.length) throw new Error(`${where}: TYPE after samples of ${name}`);
        if (!TYPES.has(rest)) throw new Error(`${where}: unknown type '${rest}'`);
        family.type = rest;
        family.typed = true;
      } else {
        if (family.helped) throw new Error(`${where}: second HELP for ${name}`);
        family.help = rest;
        family.helped = true;
      }
      families.set(name, family);
      return;
    }
    const nameMatch = line.match(/^[a-zA-Z_:][a-zA-Z0-9_:]*/);
    if (!nameMatch) throw new Error(`${where}: no metric name`);
    const name = nameMatch[0];
    let i = name.length;
    let labels = {};
    if (line[i] === '{') [labels, i] = parseLabels(line, i, where);
    if (line[i] !== ' ') throw new Error(`${where}: expected a space before the value`);
    const parts = line.slice(i + 1).split(' ');
    if (parts.length > 2 || parts[0] === '') throw new Error(`${where}: expected 'value [timestamp]'`);
    const value = parseValue(parts[0], where);
    if (parts[1] !== undefined && !/^-?\d+$/.test(parts[1])) throw new Error(`${where}: bad timestamp`);
    const base = familyOf(name, families);
    if (!base) throw new Error(`${where}: sample of ${name} before its # TYPE`);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (seen.has(key)) throw new Error(`${where}: series appears twice`);
    seen.add(key);
    const family = families.get(base);
    if (family.type === 'counter' && !(value >= 0)) throw new Error(`${where}: negative counter`);
    family.samples.push({ name, labels, value });
  });
  for (const [name, family] of families) {
    if (family.type !== 'histogram') continue;
    // Group by labels without le; buckets must increase and end at +Inf == _count.
    const groups = new Map();
    for (const sample of family.samples) {
      const { le, ...rest } = sample.labels;
      const key = JSON.stringify(Object.entries(rest).sort());
      const group = groups.get(key) ?? { buckets: [], count: null, sum: null };
      if (sample.name === `${name}_bucket`) {
        if (le === undefined) throw new Error(`${name}: bucket without le`);
        group.buckets.push([parseValue(le, `${name} le`), sample.value]);
      } else if (sample.name === `${name}_count`) group.count = sample.value;
      else if (sample.name === `${name}_sum`) group.sum = sample.value;
      else throw new Error(`${name}: stray sample ${sample.name}`);
      groups.set(key, group);
    }
    for (const [key, group] of groups) {
      const where = `${name}${key}`;
      if (group.count === null || group.sum === null) throw new Error(`${where}: no _count or _sum`);
      let lastLe = -Infinity;
      let lastCount = 0;
      for (const [le, count] of group.buckets) {
        if (!(le > lastLe)) throw new Error(`${where}: le not increasing`);
        if (count < lastCount) throw new Error(`${where}: bucket counts decrease`);
        lastLe = le;
        lastCount = count;
      }
      if (lastLe !== Infinity) throw new Error(`${where}: no +Inf bucket`);
      if (lastCount !== group.count) throw new Error(`${where}: +Inf bucket ${lastCount} != _count ${group.count}`);
    }
  }
  for (const family of families.values()) { delete family.typed; delete family.helped; }
  return families;
}

// Fetches and parses one /metrics.
export async function scrape(address) {
  const response = await fetch(`http://${address}/metrics`);
  if (response.status !== 200) throw new Error(`GET http://${address}/metrics answered ${response.status}`);
  const type = response.headers.get('content-type') ?? '';
  if (!type.startsWith('text/plain')) throw new Error(`content-type ${type}`);
  return parsePrometheus(await response.text());
}
