import { api } from './api.js';
import { el, short } from './dom.js';

/**
 * A modal that asks for a reason (every operator action is audited with one), runs `act` with it
 * and hands its outcome, or the refusal, to `onDone`. While it is open the live refresh pauses
 * (console.js), so nothing moves under the operator's eyes.
 */
export function reasonDialog({ id, reasonId, title, intro = [], extra = [], submit, act, onDone }) {
  const reason = el('textarea', { id: reasonId, name: 'reason', required: true, rows: 3 });
  const dialog = el('dialog', { 'aria-labelledby': `${id}-title` });
  const close = () => {
    dialog.close();
    dialog.remove();
  };
  const form = el(
    'form',
    {
      method: 'dialog',
      onsubmit: async (e) => {
        e.preventDefault();
        close();
        try {
          onDone(el('div', { class: 'ok', role: 'alert' }, await act(reason.value)));
        } catch (err) {
          onDone(el('div', { class: 'refusal', role: 'alert' }, el('strong', {}, `Refused (${err.status}): `), err.message));
        }
      },
    },
    el('h3', { id: `${id}-title` }, title),
    ...intro,
    el('label', { for: reasonId }, 'Reason (recorded in the audit trail)'),
    reason,
    ...extra,
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, submit), el('button', { type: 'button', onclick: close }, 'Cancel')),
  );
  dialog.append(form);
  dialog.addEventListener('cancel', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  reason.focus();
}

export function resolveDialog(id, outcome, onDone) {
  const force = el('input', { id: 'force', type: 'checkbox', name: 'force' });
  reasonDialog({
    id: 'resolve',
    reasonId: 'reason',
    title: `${outcome === 'commit' ? 'Commit' : 'Abort'} transaction ${short(id)}`,
    extra: [el('label', {}, force, ' Force against a written decision (records a heuristic outcome)')],
    submit: 'Resolve',
    onDone,
    act: async (reason) => {
      const r = await api(`/v1/transactions/${id}/resolve`, { method: 'POST', body: JSON.stringify({ outcome, reason, force: force.checked }) });
      return `Resolved (${r.action}): ${r.result}; the transaction is now ${r.transaction.status}.`;
    },
  });
}

export function orphanDialog(o, onDone) {
  reasonDialog({
    id: 'orphan',
    reasonId: 'orphan-reason',
    title: `Roll back ${o.gid}`,
    intro: [
      el(
        'p',
        {},
        `A branch prepared on ${o.resource} that the log does not know. Reconciliation rolls it back once it is older than the longest deadline; this does it now.`,
      ),
    ],
    submit: 'Roll back',
    onDone,
    act: async (reason) => {
      const r = await api('/v1/orphans/resolve', { method: 'POST', body: JSON.stringify({ resource: o.resource, gid: o.gid, outcome: 'abort', reason }) });
      return `Rolled back ${o.gid} on ${o.resource}: ${r.result}.`;
    },
  });
}
