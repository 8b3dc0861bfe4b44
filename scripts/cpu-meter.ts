// The CPU a benchmark's phase used, for reading its rate against what the machine's cores allow.
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/**
 * CPU time of this process over a phase of `records` records. A benchmark on one machine runs
 * the client, the embedded S3 and the server in one process, or the last two in a process of
 * their own (startBenchStackProcess: then both processes count), so its CPU is the whole system's:
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
  /** With a stack in its own process (startBenchStackProcess): that process's CPU, in the figures above too. */
  server_process_s?: number;
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

/** `serverPid`: a stack's own process (startBenchStackProcess), whose CPU the phase also counts. */
export function cpuMeter(serverPid?: number): { read(wallMs: number, records: number): PhaseCpu } {
  const all = process.cpuUsage();
  const perThread = typeof process.threadCpuUsage === 'function';
  const main = perThread ? process.threadCpuUsage() : undefined;
  const server0 = serverPid === undefined ? undefined : processCpuMs(serverPid);
  if (serverPid !== undefined && !server0) throw new Error(`cpuMeter: cannot read the CPU of process ${serverPid} (no /proc)`);
  return {
    read(wallMs, records) {
      const own = process.cpuUsage(all);
      const m = main && process.threadCpuUsage(main);
      const s1 = serverPid === undefined ? undefined : processCpuMs(serverPid);
      const server = server0 && s1 ? { user: s1.user - server0.user, system: s1.system - server0.system } : { user: 0, system: 0 };
      const a = { user: own.user + server.user * 1000, system: own.system + server.system * 1000 };
      const cpuMs = (a.user + a.system) / 1000;
      const round = (x: number, d = 2) => +x.toFixed(d);
      return {
        ...(server0 && { server_process_s: round((server.user + server.system) / 1000, 1) }),
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
