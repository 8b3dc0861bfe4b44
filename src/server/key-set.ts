// An evaluation-keys object (wire kind 2) checked against the model it is for: parameters,
// every rotation the program needs, relinearization and the public key circuit privacy uses.
// Pure: the KeyStore (S3, on the main thread) and ModelServer (in process) both call it, so a
// bad key set gets the same code and message on every path.
import { safeText, SealedError } from '../errors.ts';
import { paramsKey } from '../fhe/params.ts';
import type { Program } from '../fhe/program.ts';
import { decodeWire, type KeysHeader } from '../wire/format.ts';

/** A key set's sections, held in SharedArrayBuffers so every worker reads them without a copy. */
export interface KeySet {
  /** SHA-256 (hex) of the object's bytes. */
  id: string;
  galois: Uint8Array;
  relin?: Uint8Array;
  /** The client's public key (circuit privacy: the result is re-randomized with it). */
  publicKey?: Uint8Array;
  /** Serialized size of the object. */
  bytes: number;
  /** The parameters they were made for (paramsKey): a tree model's batch or single-record form. */
  params: string;
}

/** The keys a model takes: its program's, and a tree model's single-record form's (other parameters, with rotations). */
export interface KeyKinds {
  program: Program;
  /** false: the program rotates nothing and its keys carry no Galois section (a tree model's batch form). */
  galoisSection: boolean;
  /** A tree model's single-record form: its keys are told apart by their parameters. */
  single?: Program;
}

/** `b` in shared memory (the workers read it in place): itself when it is there already (key-store.ts downloads it there). */
function shared(b: Uint8Array): Uint8Array {
  if (b.buffer instanceof SharedArrayBuffer) return b;
  const s = new Uint8Array(new SharedArrayBuffer(b.length));
  s.set(b);
  return s;
}

/**
 * `bytes` (whose SHA-256 is `id`) as the key set `program` needs, or a 422 'bad-keys' saying what
 * is missing. `galoisSection: false` (tree ensembles, which rotate nothing): the object holds no
 * Galois section, and `galois` is empty.
 */
export function parseKeySet(bytes: Uint8Array, id: string, kinds: KeyKinds | Program): KeySet {
  const k: KeyKinds = 'program' in kinds ? kinds : { program: kinds, galoisSection: true };
  const msg = decodeWire<KeysHeader>('keys', bytes, 'the evaluation-keys object');
  const h = msg.header;
  const single = k.single && h.params === paramsKey(k.single.params);
  const program = single ? k.single! : k.program;
  const galoisSection = single || k.galoisSection;
  const want = paramsKey(program.params);
  if (h.params !== want) {
    throw new SealedError(
      'bad-keys',
      `the evaluation keys were made for parameters ${safeText(h.params)}, this model uses ${want}${k.single ? ` (or ${paramsKey(k.single.params)} for single records)` : ''}`,
      'make keys for this model with `sealed keygen`',
    );
  }
  const missing = program.galoisSteps.filter((s) => !(Array.isArray(h.galois_steps) && h.galois_steps.includes(s)));
  if (missing.length)
    throw new SealedError(
      'bad-keys',
      `the evaluation keys lack rotations ${missing.join(', ')} this model needs`,
      'make keys for this model with `sealed keygen`',
    );
  if (!galoisSection && !(Array.isArray(h.galois_steps) && h.galois_steps.length === 0))
    throw new SealedError(
      'bad-keys',
      'the evaluation keys hold rotations; this model (a tree ensemble) takes keys without them',
      "make keys with this model's client part (`sealed predict` does)",
    );
  const g = galoisSection ? 1 : 0;
  const expected = g + (h.relin ? 1 : 0) + (h.public_key ? 1 : 0);
  if (msg.sections.length !== expected) throw new SealedError('bad-keys', `the evaluation keys hold ${msg.sections.length} sections, expected ${expected}`);
  if (program.relin && !h.relin)
    throw new SealedError('bad-keys', 'the evaluation keys lack relinearization keys, which this model needs', 'make keys for this model with `sealed keygen`');
  if (program.privacy === 'flood' && !h.public_key) {
    throw new SealedError(
      'bad-keys',
      "the evaluation keys lack a public key: this model re-randomizes its results (circuit privacy) with the client's public key",
      'make keys with a current `sealed keygen` (or SDK), which includes it',
    );
  }
  return {
    id,
    galois: g ? shared(msg.sections[0]) : new Uint8Array(0),
    relin: h.relin ? shared(msg.sections[g]) : undefined,
    publicKey: h.public_key ? shared(msg.sections[expected - 1]) : undefined,
    bytes: bytes.length,
    params: want,
  };
}
