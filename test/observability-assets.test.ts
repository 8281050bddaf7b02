import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { createWorld, transfer, type World } from './harness/world.ts';

/*
 * The Grafana dashboard and the Prometheus rules shipped in docs/observability/ name only metrics a
 * running service exports, the rules are valid (promtool when the machine has it, a schema check
 * otherwise), every alert of the README's table has a rule, and every runbook link lands on a
 * section of the README.
 */
const file = (path: string) => readFileSync(fileURLToPath(new URL(`../${path}`, import.meta.url)), 'utf8');
const DASHBOARD = 'docs/observability/grafana-dashboard.json';
const RULES = 'docs/observability/alert-rules.yml';

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface Panel {
  type: string;
  title: string;
  datasource?: { uid?: string };
  targets?: { expr: string }[];
}

const metricNames = (expr: string) => [...expr.matchAll(/\btpc_[a-z0-9_]+\b/g)].map((m) => m[0]);

function hasPromtool(): boolean {
  try {
    execFileSync('promtool', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes. */
const anchor = (heading: string) =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s-]/gu, '')
    .replace(/\s/g, '-');

describe('the dashboard and the alert rules', () => {
  let world: World;
  let exported: Map<string, string>;
  let scrape: string;
  beforeAll(async () => {
    world = await createWorld();
    expect((await world.submit(transfer('bank_a', 'bank_b', 1))).status).toBe(201);
    const r = await fetch(`${world.service.url}/metrics`);
    scrape = await r.text();
    exported = new Map([...scrape.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
  });
  afterAll(async () => {
    await world?.close();
  });

  const isExported = (name: string) => {
    if (exported.has(name)) return true;
    const base = name.replace(/_(bucket|sum|count)$/, '');
    return base !== name && exported.get(base) === 'histogram';
  };

  const rules = () => (parseYaml(file(RULES)) as { groups: { name: string; rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
  const panels = () => (JSON.parse(file(DASHBOARD)) as { panels: Panel[] }).panels;

  it('names only metrics the service exports', () => {
    const named = new Set([...panels().flatMap((p) => (p.targets ?? []).flatMap((t) => metricNames(t.expr))), ...rules().flatMap((r) => metricNames(r.expr))]);
    expect(named.size).toBeGreaterThan(15);
    expect([...named].filter((n) => !isExported(n))).toEqual([]);
  });

  it('exports the job queues per state and each dependency /readyz checks', () => {
    for (const queue of ['completion', 'deadline', 'maintenance']) {
      expect(scrape).toMatch(new RegExp(`^tpc_job_queue_jobs\\{queue="${queue}",state="waiting"\\} \\d+$`, 'm'));
    }
    expect(scrape).toMatch(/^tpc_dependency_up\{dependency="log"\} 1$/m);
    expect(scrape).toMatch(/^tpc_dependency_up\{dependency="redis"\} 1$/m);
  });

  it('has valid rules (promtool when installed, else their schema), one per alert of the README table', () => {
    if (hasPromtool()) {
      expect(execFileSync('promtool', ['check', 'rules', fileURLToPath(new URL(`../${RULES}`, import.meta.url))], { encoding: 'utf8' })).toMatch(
        /SUCCESS: \d+ rules found/,
      );
    }
    const all = rules();
    for (const r of all) {
      expect(r.alert, JSON.stringify(r)).toMatch(/^Tpc[A-Z][A-Za-z]+$/);
      expect(r.expr.trim().length).toBeGreaterThan(0);
      if (r.for !== undefined) expect(r.for).toMatch(/^\d+[smh]$/);
      expect(['page', 'ticket']).toContain(r.labels?.severity);
      expect(r.annotations?.summary, r.alert).toBeTruthy();
      expect(r.annotations?.runbook_url, r.alert).toMatch(/^README\.md#[a-z0-9-]+$/);
    }
    expect(new Set(all.map((r) => r.alert)).size).toBe(all.length);
    // Every metric of the README's "Gauges to alert on" table is watched by a rule; /readyz by tpc_dependency_up.
    const readme = file('README.md');
    const table = readme.slice(readme.indexOf('**Gauges to alert on**'), readme.indexOf('Also exported:'));
    const alerted = [...table.matchAll(/^\| `(tpc_[a-z_]+)/gm)].map((m) => m[1]!);
    expect(alerted.length).toBeGreaterThan(5);
    const watched = new Set(all.flatMap((r) => metricNames(r.expr)));
    expect(alerted.filter((m) => !watched.has(m))).toEqual([]);
    expect(watched.has('tpc_dependency_up')).toBe(true);
  });

  it('links every runbook to a section of the README', () => {
    const anchors = new Set([...file('README.md').matchAll(/^#{2,4} (.+)$/gm)].map((m) => anchor(m[1]!)));
    for (const r of rules()) expect(anchors.has(r.annotations!.runbook_url!.split('#')[1]!), `${r.alert}: ${r.annotations!.runbook_url}`).toBe(true);
  });

  it('has a dashboard whose every panel queries the chosen Prometheus', () => {
    const graphs = panels().filter((p) => p.type !== 'row');
    expect(graphs.length).toBeGreaterThan(12);
    for (const p of graphs) {
      // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's own variable syntax, not a template literal
      expect(p.datasource?.uid, p.title).toBe('${datasource}');
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
    }
    const titles = graphs.map((p) => p.title.toLowerCase()).join('\n');
    for (const topic of ['throughput', 'latency', 'in doubt', 'heuristic', 'prepared', 'resource up', 'batch', 'job queues']) expect(titles).toContain(topic);
  });
});
