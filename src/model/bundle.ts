// The model bundle: what training writes into the model directory (SageMaker's /opt/ml/model).
//
//   sealed.json          manifest: format, version, model id, SHA-256 of every file, metrics
//   client/model.json    client part: parameters, layouts, pre/post-processing, labels, keys to
//                        make, and the model id queries carry. No weights.
//   server/program.json  server part: the CKKS program (steps, rotations, scales)
//   server/masks.bin     server part: the program's plaintext masks (weights), float64 LE
//   server/batch.json    server part, optional: the batch plan (integer weights), for large batches
//
// Every file is checked against the manifest on load; the client part also stands alone.
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SealedError } from '../errors.ts';
import { type BatchPlan } from '../fhe/batch-plan.ts';
import { validateBatchPlan } from '../fhe/batch-plan-check.ts';
import type { Program } from '../fhe/program.ts';
import type { Privacy } from '../fhe/privacy.ts';
import type { ClientPart } from './client-part.ts';
import { MAX_INPUT_ROTATIONS } from './input-copies.ts';
import { modelIdOf, parseClientPart } from './client-part.ts';

export const BUNDLE_FORMAT = 'sealed-bundle';
export const BUNDLE_VERSION = 1;

export interface Manifest {
  format: typeof BUNDLE_FORMAT;
  version: number;
  model_id: string;
  created: string;
  files: Record<string, string>;
  metrics?: Record<string, number | string>;
}

export interface ServerPart {
  modelId: string;
  program: Program;
  masks: Float64Array[];
  batch?: BatchPlan;
  /**
   * Circuit privacy per layout (privacy.ts): the bundle's `privacy` fields, 'none' where absent
   * (bundles made before circuit privacy: their parameters have no headroom for the flood, so
   * flooding would drown their outputs; refusing them would stop deployed models). The server
   * should warn when a layout is 'none'.
   */
  privacy: { single: Privacy; batch?: Privacy };
}

const sha256 = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

/** `extra`: more server-part files (e.g. server/network.json, the source layer graph), hashed too. */
export async function writeBundle(
  dir: string,
  client: ClientPart,
  program: Program,
  masks: Float64Array[],
  metrics?: Manifest['metrics'],
  extra: Record<string, string> = {},
  batch?: BatchPlan,
): Promise<Manifest> {
  await mkdir(join(dir, 'client'), { recursive: true });
  await mkdir(join(dir, 'server'), { recursive: true });
  const lengths = masks.map((m) => m.length);
  const bin = new Uint8Array(lengths.reduce((a, b) => a + b, 0) * 8);
  const view = new DataView(bin.buffer);
  let o = 0;
  for (const m of masks) for (const v of m) view.setFloat64(o++ * 8, v, true);
  const programBytes = JSON.stringify({ ...program, mask_lengths: lengths }) + '\n';
  const batchBytes = batch ? JSON.stringify(batch) + '\n' : '';
  const clientBytes = JSON.stringify({ ...client, model_id: modelIdOf(JSON.stringify(client), programBytes, bin, batchBytes) }, null, 1) + '\n';
  const files: Record<string, string | Uint8Array> = {
    'client/model.json': clientBytes,
    'server/program.json': programBytes,
    'server/masks.bin': bin,
    ...extra,
  };
  if (batch) files['server/batch.json'] = batchBytes;
  for (const [name, bytes] of Object.entries(files)) await writeFile(join(dir, name), bytes);
  const manifest: Manifest = {
    format: BUNDLE_FORMAT,
    version: BUNDLE_VERSION,
    model_id: parseClientPart(clientBytes, dir).model_id,
    created: new Date().toISOString(),
    files: Object.fromEntries(Object.entries(files).map(([k, v]) => [k, sha256(v)])),
    metrics,
  };
  await writeFile(join(dir, 'sealed.json'), JSON.stringify(manifest, null, 1) + '\n');
  return manifest;
}

async function readChecked(dir: string, name: string, manifest: Manifest | undefined): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(join(dir, name));
  } catch {
    throw new SealedError(
      'bad-bundle',
      `the model bundle in ${dir} has no ${name}`,
      'point at the directory `sealed train` wrote (or extract model.tar.gz there)',
    );
  }
  if (manifest && manifest.files[name] !== sha256(bytes)) {
    throw new SealedError(
      'bad-bundle',
      `${name} in ${dir} does not match its hash in sealed.json: the bundle is corrupted or was edited`,
      'copy the bundle again from the training output',
    );
  }
  return bytes;
}

export async function readManifest(dir: string): Promise<Manifest | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, 'sealed.json'), 'utf8');
  } catch {
    return undefined;
  }
  const m = JSON.parse(text) as Manifest;
  if (m.format !== BUNDLE_FORMAT) throw new SealedError('bad-bundle', `${dir}/sealed.json is not a sealed bundle manifest`);
  if (m.version !== BUNDLE_VERSION)
    throw new SealedError(
      'bad-bundle',
      `bundle format version ${m.version} is not supported (this build reads ${BUNDLE_VERSION})`,
      'retrain, or use the matching version of sealed',
    );
  return m;
}

/** The client part, from a bundle directory or a directory holding only client/model.json or model.json. */
export async function readClientPart(dir: string): Promise<{ modelId: string; client: ClientPart }> {
  const manifest = await readManifest(dir);
  let bytes: Uint8Array;
  if (manifest) bytes = await readChecked(dir, 'client/model.json', manifest);
  else {
    try {
      bytes = await readFile(join(dir, 'client', 'model.json'));
    } catch {
      bytes = await readChecked(dir, 'model.json', undefined);
    }
  }
  const client = parseClientPart(new TextDecoder().decode(bytes), dir);
  const modelId = client.model_id;
  if (manifest && manifest.model_id !== modelId)
    throw new SealedError('bad-bundle', `the client part's id ${modelId} differs from the manifest's ${manifest.model_id}`);
  return { modelId, client };
}

export async function readServerPart(dir: string): Promise<ServerPart> {
  const manifest = await readManifest(dir);
  if (!manifest)
    throw new SealedError(
      'bad-bundle',
      `no sealed.json in ${dir}: not a model bundle`,
      'point the server at the directory `sealed train` wrote (SageMaker: /opt/ml/model)',
    );
  const programBytes = await readChecked(dir, 'server/program.json', manifest);
  const bin = await readChecked(dir, 'server/masks.bin', manifest);
  const parsed = JSON.parse(new TextDecoder().decode(programBytes)) as Program & { mask_lengths: number[] };
  const { mask_lengths: lengths, ...program } = parsed;
  const view = new DataView(bin.buffer, bin.byteOffset, bin.byteLength);
  const masks: Float64Array[] = [];
  let o = 0;
  for (const len of lengths) {
    const m = new Float64Array(len);
    for (let i = 0; i < len; i++) m[i] = view.getFloat64(o++ * 8, true);
    masks.push(m);
  }
  if (o * 8 !== bin.length) throw new SealedError('bad-bundle', 'server/masks.bin does not match server/program.json');
  const batch = manifest.files['server/batch.json'] ? await readBatchPlan(dir, manifest) : undefined;
  if (program.privacy !== undefined && program.privacy !== 'flood' && program.privacy !== 'none')
    throw new SealedError('bad-bundle', `server/program.json: privacy is ${JSON.stringify(program.privacy)}, not "flood" or "none"`);
  if (program.privacy === 'flood' && !(typeof program.noiseL2Bits === 'number' && Number.isFinite(program.noiseL2Bits) && program.noiseL2Bits >= 0))
    throw new SealedError('bad-bundle', 'server/program.json: privacy "flood" needs noiseL2Bits, a bit count');
  // The engine runs every step that is not a square as a linear one: a step it does not know
  // (a bundle from a newer compiler) is refused, never evaluated as something else.
  const steps: unknown = program.steps;
  if (!Array.isArray(steps)) throw new SealedError('bad-bundle', 'server/program.json: steps is not an array');
  steps.forEach((st: { op?: unknown }, i) => {
    if (st?.op !== 'linear' && st?.op !== 'square' && st?.op !== 'rescale')
      throw new SealedError(
        'bad-bundle',
        `server/program.json: step ${i} has operation ${JSON.stringify(st?.op)}, which this server does not run (linear, square, rescale)`,
        'serve it with the sealed version that compiled it, or recompile the model',
      );
  });
  checkInputRotations(program as Program);
  const lambda = program.floodSecurityBits;
  if (lambda !== undefined && !(Number.isInteger(lambda) && lambda >= 20 && lambda <= 128))
    throw new SealedError('bad-bundle', `server/program.json: floodSecurityBits is ${JSON.stringify(lambda)}, not an integer in [20, 128]`);
  const privacy = { single: program.privacy ?? 'none', batch: batch ? (batch.privacy ?? 'none') : undefined };
  return { modelId: manifest.model_id, program, masks, batch, privacy };
}

/**
 * The client's rotated copies: on the first step only (the engine hands them to it), distinct
 * rotations within the ring's slots, increasing, and a bounded count (each is a ciphertext the
 * server reserves memory for).
 */
function checkInputRotations(program: Program): void {
  const slots = program.params.polyModulusDegree / 2;
  program.steps.forEach((st, i) => {
    const r = (st as { inputRotations?: unknown }).inputRotations;
    if (r === undefined) return;
    const ok =
      i === 0 &&
      st.op === 'linear' &&
      Array.isArray(r) &&
      r.length > 0 &&
      r.length <= MAX_INPUT_ROTATIONS &&
      r.every((k, j) => Number.isInteger(k) && k > 0 && k < slots && (j === 0 || k > (r[j - 1] as number)));
    if (!ok)
      throw new SealedError(
        'bad-bundle',
        `server/program.json: step ${i} has inputRotations that are not 1 to ${MAX_INPUT_ROTATIONS} increasing rotations of the first linear step`,
        'recompile the model',
      );
  });
}

/**
 * The batch plan, checked against the kernel limits: the kernel trusts it, so a plan it cannot
 * evaluate exactly stops the server (and each worker) at load, instead of giving wrong results.
 */
async function readBatchPlan(dir: string, manifest: Manifest): Promise<BatchPlan> {
  const where = `server/batch.json in ${dir}`;
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder().decode(await readChecked(dir, 'server/batch.json', manifest)));
  } catch (e) {
    if (e instanceof SyntaxError) throw new SealedError('bad-bundle', `${where} is not valid JSON`, 'copy the bundle again from the training output');
    throw e;
  }
  return validateBatchPlan(raw, where);
}
