// The CPU a benchmark's phase used, for reading its rate against what the machine's cores allow.
import { availableParallelism } from 'node:os';

/**
 * CPU time of this process over a phase of `records` records. A benchmark on one machine runs
 * the client, the embedded S3 and the server in one process, so its CPU is the whole system's:
 * `cpu_bound_records_per_s` is what the machine's cores would give at that CPU per record if
 * every core were busy throughout, the ceiling a faster pipeline could reach without less work;
 * `main_thread_s` is the share of the one thread the client's upload, S3 and the server's
 * request handling take turns on (null on Node < 22.15, which cannot tell one thread's CPU).
 */
export interface PhaseCpu {
  user_s: number;
  system_s: number;
  main_thread_s: number | null;
  /** Average cores busy over the phase's wall time. */
  cores_busy: number;
  cpu_ms_per_record: number;
  cpu_bound_records_per_s: number;
}

export function cpuMeter(): { read(wallMs: number, records: number): PhaseCpu } {
  const all = process.cpuUsage();
  const perThread = typeof process.threadCpuUsage === 'function';
  const main = perThread ? process.threadCpuUsage() : undefined;
  return {
    read(wallMs, records) {
      const a = process.cpuUsage(all);
      const m = main && process.threadCpuUsage(main);
      const cpuMs = (a.user + a.system) / 1000;
      const round = (x: number, d = 2) => +x.toFixed(d);
      return {
        user_s: round(a.user / 1e6, 1),
        system_s: round(a.system / 1e6, 1),
        main_thread_s: m ? round((m.user + m.system) / 1e6, 1) : null,
        cores_busy: round(cpuMs / wallMs),
        cpu_ms_per_record: round(cpuMs / records, 3),
        cpu_bound_records_per_s: round((availableParallelism() * 1000 * records) / cpuMs, 1),
      };
    },
  };
}
