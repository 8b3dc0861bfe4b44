// Polling a SageMaker resource until it settles, with doubling pauses and a deadline.
import { SealedError } from '../errors.ts';

export interface Waiting {
  sleep?: (ms: number) => Promise<void>;
  /** First and largest pause between Describe calls. */
  pollMs?: { first: number; max: number };
  timeoutMs?: number;
  onStatus?: (status: string) => void;
}
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `describe` with doubling pauses until `done` says it is finished (or throws). */
export async function poll<T>(
  describe: () => Promise<T>,
  state: (d: T) => string,
  done: (d: T) => boolean,
  w: Waiting,
  what: string,
  hint: string,
): Promise<T> {
  const { first, max } = w.pollMs ?? { first: 5_000, max: 60_000 };
  const deadline = Date.now() + (w.timeoutMs ?? 3 * 3600_000);
  let last = '';
  for (let wait = first; ; wait = Math.min(wait * 2, max)) {
    const d = await describe();
    const s = state(d);
    if (s !== last) w.onStatus?.(s);
    last = s;
    if (done(d)) return d;
    if (Date.now() + wait > deadline) throw new SealedError('deadline', `${what} is still ${s} after ${Math.round((w.timeoutMs ?? 0) / 1000)} s`, hint);
    await (w.sleep ?? sleep)(wait);
  }
}
