// The sealed SDK: encrypted predictions from a program, in Node or in a browser page.
//
//   const client = await createClient({ model: 'out/model', endpoint: 'http://127.0.0.1:8080' });
//   const [p] = await client.predict([record]); // record: the model's feature values
//   console.log(p.label, p.probabilities);
//   await client.close();
//
// The secret key is made and kept inside the client (this process or this page); transports
// receive only wire-format objects (docs/wire-format.md): the encrypted query and the evaluation
// keys. This module and what it imports statically are free of Node-only modules, so a bundler
// can put it in a web page; the Node-only pieces (model directories, key files, S3) load on first
// use, and only in Node. See docs/sdk.md. Pieces: sealed-client.ts (SealedClient), load-model.ts
// (the client part), transport.ts (the Transport idea), transport-proxy.ts and
// endpoint-transport.ts (its implementations).
import { SealedError } from '../errors.ts';
import { loadSeal } from '../fhe/seal.ts';
import type { ClientPart } from '../model/client-part.ts';
import type { Prediction } from '../model/postprocess.ts';
import { isTreeClientPart } from '../model/trees/client-part.ts';
import type { TreeClientPart } from '../model/trees/compile.ts';
import { sha256Hex } from '../util/sha256.ts';
import { endpointTransport, type SageMakerTarget } from './endpoint-transport.ts';
import { NetworkCodec, type KeysInput, type ModelCodec } from './codec.ts';
import { loadClientPart } from './load-model.ts';
import { nodeOnly } from './node-only.ts';
import { SealedClient, type RecordInput } from './sealed-client.ts';
import { ClientSession, keysId, type Keys, type ResultExpectation } from './session.ts';
import { TreeCodec } from './tree-codec.ts';
import { proxyTransport } from './transport-proxy.ts';
import { TRANSPORT_MODES, type Transport, type TransportMode } from './transport.ts';

export type { ClientPart, Keys, Prediction, ResultExpectation, RecordInput, SageMakerTarget };
export type { TreeClientPart } from '../model/trees/compile.ts';
export { SealedError, keysId, sha256Hex, SealedClient, loadClientPart, proxyTransport, isTreeClientPart };
export type { PredictOutcome, PredictStats } from './sealed-client.ts';
export type { KeysInput } from './codec.ts';
export {
  BODY_LIMIT,
  choosePayload,
  PayloadRefused,
  sizeSwitch,
  type Evaluation,
  type EvaluationKeys,
  type Transport,
  type TransportMode,
} from './transport.ts';
export { bodyTransport, endpointTransport, s3Transport, type EndpointTransportOptions, type S3TransportOptions } from './endpoint-transport.ts';

export interface ClientOptions {
  /**
   * The model's client part (encryption parameters, layout, scaling, labels; no weights): the
   * parsed object, its JSON text, or a URL to fetch it from; in Node also a model bundle
   * directory (or a directory holding client/model.json or model.json), or the model.tar.gz
   * SageMaker training writes (a local file or an s3:// URI; only the client part is read).
   */
  model: ClientPart | TreeClientPart | string | URL;
  /**
   * Where queries are evaluated: your own Transport; or, with `endpoint` or `sagemaker`, how
   * queries travel: 'auto' (default: as the request body up to `bodyLimit`, else through S3),
   * 'body' or 's3'.
   */
  transport?: Transport | TransportMode;
  /**
   * Node: base URL of an inference server (`sealed serve`, POST /invocations). Keys (and, in
   * the S3 form, queries and results) travel through S3: `s3Endpoint`, `bucket` and `prefix` say
   * where, with the same defaults as `sealed predict` (the embedded local S3 unless AWS is configured).
   */
  endpoint?: string;
  /** Node: a SageMaker endpoint instead of `endpoint` (real-time, or async: always through S3). */
  sagemaker?: SageMakerTarget;
  s3Endpoint?: string;
  bucket?: string;
  prefix?: string;
  /** The largest query sent as a request body [6 MB, SageMaker's limit]. */
  bodyLimit?: number;
  /** Base URL of a sealed web server (`sealed demo --web`): works from Node and from browsers. */
  proxy?: string | URL;
  /** Browser: URL of node-seal's seal_throws.wasm (default: next to the bundled script). */
  wasmUrl?: string;
  /** Keys made earlier (e.g. by `generateKeys` of another client for the same model; a tree model's may hold `singleRecord`). */
  keys?: KeysInput;
  /**
   * Node: load the key set from this directory, or make and save one there (secret key mode
   * 0600). `true`: the directory `sealed keygen` uses (~/.sealed/keys/<model id>). A tree
   * model's single-record set lives in its single/ (made and saved the first time one record is
   * predicted, as `sealed predict` does).
   */
  keysDir?: string | true;
}

/** The transport the options name, and whether the client made it (and so closes it). */
function transportOf(o: ClientOptions): [Transport | undefined, boolean] {
  const mode = typeof o.transport === 'string' ? o.transport : undefined;
  if (mode !== undefined && !TRANSPORT_MODES.includes(mode))
    throw new SealedError(
      'bad-request',
      `unknown transport "${String(mode).slice(0, 20)}"`,
      `use one of ${TRANSPORT_MODES.join(', ')}, or pass a Transport object`,
    );
  if (typeof o.transport === 'object') return [o.transport, false];
  if (o.proxy !== undefined) return [proxyTransport(o.proxy), true];
  if (o.endpoint !== undefined || o.sagemaker)
    return [
      endpointTransport({
        endpoint: o.endpoint,
        sagemaker: o.sagemaker,
        s3Endpoint: o.s3Endpoint,
        bucket: o.bucket,
        prefix: o.prefix,
        transport: mode,
        bodyLimit: o.bodyLimit,
      }),
      true,
    ];
  return [undefined, false];
}

/** Opens a client for a model: loads SEAL (WASM) and the model's client part. */
export async function createClient(o: ClientOptions): Promise<SealedClient> {
  const [transport, owns] = transportOf(o);
  const part = await loadClientPart(o.model, { s3Endpoint: o.s3Endpoint });
  await loadSeal(o.wasmUrl ? () => o.wasmUrl! : undefined);
  let codec: ModelCodec;
  try {
    codec = isTreeClientPart(part) ? await TreeCodec.open(part) : new NetworkCodec(await ClientSession.open(part.model_id, part));
  } catch (e) {
    if (owns) await transport?.close?.();
    throw e;
  }
  const client = new SealedClient(codec, transport, owns);
  try {
    if (o.keys) client.useKeys(o.keys);
    else if (o.keysDir !== undefined) {
      const kf = await nodeOnly<typeof import('./key-files.ts')>('./key-files.ts', 'keysDir');
      const dir = o.keysDir === true ? kf.defaultKeysDir(codec.modelId) : o.keysDir;
      if (codec instanceof TreeCodec) await useTreeKeysDir(codec, dir);
      else if (codec instanceof NetworkCodec) client.useKeys((await kf.loadOrCreateKeys(dir, codec.session)).keys);
    }
  } catch (e) {
    await client.close();
    throw e;
  }
  return client;
}

/**
 * A tree model's key sets in `dir`, as `sealed predict` keeps them: the batch circuit's there,
 * made and saved when missing; the single-record form's in single/, saved when first made.
 */
async function useTreeKeysDir(codec: TreeCodec, dir: string): Promise<void> {
  const trees = await nodeOnly<typeof import('./predict-trees.ts')>('./predict-trees.ts', 'keysDir');
  const { batch, single } = await trees.readTreeKeySets(codec.part, dir);
  if (batch) codec.useKeys({ ...batch, singleRecord: single });
  else await trees.saveTreeKeys(codec.part, dir, codec.generateKeys());
  codec.onSingleKeys = (k) => trees.saveSingleKeys(dir, codec.part, k).then(() => undefined);
}

// The functions below repeat SealedClient's methods. They stay, deprecated, because docs/sdk.md
// documents them as the SDK's older form; nothing in this repository calls them.

/** @deprecated use client.generateKeys() */
export function generateKeys(client: SealedClient): Keys {
  return client.generateKeys();
}

/** @deprecated use client.encrypt() */
export function encrypt(client: SealedClient, records: readonly RecordInput[]): Uint8Array {
  return client.encrypt(records);
}

/** @deprecated use client.decrypt() */
export function decrypt(client: SealedClient, result: Uint8Array): Prediction[] {
  return client.decrypt(result);
}

/** @deprecated use client.predict() */
export function predict(client: SealedClient, records: readonly RecordInput[]): Promise<Prediction[]> {
  return client.predict(records);
}
