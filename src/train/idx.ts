// IDX files (the MNIST format), gzip or not: big-endian magic (0x00000803 images,
// 0x00000801 labels), the dimension sizes, then unsigned bytes.
import { gunzipSync } from 'node:zlib';
import { readFile } from 'node:fs/promises';
import { SealedError } from '../errors.ts';

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

export function parseIdx(raw: Uint8Array, source: string): IdxArray {
  const bytes = raw[0] === 0x1f && raw[1] === 0x8b ? new Uint8Array(gunzipSync(raw)) : raw;
  if (bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0)
    throw new SealedError('bad-data', `${source} is not an IDX file`, 'give MNIST-format files (…-idx3-ubyte or …-idx1-ubyte, optionally .gz)');
  if (bytes[2] !== 0x08) throw new SealedError('bad-data', `${source}: only unsigned-byte IDX data is supported (type 0x${bytes[2].toString(16)})`);
  const nd = bytes[3];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims = Array.from({ length: nd }, (_, i) => view.getUint32(4 + 4 * i, false));
  const start = 4 + 4 * nd;
  const size = dims.reduce((a, b) => a * b, 1);
  if (bytes.length !== start + size) throw new SealedError('bad-data', `${source}: IDX header says ${size} values, the file holds ${bytes.length - start}`);
  return { dims, data: bytes.subarray(start) };
}

export async function readIdx(file: string): Promise<IdxArray> {
  return parseIdx(new Uint8Array(await readFile(file)), file);
}

/**
 * Images as rows of pixel values (0..255), one row per image: views of the file's bytes, not
 * arrays. V8 marks every element of an array of small integers on each full collection, and a
 * batch query's buffers start one every few tens of MB: 20,000 MNIST images held as arrays cost
 * ~20 ms of CPU per collection; as views, model (b)'s full batch run in the one-process
 * benchmark took ~4% less CPU per image (session 54). A view is one object, its bytes outside
 * the heap.
 */
export function imageRows(a: IdxArray): Uint8Array[] {
  if (a.dims.length !== 3) throw new SealedError('bad-data', `expected an IDX image file (3 dimensions), got ${a.dims.length}`);
  const n = a.dims[1] * a.dims[2];
  return Array.from({ length: a.dims[0] }, (_, i) => a.data.subarray(i * n, (i + 1) * n));
}
