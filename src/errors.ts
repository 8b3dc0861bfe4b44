// Errors that reach users. Every error says what is wrong and what to do next, and never
// carries ciphertext, key or plaintext bytes: callers pass descriptions, not data.

export type ErrorCode =
  | 'bad-request'
  | 'bad-uri'
  | 'not-found'
  | 'bad-query'
  | 'bad-keys'
  | 'wrong-model'
  | 'insecure-parameters'
  | 'bad-bundle'
  | 'bad-data'
  | 'storage'
  | 'overloaded'
  | 'forbidden'
  | 'deadline'
  | 'internal';

const STATUS: Record<ErrorCode, number> = {
  'bad-request': 400,
  'bad-uri': 400,
  'not-found': 404,
  'bad-query': 422,
  'bad-keys': 422,
  'wrong-model': 409,
  'insecure-parameters': 400,
  'bad-bundle': 500,
  'bad-data': 400,
  storage: 502,
  overloaded: 503,
  forbidden: 403,
  deadline: 504,
  internal: 500,
};

export class SealedError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  constructor(code: ErrorCode, message: string, hint?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SealedError';
    this.code = code;
    this.hint = hint;
  }
  get status(): number {
    return STATUS[this.code];
  }
  toJSON(): { error: ErrorCode; message: string; hint?: string } {
    return this.hint ? { error: this.code, message: this.message, hint: this.hint } : { error: this.code, message: this.message };
  }
}

// Characters a caller's string keeps when repeated in a message: enough to recognise an S3
// location or an identifier, nothing that can break a log line or a terminal (newlines, control
// and bidirectional characters) or pass for markup.
const SAFE_CHAR = /^[0-9A-Za-z_.\-/:=+@~]$/;

/**
 * What a caller sent, made safe to repeat in a message: at most `max` characters (code points),
 * each outside [0-9A-Za-z_.-/:=+@~] shown as '?', and '...' after a cut. Callers' strings can be
 * long, hold newlines or control characters, or be crafted to read as a message of their own.
 */
export function safeText(v: unknown, max = 64): string {
  let s: string;
  try {
    s = String(v);
  } catch {
    return '?';
  }
  let out = '';
  let n = 0;
  // for..of walks code points lazily: a huge string costs only the `max` characters shown.
  for (const ch of s) {
    if (n === max) return `${out}...`;
    out += SAFE_CHAR.test(ch) ? ch : '?';
    n++;
  }
  return out;
}

/**
 * A sealed server's JSON error body ({error or code, message, hint}) as the SealedError it
 * stands for, whichever way it came back (direct HTTP, SageMaker's ModelError, an async failure
 * object), so a caller sees one error for one refusal. Text that is not that JSON is shown only
 * through safeText: it is whatever a proxy or container said.
 */
export function serverError(status: number | string, text: string): SealedError {
  let j: { error?: unknown; code?: unknown; message?: unknown; hint?: unknown } = {};
  try {
    j = JSON.parse(text) as typeof j;
  } catch {
    // not the server's JSON (e.g. a proxy's page): the status says enough
  }
  const named = typeof j.error === 'string' ? j.error : typeof j.code === 'string' ? j.code : undefined;
  const code = (named ?? (status === 404 ? 'not-found' : 'internal')) as ErrorCode;
  const message = typeof j.message === 'string' ? j.message : safeText(text, 120);
  return new SealedError(code, `the server refused the request (${status}): ${message}`, typeof j.hint === 'string' ? j.hint : undefined);
}

export function isSealedError(e: unknown): e is SealedError {
  return e instanceof SealedError || (typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'SealedError');
}

/**
 * A SealedError as a worker thread sends it back: structured cloning keeps an object's own
 * fields but not its class, so workers send these fields and the main thread revives them.
 */
export interface PlainError {
  code: ErrorCode;
  message: string;
  hint?: string;
}

/** Rebuilds the SealedError a worker thread sent back as a PlainError. */
export function reviveError(e: PlainError): SealedError {
  return new SealedError(e.code, e.message, e.hint);
}
