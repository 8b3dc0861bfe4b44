// Loaded by every test process (package.json, tap's node-arg), before any test code. The suites
// write their embedded S3 objects, bundles and keys under os.tmpdir(): the fuzz suite alone ~2 GB
// of mutated keys and queries. On this project's CI VMs /tmp is ext4 on a virtual disk, where a
// buffered write costs ~14x the CPU of a write to tmpfs (`dd` of 1 GiB, 2026-12-03, 2-core AMD
// EPYC VM: 4.49 s of system time on /tmp, 0.39 s on /dev/shm); perf showed fuzz.test spending 11%
// of the machine in ext4's write path (libuv threads writing s3rver's files). So when TMPDIR is
// unset and /dev/shm is a tmpfs with room to spare, tests keep their files there. Child processes
// and worker threads inherit the variable; nothing the tests check depends on the file system.
import { mkdirSync, statfsSync } from 'node:fs';

const TMPFS_MAGIC = 0x01021994;
/** Two suites run at once (tap's jobs); the largest holds ~2 GB at its peak. */
const MIN_FREE_BYTES = 8 * 2 ** 30;

function memoryTmpdir(): string | undefined {
  try {
    const fs = statfsSync('/dev/shm');
    if (fs.type !== TMPFS_MAGIC || fs.bavail * fs.bsize < MIN_FREE_BYTES) return undefined;
    const dir = `/dev/shm/sealed-tests-${process.getuid?.() ?? 'user'}`;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return dir;
  } catch {
    return undefined; // no /dev/shm (macOS, some containers): the system's temporary directory
  }
}

if (!process.env.TMPDIR) {
  const dir = memoryTmpdir();
  if (dir) process.env.TMPDIR = dir;
}
