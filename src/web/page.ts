// What the web demo's two pages share: DOM helpers, formatting, the status line and the table
// of stages with their times and sizes.

export interface Stage<Id extends string> {
  id: Id;
  name: string;
  where: string;
}

export const $ = <T extends HTMLElement>(sel: string) => document.querySelector<T>(sel)!;
export const fmtBytes = (n: number) => `${n.toLocaleString('en-US')} B`;
export const fmtMs = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`);
export const base = new URL('.', location.href);

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<HTMLElementTagNameMap[K]> & { dataset?: Record<string, string> } = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  const { dataset, ...rest } = props;
  Object.assign(e, rest);
  if (dataset) Object.assign(e.dataset, dataset);
  e.append(...children);
  return e;
}

export function status(text: string, error = false): void {
  const s = $('#status');
  s.textContent = text;
  s.classList.toggle('error', error);
}

/** Sets a stage's time and size; `note` is a second, smaller line under the size. */
export function setStage(id: string, ms: number | undefined, size = '', note = ''): void {
  const row = $(`#stages tr[data-stage="${id}"]`);
  const [, , time, sz] = row.children as unknown as HTMLElement[];
  time.textContent = ms === undefined ? '–' : fmtMs(ms);
  if (ms !== undefined) time.dataset.ms = String(ms);
  else delete time.dataset.ms;
  sz.replaceChildren(size, ...(note ? [el('small', {}, note)] : []));
}

export function buildStages(stages: readonly Stage<string>[]): void {
  const body = $('#stages tbody');
  for (const s of stages) {
    body.append(
      el(
        'tr',
        { className: s.id === 'total' ? 'total' : '', dataset: { stage: s.id } },
        el('td', {}, s.name),
        el('td', { className: 'where' }, s.where),
        el('td', { className: 'num' }, '–'),
        el('td', { className: 'size' }, ''),
      ),
    );
  }
}
