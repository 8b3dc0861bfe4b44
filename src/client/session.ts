// The client's cryptography for one model: key generation, encryption of records into a query,
// decryption of a result into predictions. No I/O here, so it runs in browsers too.
import { SealedError } from '../errors.ts';
import { CkksSession, SecretKeyHolder, generateKeys } from '../fhe/ckks.ts';
import { paramsKey } from '../fhe/params.ts';
import type { ClientPart } from '../model/client-part.ts';
import { packRecords, unpackOutputs } from '../model/layout.ts';
import { postprocess, preprocessRecord, type Prediction } from '../model/postprocess.ts';
import { decodeWire, encodeWire, type KeysHeader, type QueryHeader, type ResultHeader } from '../wire/format.ts';
import { sha256Hex } from './sha256.ts';

export interface Keys {
  /** Never leaves the client. */
  secretKey: Uint8Array;
  /** The evaluation keys in wire format: uploaded, shared with the server. */
  evaluationKeys: Uint8Array;
  /** SHA-256 of evaluationKeys: names the uploaded object, so it is uploaded once. */
  evaluationKeysId: string;
}

export function keysId(evaluationKeys: Uint8Array): string {
  return sha256Hex(evaluationKeys);
}

export class ClientSession {
  readonly modelId: string;
  readonly part: ClientPart;
  private readonly s: CkksSession;
  private holder: SecretKeyHolder | undefined;

  private constructor(modelId: string, part: ClientPart, s: CkksSession) {
    this.modelId = modelId;
    this.part = part;
    this.s = s;
  }

  static async open(modelId: string, part: ClientPart): Promise<ClientSession> {
    return new ClientSession(modelId, part, await CkksSession.open(part.params));
  }

  generateKeys(): Keys {
    const k = generateKeys(this.s, this.part.galois_steps, this.part.relin);
    const header: KeysHeader = { params: paramsKey(this.part.params), galois_steps: this.part.galois_steps, relin: this.part.relin };
    const evaluationKeys = encodeWire('keys', header, k.relinKeys ? [k.galoisKeys, k.relinKeys] : [k.galoisKeys]);
    this.useSecretKey(k.secretKey);
    return { secretKey: k.secretKey, evaluationKeys, evaluationKeysId: keysId(evaluationKeys) };
  }

  useSecretKey(secretKey: Uint8Array): void {
    this.holder?.close();
    this.holder = new SecretKeyHolder(this.s, secretKey);
  }

  private get key(): SecretKeyHolder {
    if (!this.holder) throw new SealedError('bad-keys', 'no secret key loaded', 'generate keys first (`sealed keygen`) or load them');
    return this.holder;
  }

  /** Raw feature rows (as in the training CSV, without the target) -> encrypted query. */
  encrypt(rows: ArrayLike<number>[]): Uint8Array {
    const p = this.part;
    if (rows.length === 0) throw new SealedError('bad-data', 'no records to encrypt');
    rows.forEach((r, i) => {
      if (r.length !== p.features.length) throw new SealedError('bad-data', `record ${i + 1} has ${r.length} values, the model takes ${p.features.length} (${p.features.slice(0, 5).join(', ')}…)`);
      for (let j = 0; j < r.length; j++) if (!Number.isFinite(r[j])) throw new SealedError('bad-data', `record ${i + 1}, feature "${p.features[j]}" is not a finite number`);
    });
    const vectors = packRecords(p.input, rows.map((r) => preprocessRecord(r, p)));
    const sections = vectors.map((v) => this.key.encrypt(v, p.input_scale_bits));
    return encodeWire<QueryHeader>('query', { model_id: this.modelId, params: paramsKey(p.params), records: rows.length }, sections);
  }

  /** Encrypted result -> raw scores per record (before post-processing). */
  decryptScores(result: Uint8Array): number[][] {
    const msg = decodeWire<ResultHeader>('result', result, 'the encrypted result');
    if (msg.header.model_id !== this.modelId) throw new SealedError('wrong-model', `the result is for model ${String(msg.header.model_id)}, not ${this.modelId}`);
    const decoded = msg.sections.map((b) => this.key.decrypt(b));
    return unpackOutputs(this.part.output, this.part.input.recordsPerCiphertext, decoded, msg.header.records);
  }

  decrypt(result: Uint8Array): Prediction[] {
    return this.decryptScores(result).map((s) => postprocess(this.part, s));
  }

  close(): void {
    this.holder?.close();
    this.s.close();
  }
}
