import { NegacyclicNtt } from './src/fhe/ntt.ts';
const q = 67043329; // < 2^26, 1 mod 16384?
let qq = 0; for (let c = Math.floor((2**26 - 1) / 16384) * 16384 + 1; c > 2**25; c -= 16384) { let p = true; for (let d = 2; d * d <= c; d++) if (c % d === 0) { p = false; break; } if (p) { qq = c; break; } }
const ntt = NegacyclicNtt.of(qq, 8192);
const a = new Float64Array(8192).map((_, i) => (i * 7919) % qq);
for (let r = 0; r < 50; r++) ntt.forward(a);
const t = performance.now();
for (let r = 0; r < 500; r++) ntt.forward(a);
const ms = (performance.now() - t) / 500;
console.log('q', qq, 'ms per NTT', ms.toFixed(3), 'ns per butterfly', (ms * 1e6 / (4096 * 13)).toFixed(1));
