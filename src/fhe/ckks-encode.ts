// CKKS encoding of real slot values, as SEAL's CKKSEncoder does it (ckks.cpp, encode_internal),
// for batch mode's own encryption (seeded-batch.ts): with the polynomial's integer coefficients
// in hand, the client adds the noise before the NTT, one transform per prime where SEAL's encode
// and then our noise took two. The slot order is SEAL's (its matrix_reps_index_map: slot i at
// the bit-reversed position of (3^i mod 2N - 1) / 2, its conjugate at that of (2N - 3^i mod 2N
// - 1) / 2), the transform its inverse FFT from bit-reversed order with the scale folded into the
// last stage. A coefficient could differ from SEAL's by one where a value rounds differently
// (the roots are computed here, not taken from SEAL's tables); test/unit/seeded-batch.test.ts
// checks that SEAL decodes what this encodes, and that (nearly) every coefficient is SEAL's.

const cache = new Map<number, CkksEncoder>();

export class CkksEncoder {
  readonly degree: number;
  /** Where slot i (i < N/2) and its conjugate (N/2 + i) go in the transform's input. */
  private readonly index: Uint32Array;
  /** SEAL's inv_root_powers: conj(w^(rev(i - 1) + 1)), w = exp(2 pi i / 2N), for i = 1 .. N-1. */
  private readonly invRe: Float64Array;
  private readonly invIm: Float64Array;
  private readonly re: Float64Array;
  private readonly im: Float64Array;
  /** SEAL's root_powers (decoding's, built on first use): w^rev(i), w = exp(2 pi i / 2N). */
  private rootRe?: Float64Array;
  private rootIm?: Float64Array;

  /** One per degree and thread (the tables take ~1 ms to build). */
  static of(degree: number): CkksEncoder {
    let e = cache.get(degree);
    if (!e) cache.set(degree, (e = new CkksEncoder(degree)));
    return e;
  }

  constructor(degree: number) {
    const N = degree;
    const logN = Math.log2(N);
    if (!Number.isInteger(logN) || logN < 3) throw new Error(`CKKS encoding needs a power-of-two degree of at least 8, not ${N}`);
    this.degree = N;
    const slots = N / 2;
    const m = 2 * N;
    const rev = (x: number) => {
      let r = 0;
      for (let b = 0; b < logN; b++) r = (r << 1) | ((x >>> b) & 1);
      return r;
    };
    this.index = new Uint32Array(N);
    let pos = 1;
    for (let i = 0; i < slots; i++) {
      this.index[i] = rev((pos - 1) >>> 1);
      this.index[slots + i] = rev((m - pos - 1) >>> 1);
      pos = (pos * 3) % m;
    }
    this.invRe = new Float64Array(N);
    this.invIm = new Float64Array(N);
    for (let i = 1; i < N; i++) {
      const angle = (2 * Math.PI * (rev(i - 1) + 1)) / m;
      this.invRe[i] = Math.cos(angle);
      this.invIm[i] = -Math.sin(angle);
    }
    this.re = new Float64Array(N);
    this.im = new Float64Array(N);
  }

  /**
   * The rounded integer coefficients of the encoding of `values` (at most N/2, the rest of the
   * slots zero) at `scale`, into `out` (N doubles, integers; above 2^53 as exact as SEAL's, which
   * also rounds in doubles). Returns the largest magnitude (NaN if a value was not finite).
   */
  encode(values: ArrayLike<number>, scale: number, out: Float64Array): number {
    const N = this.degree;
    const slots = N / 2;
    if (values.length > slots) throw new Error(`${values.length} values for ${slots} slots`);
    const { re, im, invRe, invIm, index } = this;
    re.fill(0);
    im.fill(0);
    for (let i = 0; i < values.length; i++) {
      re[index[i]] = values[i];
      re[index[slots + i]] = values[i]; // the conjugate of a real value
    }
    let root = 0;
    let gap = 1;
    for (let m = N >> 1; m > 1; m >>= 1) {
      for (let i = 0, offset = 0; i < m; i++, offset += gap << 1) {
        root++;
        const rr = invRe[root],
          ri = invIm[root];
        for (let x = offset, y = offset + gap; x < offset + gap; x++, y++) {
          const ur = re[x],
            ui = im[x],
            dr = ur - re[y],
            di = ui - im[y];
          re[x] = ur + re[y];
          im[x] = ui + im[y];
          re[y] = dr * rr - di * ri;
          im[y] = dr * ri + di * rr;
        }
      }
      gap <<= 1;
    }
    // The last stage, with the scale and 1/N folded in (only real parts are needed from here).
    root++;
    const fix = scale / N;
    const sr = invRe[root] * fix,
      si = invIm[root] * fix;
    let most = 0;
    for (let x = 0, y = gap; x < gap; x++, y++) {
      const a = Math.round((re[x] + re[y]) * fix);
      const b = Math.round((re[x] - re[y]) * sr - (im[x] - im[y]) * si);
      out[x] = a;
      out[y] = b;
      most = Math.max(most, Math.abs(a), Math.abs(b));
    }
    return most;
  }

  /**
   * SEAL's decode (ckks.h, decode_internal) from the coefficients already divided by the scale
   * (`coefficients`, N; overwritten): its forward transform into bit-reversed order, each slot
   * read where matrix_reps_index_map puts it. Writes the N/2 slots' real parts into `out`.
   */
  decode(coefficients: Float64Array, out: Float64Array): void {
    const N = this.degree;
    const slots = N / 2;
    if (coefficients.length !== N || out.length < slots) throw new Error(`decode takes ${N} coefficients into ${slots} slots`);
    if (!this.rootRe || !this.rootIm) {
      const logN = Math.log2(N);
      this.rootRe = new Float64Array(N);
      this.rootIm = new Float64Array(N);
      for (let i = 1; i < N; i++) {
        let r = 0;
        for (let b = 0; b < logN; b++) r = (r << 1) | ((i >>> b) & 1);
        this.rootRe[i] = Math.cos((Math.PI * r) / N);
        this.rootIm[i] = Math.sin((Math.PI * r) / N);
      }
    }
    const { rootRe, rootIm, index } = this;
    const re = coefficients;
    const im = this.im;
    im.fill(0);
    let root = 0;
    let gap = N >> 1;
    for (let m = 1; m < N; m <<= 1, gap >>= 1) {
      for (let i = 0, offset = 0; i < m; i++, offset += gap << 1) {
        root++;
        const rr = rootRe[root],
          ri = rootIm[root];
        for (let x = offset, y = offset + gap; x < offset + gap; x++, y++) {
          const vr = re[y] * rr - im[y] * ri,
            vi = re[y] * ri + im[y] * rr,
            ur = re[x],
            ui = im[x];
          re[x] = ur + vr;
          im[x] = ui + vi;
          re[y] = ur - vr;
          im[y] = ui - vi;
        }
      }
    }
    for (let i = 0; i < slots; i++) out[i] = re[index[i]];
  }
}
