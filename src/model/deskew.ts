// Deskewing (a fixed, model-independent image pre-processing the client applies before
// encryption): moment-based shear that makes the main axis of the digit vertical, and
// re-centring on the centre of mass. Runs in the browser too.

export function deskew(img: ArrayLike<number>, side: number): number[] {
  let tot = 0,
    mr = 0,
    mc = 0;
  for (let r = 0; r < side; r++)
    for (let c = 0; c < side; c++) {
      const v = img[r * side + c];
      tot += v;
      mr += r * v;
      mc += c * v;
    }
  if (tot <= 0) return Array.from(img);
  mr /= tot;
  mc /= tot;
  let vrr = 0,
    vrc = 0;
  for (let r = 0; r < side; r++)
    for (let c = 0; c < side; c++) {
      const v = img[r * side + c];
      vrr += (r - mr) ** 2 * v;
      vrc += (r - mr) * (c - mc) * v;
    }
  const alpha = vrr > 0 ? vrc / vrr : 0;
  const half = side / 2;
  const at = (r: number, c: number) => (r >= 0 && r < side && c >= 0 && c < side ? img[r * side + c] : 0);
  const out = new Array<number>(side * side);
  for (let r = 0; r < side; r++)
    for (let c = 0; c < side; c++) {
      const rs = mr + (r - half);
      const cs = mc + alpha * (r - half) + (c - half);
      const r0 = Math.floor(rs),
        c0 = Math.floor(cs);
      const fr = rs - r0,
        fc = cs - c0;
      out[r * side + c] = (1 - fr) * ((1 - fc) * at(r0, c0) + fc * at(r0, c0 + 1)) + fr * ((1 - fc) * at(r0 + 1, c0) + fc * at(r0 + 1, c0 + 1));
    }
  return out;
}
