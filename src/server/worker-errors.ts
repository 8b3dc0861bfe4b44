// How a worker's failure crosses the thread boundary: as plain fields (structured cloning keeps
// no class), which the main thread turns back into a SealedError with reviveError. SEAL's own
// failures are counted here too: they decide when the worker must be replaced.
import { isSealedError, type SealedError } from '../errors.ts';
import { noteSealError, sealExceptionText } from '../fhe/seal.ts';
import type { TaskError } from './worker-protocol.ts';

export const RETRY = 'retry the request: the worker thread that failed is replaced by a fresh one';

export function plainError(e: unknown): TaskError {
  if (isSealedError(e)) {
    const se = e as SealedError;
    return { code: se.code, message: se.message, hint: se.hint };
  }
  // Errors that did not pass through guard() are recorded here (SealedErrors were, in translate).
  if (noteSealError(e) === 'fault') {
    return {
      code: 'internal',
      message: 'the evaluation failed: the SEAL runtime of its worker thread trapped (WebAssembly runtime error); nothing was computed',
      hint: RETRY,
    };
  }
  const text = sealExceptionText(e);
  const what = text ?? (e instanceof Error ? `${e.name}: ${e.message}` : 'unknown error');
  return {
    code: 'internal',
    message: `evaluation failed inside the worker (${what.slice(0, 200)})`,
    hint: 'retry; if it persists, report it with the request id',
  };
}
