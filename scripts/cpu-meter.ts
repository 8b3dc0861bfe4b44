// The CPU a benchmark's phase used, for reading its rate against what the machine's cores allow.
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/**
 * CPU time of this process over a phase of `records` records. A benchmark on one machine runs
 * the client, the embedded S3 and the server in one process, or the server and S3 in processes of
 * their own (startBenchStackProcess: then all of them count), so its CPU is the whole system's:
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
  /** With a stack in processes of its own (startBenchStackProcess): the server's CPU, in the figures above too. */
  server_process_s?: number;
  /** And the S3 server's, when it has a process of its own. */
  s3_process_s?: number;
}

/**
 * User and system CPU of process `pid` in ms, from Linux's /proc (in clock ticks: 100 per second
 * on every Linux build this runs on). Undefined where there is no /proc.
 */
function processCpuMs(pid: number): { user: number; system: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(fields[11]) * 10, system: Number(fields[12]) * 10 };
  } catch {
    return undefined;
  }
}

/**
 * `pids`: a stack's own processes (startBenchStackProcess: the server's first, then the S3
 * server's when it has one), whose CPU the phase also counts.
 */
export function cpuMeter(pids: number[] = []): { read(wallMs: number, records: number): PhaseCpu } {
  const all = process.cpuUsage();
  const perThread = typeof process.threadCpuUsage === 'function';
  const main = perThread ? process.threadCpuUsage() : undefined;
  const start = pids.map((pid) => {
    const at = processCpuMs(pid);
    if (!at) throw new Error(`cpuMeter: cannot read the CPU of process ${pid} (no /proc)`);
    return at;
  });
  return {
    read(wallMs, records) {
      const own = process.cpuUsage(all);
      const m = main && process.threadCpuUsage(main);
      // In ms, per stack process.
      const used = pids.map((pid, i) => {
        const now = processCpuMs(pid) ?? start[i];
        return { user: now.user - start[i].user, system: now.system - start[i].system };
      });
      const a = { user: own.user, system: own.system };
      for (const u of used) {
        a.user += u.user * 1000;
        a.system += u.system * 1000;
      }
      const cpuMs = (a.user + a.system) / 1000;
      const round = (x: number, d = 2) => +x.toFixed(d);
      const seconds = (u: { user: number; system: number } | undefined) => u && round((u.user + u.system) / 1000, 1);
      return {
        ...(used[0] && { server_process_s: seconds(used[0]) }),
        ...(used[1] && { s3_process_s: seconds(used[1]) }),
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
