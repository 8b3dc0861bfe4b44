// Progress of a long training (60,000 images take minutes per epoch). At a terminal: a bar with
// the time left, on stderr, cleared before each epoch line so the lines stay readable. Elsewhere
// (SageMaker and CI logs, where a redrawn bar is noise): a plain line every `everyMs`.
import { Presets, SingleBar } from 'cli-progress';

export interface ProgressOptions {
  epochs: number;
  stepsPerEpoch: number;
  log: (line: string) => void;
  /** Draw a bar (the caller knows whether a person is watching a terminal). */
  bar?: boolean;
  /** Without a bar: the least time between two progress lines within an epoch. */
  everyMs?: number;
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

export class TrainingProgress {
  private readonly t0 = performance.now();
  private epochStart = this.t0;
  private lastLine = this.t0;
  private done = 0;
  private bar?: SingleBar;
  private readonly o: ProgressOptions;

  constructor(o: ProgressOptions) {
    this.o = o;
  }

  private get total(): number {
    return this.o.epochs * this.o.stepsPerEpoch;
  }

  /** Seconds left, extrapolated from the pace so far. */
  private left(now: number): number {
    return this.done === 0 ? NaN : (((now - this.t0) / this.done) * (this.total - this.done)) / 1000;
  }

  /** After each batch. */
  step(): void {
    this.done++;
    const now = performance.now();
    const epoch = Math.min(this.o.epochs, Math.floor((this.done - 1) / this.o.stepsPerEpoch) + 1);
    if (this.o.bar) {
      const payload = { epoch, epochs: this.o.epochs, left: formatDuration(this.left(now)) };
      if (!this.bar) {
        this.bar = new SingleBar(
          { format: 'training [{bar}] {percentage}% | epoch {epoch}/{epochs} | {left} left', stream: process.stderr, clearOnComplete: true, hideCursor: true },
          Presets.shades_classic,
        );
        this.bar.start(this.total, this.done, payload);
      } else this.bar.update(this.done, payload);
      return;
    }
    const inEpoch = this.done - (epoch - 1) * this.o.stepsPerEpoch;
    if (inEpoch < this.o.stepsPerEpoch && now - this.lastLine >= (this.o.everyMs ?? 30_000)) {
      this.lastLine = now;
      this.o.log(`epoch ${epoch}/${this.o.epochs}: ${inEpoch}/${this.o.stepsPerEpoch} batches, about ${formatDuration(this.left(now))} left`);
    }
  }

  /** At the end of epoch `epoch` (from 1): its loss, its own seconds, the seconds so far. */
  epochDone(epoch: number, loss: number): void {
    const now = performance.now();
    this.stop();
    const left = epoch < this.o.epochs ? ` (about ${formatDuration(this.left(now))} left)` : '';
    this.o.log(
      `epoch ${epoch}/${this.o.epochs} loss=${loss.toFixed(4)} epoch_seconds=${((now - this.epochStart) / 1000).toFixed(1)} total_seconds=${((now - this.t0) / 1000).toFixed(1)}${left}`,
    );
    this.epochStart = now;
    this.lastLine = now;
  }

  /** Clears the bar (also when training fails, so the terminal is left clean). */
  stop(): void {
    this.bar?.stop();
    this.bar = undefined;
  }
}
