// TEST-ONLY tasks (refused unless the pool was made with `testHooks`): drive a worker's SEAL
// into the failures the pool must heal from, now that the precheck keeps garbage away from SEAL.
//   seal-exceptions  `count` SEAL exceptions through guard() (counted, as real ones are); past
//                    ~3,770 the instance traps, and the trap is seen as a real one would be
//   break-seal       exceptions bypassing the count until even valid work traps: a corruption
//                    no counter saw, which only a failing task or the probe can find
import { isSealedError, type SealedError } from '../errors.ts';
import type { CkksSession } from '../fhe/ckks.ts';
import { guard, sealExceptionCount, sealExceptionText } from '../fhe/seal.ts';
import { plainError } from './worker-errors.ts';
import type { TestResult, TestTask } from './worker-protocol.ts';

/** `valid`: a ciphertext SEAL loads while it is healthy. */
export function runTest(task: TestTask, session: CkksSession, valid: Uint8Array): TestResult {
  const garbage = Uint8Array.from({ length: 16 }, (_, i) => (i * 37) & 0xff);
  const { seal, context } = session;
  try {
    if (task.test === 'seal-exceptions') {
      for (let i = 0; i < task.count; i++) {
        const ct = new seal.Ciphertext();
        try {
          guard('bad-query', 'test garbage', () => ct.loadFromArray(context, garbage));
        } catch (e) {
          if (!isSealedError(e) || (e as SealedError).code === 'internal') throw e;
        } finally {
          ct.delete();
        }
      }
    } else {
      // Nothing here is recorded. The first traps hit only the throw path (valid work still
      // runs, on a stack that has run into static data); go on until valid work fails too.
      const load = (bytes: Uint8Array) => {
        const ct = new seal.Ciphertext();
        try {
          ct.loadFromArray(context, bytes);
        } finally {
          ct.delete();
        }
      };
      for (let i = 0; i < 50_000; i++) {
        try {
          load(garbage);
        } catch (e) {
          if (sealExceptionText(e) !== undefined) continue;
          try {
            load(valid);
          } catch {
            break;
          }
        }
      }
    }
    return { exceptions: sealExceptionCount() };
  } catch (e) {
    return { exceptions: sealExceptionCount(), error: plainError(e) };
  }
}
