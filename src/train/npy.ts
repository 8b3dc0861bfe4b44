// NumPy .npy arrays (version 1.0-3.0, little-endian numeric dtypes, C order).
import { SealedError } from '../errors.ts';

export interface NpyArray {
  shape: number[];
  data: Float64Array;
}

const READERS: Record<string, [number, (v: DataView, o: number) => number]> = {
  '<f8': [8, (v, o) => v.getFloat64(o, true)],
  '<f4': [4, (v, o) => v.getFloat32(o, true)],
  '<i8': [8, (v, o) => Number(v.getBigInt64(o, true))],
  '<i4': [4, (v, o) => v.getInt32(o, true)],
  '<i2': [2, (v, o) => v.getInt16(o, true)],
  '|i1': [1, (v, o) => v.getInt8(o)],
  '|u1': [1, (v, o) => v.getUint8(o)],
  '<u2': [2, (v, o) => v.getUint16(o, true)],
  '<u4': [4, (v, o) => v.getUint32(o, true)],
};

export function parseNpy(bytes: Uint8Array, source: string): NpyArray {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (bytes.length < 10 || magic.some((b, i) => bytes[i] !== b)) throw new SealedError('bad-data', `${source} is not a .npy file`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = bytes[6];
  const hlen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const hstart = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.subarray(hstart, hstart + hlen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  if (!descr || !READERS[descr])
    throw new SealedError('bad-data', `${source}: dtype ${descr} is not supported`, 'save as float64, float32 or an integer type, little-endian');
  if (fortran) throw new SealedError('bad-data', `${source}: Fortran-ordered arrays are not supported`, 'save with np.ascontiguousarray');
  const [size, read] = READERS[descr];
  const n = shape.reduce((a, b) => a * b, 1);
  const start = hstart + hlen;
  if (bytes.length < start + n * size) throw new SealedError('bad-data', `${source} is truncated`);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = read(view, start + i * size);
  return { shape, data };
}
