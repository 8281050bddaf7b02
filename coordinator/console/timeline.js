import { detailBlock, duration, el, lastErrorInWords, reasonInWords, when } from './dom.js';

/*
 * A transaction's life as a person follows it: begin, each branch's work and prepare, the decision,
 * each branch's completion, retries and operator actions. Built from GET /v1/transactions/:id: its
 * events (written ones, and the happy path's derived from the row's timestamps: see
 * coordinator/log/happy-path-events.ts) and its timestamps. The log keeps no time per branch: the
 * branches run in parallel between the begin and the decision, and complete between the decision
 * and the completion, so that is what each branch's entry says.
 */

const ms = (iso) => (iso ? new Date(iso).getTime() : null);

function liveInWords(d) {
  if (!d?.live) return '';
  if (!d.live.reachable) return `its database is unreachable: ${d.live.error}`;
  return d.live.prepared
    ? `prepared on its database since ${when(d.live.preparedAt)}, holding ${d.live.locks ?? '?'} lock(s)`
    : 'nothing prepared on its database';
}

/** Entries in the order they happened: { at (ms), label, words, took, kind, detail }. */
export function timelineEntries(t, now = Date.now()) {
  const begin = ms(t.createdAt);
  const decided = ms(t.decidedAt);
  const completed = ms(t.completedAt);
  const details = t.branchDetails ?? [];
  const interactive = t.events.some((e) => e.kind === 'begun' && e.detail?.interactive);
  const joined = new Set(t.events.filter((e) => e.kind === 'branch_joined').map((e) => e.detail?.resource));
  const out = [];

  const work = (b, start) => {
    const end = decided ?? completed ?? now;
    const what = b.readOnly
      ? 'work (read-only: nothing to prepare)'
      : t.onePhase
        ? 'work and one-phase commit'
        : interactive
          ? 'work and prepare, by the calling service'
          : 'work and prepare';
    out.push({
      at: start,
      kind: 'branch-work',
      label: `${b.resource}: ${what}`,
      took: decided || completed ? duration(end - start) : `${duration(end - start)} so far`,
      words: decided || completed ? '' : `Still ${t.status}; the branch is ${b.status} in the log.`,
    });
  };
  const completions = (at) =>
    t.branches.forEach((b, i) => {
      const verb =
        {
          committed: b.readOnly ? 'done (read-only)' : t.onePhase ? 'committed (one phase)' : 'committed (COMMIT PREPARED)',
          aborted: 'rolled back',
          prepared: 'still prepared',
          active: 'never prepared',
        }[b.status] ?? b.status;
      const heuristic = details[i]?.heuristic ? ` Heuristic: ended ${details[i].heuristic} against the decision.` : '';
      out.push({
        at,
        kind: 'branch-done',
        label: `${b.resource}: ${verb}`,
        took: decided && completed ? `phase 2: ${duration(completed - decided)}` : '',
        words: heuristic.trim(),
      });
    });

  let finished = false;
  for (const e of t.events) {
    const at = ms(e.at);
    const by = e.actor ? ` by ${e.actor}` : '';
    const d = e.detail ?? {};
    switch (e.kind) {
      case 'begun':
        out.push({
          at,
          kind: 'begun',
          label: `Begun${by}`,
          detail: d,
          words: `${t.branches.length} branch(es): ${t.branches.map((b) => b.resource).join(', ')}${d.timeoutMs ? `; deadline in ${duration(d.timeoutMs)}` : ''}${d.interactive ? '; interactive' : ''}.`,
        });
        for (const b of t.branches.filter((b) => !joined.has(b.resource))) work(b, at);
        break;
      case 'branch_joined':
        out.push({ at, kind: 'joined', label: `${d.resource} joined${by}`, detail: d, took: `+${duration(at - begin)} after begin` });
        for (const b of t.branches.filter((b) => b.resource === d.resource)) work(b, at);
        break;
      case 'decided': {
        const abort = d.outcome === 'abort';
        out.push({
          at,
          kind: abort ? 'decided-abort' : 'decided',
          label: `Decided: ${d.outcome}${by}${d.by === 'recovery' ? ' (recovery)' : ''}`,
          detail: d,
          took: `${duration(at - begin)} after begin`,
          words: abort ? reasonInWords(d.reason) : d.by === 'operator' ? `Operator's reason: ${d.reason}` : '',
        });
        break;
      }
      case 'in_doubt':
        out.push({
          at,
          kind: 'in-doubt',
          label: 'Flagged in doubt',
          detail: d,
          words: `After ${d.attempts ?? '?'} failed phase-2 attempt(s)${d.error ? `: ${lastErrorInWords(d.error)}` : ''}. Retries go on.`,
        });
        break;
      case 'operator_resolve':
        out.push({
          at,
          kind: d.action === 'refused' ? 'operator-refused' : 'operator',
          label: `Operator ${e.actor ?? ''}: ${d.outcome}${d.force ? ' (forced)' : ''} — ${d.action}`,
          detail: d,
          words: `Reason: “${d.reason ?? ''}”${d.result ? `. Result: ${d.result}` : ''}${d.note ? `. ${d.note}` : ''}.`,
        });
        break;
      case 'completed':
      case 'aborted':
        completions(at);
        finished = true;
        out.push({
          at,
          kind: e.kind === 'aborted' || d.outcome === 'aborted' ? 'done-abort' : 'done',
          label: `Finished: ${d.outcome ?? e.kind}`,
          detail: d,
          took: `total ${duration(at - begin)}`,
          words: d.reason ? reasonInWords(d.reason) : '',
        });
        break;
      default:
        out.push({ at, kind: 'other', label: `${e.kind}${by}`, detail: d });
    }
  }
  if (!finished && decided) {
    // Phase 2 still running: each branch as it stands, with what its database says now.
    t.branches.forEach((b, i) => {
      out.push({
        at: now,
        kind: 'branch-pending',
        label: `${b.resource}: ${b.status} in the log`,
        took: `${duration(now - decided)} since the decision`,
        words: [liveInWords(details[i]), details[i]?.lastError ? `Last error: ${lastErrorInWords(details[i].lastError)}` : ''].filter(Boolean).join('. '),
      });
    });
    if (t.attempts)
      out.push({ at: now, kind: 'retries', label: `Phase 2: ${t.attempts} failed attempt(s) so far`, words: t.lastError ? lastErrorInWords(t.lastError) : '' });
  }
  return out;
}

/** The timeline as an ordered list; `open` names the detail blocks to keep open across a refresh. */
export function timeline(t, open = new Set(), now = Date.now()) {
  const begin = ms(t.createdAt);
  const entries = timelineEntries(t, now);
  return el(
    'ol',
    { class: 'timeline', id: 'timeline' },
    ...entries.map((x, i) => {
      const key = `${i}:${x.kind}`;
      const block = x.detail && Object.keys(x.detail).length ? detailBlock('detail', x.detail, key) : '';
      if (block && open.has(key)) block.open = true;
      return el(
        'li',
        { class: `tl tl-${x.kind}` },
        el(
          'div',
          { class: 'tl-head' },
          el(
            'time',
            { datetime: new Date(x.at).toISOString(), title: when(new Date(x.at).toISOString()) },
            x.at === begin ? '0 ms' : `+${duration(x.at - begin)}`,
          ),
          el('strong', {}, x.label),
          x.took ? el('span', { class: 'tl-took' }, x.took) : '',
        ),
        x.words ? el('p', { class: 'tl-words' }, x.words) : '',
        block,
      );
    }),
  );
}

/** Where the time went: work and prepare, then phase 2, then the total. */
export function phases(t, now = Date.now()) {
  const begin = ms(t.createdAt);
  const decided = ms(t.decidedAt);
  const completed = ms(t.completedAt);
  const part = (label, from, to, running) =>
    el(
      'li',
      {},
      el('span', {}, label),
      ' ',
      el('strong', {}, from === null ? '—' : `${duration((to ?? now) - from)}${to === null && running ? ' so far' : ''}`),
    );
  return el(
    'ul',
    { class: 'phases', id: 'phases' },
    part('until the decision', begin, decided ?? completed, !completed),
    part('phase 2', decided, decided === null ? null : completed, true),
    part('total', begin, completed, true),
  );
}
