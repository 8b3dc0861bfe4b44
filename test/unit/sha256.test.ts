// SHA-256: the portable code (what a browser bundle runs) against node:crypto, and sha256Hex,
// which takes node:crypto when the runtime has it, giving the same digests.
import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import { modelIdOf } from '../../src/model/client-part.ts';
import { Sha256, portableSha256Hex, sha256Hex } from '../../src/util/sha256.ts';

const node = (...parts: (string | Uint8Array)[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
};

t.test('the portable SHA-256 equals node:crypto, whole and in pieces', async (t) => {
  t.equal(portableSha256Hex(''), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 'empty input (FIPS 180-4 vector)');
  t.equal(portableSha256Hex('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', '"abc" (FIPS 180-4 vector)');
  for (const n of [1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 65_537, 1_000_003]) {
    const b = new Uint8Array(randomBytes(n));
    t.equal(portableSha256Hex(b), node(b), `${n} random bytes`, { diagnostic: false });
    const cut = Math.floor(n / 3);
    t.equal(
      new Sha256()
        .update(b.subarray(0, cut))
        .update(b.subarray(cut, cut + 1))
        .update(b.subarray(cut + 1))
        .hex(),
      node(b),
      `${n} bytes in three pieces`,
      { diagnostic: false },
    );
  }
  const text = 'mean radius, Größe, 半径, 🩺';
  t.equal(portableSha256Hex(text), node(text), 'strings are hashed as UTF-8, as node:crypto does');
  const h = new Sha256();
  h.digest();
  t.throws(() => h.update('x'), 'a finished hash cannot be updated');
});

t.test('sha256Hex (node:crypto under Node) gives the portable digests; modelIdOf keeps its ids', async (t) => {
  const parts = [JSON.stringify({ task: 'binary', features: ['a', 'b'] }), 'program\n', new Uint8Array(randomBytes(4096)), 'Größe'];
  t.equal(sha256Hex(...parts), portableSha256Hex(...parts), 'several parts, strings as UTF-8');
  t.equal(sha256Hex(), portableSha256Hex(), 'no part at all');
  t.equal(modelIdOf(...parts), node(...parts).slice(0, 32), 'modelIdOf gives the same 32 hex digits as with node:crypto');
  // The speed-up is the point of the node:crypto path (tree queries are hundreds of MB): 8 MB
  // through both, timed only for the diagnostic line, never asserted.
  const big = new Uint8Array(8e6);
  let t0 = performance.now();
  const fast = sha256Hex(big);
  const fastMs = performance.now() - t0;
  t0 = performance.now();
  t.equal(fast, portableSha256Hex(big), '8 MB: the same digest both ways');
  t.comment(`8 MB: sha256Hex ${fastMs.toFixed(1)} ms, portable ${(performance.now() - t0).toFixed(1)} ms`);
});
