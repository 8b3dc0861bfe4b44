// Imported first by the test files that measure their own process's RSS. Test processes run with
// V8's --external-memory-accounted-in-global-limit (package.json, tap's node-arg: it spares the
// fuzz suites a full mark-compact each time buffer memory grows by V8's fixed step). Under it,
// freed ArrayBuffers are reclaimed only as the heap nears its global limit, so RSS counts
// garbage: the 300 MB transfer of local-s3.test grew RSS by 111-204 MiB with the flag and 18-47
// MiB without (5 runs each, 2026-12-04, 2-core AMD EPYC VM), and a CI run failed its 150 MiB
// bound. The servers and clients we ship run with V8's default, so a memory bound is measured
// under it. V8 reads this flag at each allocation-limit check, so turning it off here, before any
// buffer is made, takes effect.
import { setFlagsFromString } from 'node:v8';

setFlagsFromString('--no-external-memory-accounted-in-global-limit');
