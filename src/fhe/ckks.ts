// CKKS sessions over node-seal: one per thread and parameter set, sharing SEAL's context,
// encoder and evaluator. Keys and encryption are in keys.ts, checked loading of untrusted
// objects in load.ts.
import type { SEALContext, CKKSEncoder, Evaluator } from 'node-seal/throws';
import { createContext, paramsKey, type CkksParams } from './params.ts';
import { loadSeal, release, type Seal } from './seal.ts';
import type { SealLevel, SealShape } from './seal-precheck.ts';

/**
 * SEAL's read-only objects for one parameter set. node-seal builds a context in seconds at ring
 * 16384 (params.ts), so a thread shares them between its sessions: a client opening the same
 * model twice, or a test process serving and querying it, builds them once. Instances nobody
 * uses are kept, the IDLE_KEPT most recently released, then freed.
 */
interface SealInstance {
  key: string;
  context: SEALContext;
  encoder: CKKSEncoder;
  evaluator: Evaluator;
  shape: SealShape;
  users: number;
}

const IDLE_KEPT = 2;
const instances = new Map<string, SealInstance>();
/** Instances with no users, least recently released first. */
const idle: SealInstance[] = [];

function acquire(seal: Seal, params: CkksParams, chain: boolean): SealInstance {
  const key = `${paramsKey(params)}${chain ? '' : '-top'}`;
  let inst = instances.get(key);
  if (!inst) {
    const context = createContext(seal, params, chain);
    inst = {
      key,
      context,
      encoder: new seal.CKKSEncoder(context),
      evaluator: new seal.Evaluator(context),
      shape: readShape(context, params.polyModulusDegree),
      users: 0,
    };
    instances.set(key, inst);
  }
  if (inst.users++ === 0) {
    const at = idle.indexOf(inst);
    if (at >= 0) idle.splice(at, 1);
  }
  return inst;
}

function unuse(inst: SealInstance): void {
  if (--inst.users > 0) return;
  idle.push(inst);
  while (idle.length > IDLE_KEPT) {
    const old = idle.shift()!;
    instances.delete(old.key);
    release(old.encoder, old.evaluator, old.context);
  }
}

export class CkksSession {
  readonly seal: Seal;
  readonly params: CkksParams;
  readonly context: SEALContext;
  readonly encoder: CKKSEncoder;
  readonly evaluator: Evaluator;
  /** The chain's parms_ids and primes, against which untrusted objects are checked before loading. */
  readonly shape: SealShape;
  private instance: SealInstance | undefined;

  private constructor(seal: Seal, params: CkksParams, chain: boolean) {
    this.seal = seal;
    this.params = params;
    this.instance = acquire(seal, params, chain);
    ({ context: this.context, encoder: this.encoder, evaluator: this.evaluator, shape: this.shape } = this.instance);
  }

  /**
   * `topLevelOnly`: for circuits that never leave the top level (batch mode, tree ensembles):
   * the context is built without the levels below it, which takes half the time or less.
   */
  static async open(params: CkksParams, o: { topLevelOnly?: boolean } = {}): Promise<CkksSession> {
    return new CkksSession(await loadSeal(), params, !o.topLevelOnly);
  }

  get slots(): number {
    return this.encoder.slotCount();
  }

  /** Number of data primes (levels + 1) at the top of the chain. */
  get dataPrimes(): number {
    return this.params.coeffModulusBits.length - 1;
  }

  /** Ends this session; SEAL's objects stay for the thread's next session of the same parameters. */
  close(): void {
    if (this.instance) unuse(this.instance);
    this.instance = undefined;
  }
}

/** Every level of the context's chain, key level first, as SEAL names it (parms_id) and its primes. */
function readShape(context: SEALContext, degree: number): SealShape {
  const levels: SealLevel[] = [];
  let data = context.keyContextData();
  for (;;) {
    const pid = data.parmsId();
    const words = pid.values() as ArrayLike<bigint>;
    const parmsId = new Uint8Array(32);
    const view = new DataView(parmsId.buffer);
    for (let i = 0; i < 4; i++) view.setBigUint64(8 * i, BigInt(words[i]), true);
    const parms = data.parms();
    const mods = parms.coeffModulus();
    const primes: bigint[] = [];
    for (let i = 0; i < mods.size(); i++) primes.push(mods.get(i)!.value());
    levels.push({ parmsId, primes });
    // The chain ends at index 0; the next "context data" past it is an empty handle, not null.
    const last = data.chainIndex() === 0;
    const next = last ? undefined : data.nextContextData();
    release(mods, parms, pid, data);
    if (!next) break;
    data = next;
  }
  return { degree, key: levels[0], data: levels.slice(1) };
}
