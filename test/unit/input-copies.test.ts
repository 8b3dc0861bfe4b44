// The client's rotated copies of its input (input-copies.ts): the re-split first step computes
// the same as the original on every slot, only the baby steps are sent when every offset would
// take too many ciphertexts, the server splits a section into exactly its ciphertexts, and a
// bundle whose copies are not the first step's increasing rotations is refused at load.
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { splitSection } from '../../src/fhe/load.ts';
import { writeSealHeader } from '../../src/fhe/raw-ciphertext.ts';
import type { LinearStep, Program } from '../../src/fhe/program.ts';
import { readServerPart, writeBundle } from '../../src/model/bundle.ts';
import { compileNetwork } from '../../src/model/compile-network.ts';
import { copiesHint } from '../../src/model/onnx/report.ts';
import { withInputCopies } from '../../src/model/input-copies.ts';
import { packRecords } from '../../src/model/layout.ts';
import { buildNetwork } from '../../src/model/network-steps.ts';
import type { Dense, Network } from '../../src/model/network.ts';
import { simulate } from '../../src/model/simulate.ts';
import { compileImageModel } from '../../src/train/image-model.ts';
import { rng, smallCnn } from '../helpers/networks.ts';

const r = rng(23);
const dense = (out: number, n: number, w: number): Dense => ({
  type: 'dense',
  weights: Array.from({ length: out }, () => Array.from({ length: n }, () => r() * w)),
  bias: Array.from({ length: out }, () => r()),
});
// 1024 features x 64 outputs in 4096 slots: the replicated first layer reads 16 diagonals (4 x 4).
const net: Network = { input: { height: 32, width: 32 }, layers: [dense(64, 1024, 0.05), { type: 'quadratic', a: 0.5, b: 0.2, c: 0.1 }, dense(10, 64, 0.3)] };
const S = 4096;
const images = Array.from({ length: 4 }, () => Array.from({ length: 1024 }, () => r()));

t.test('the re-split first step: every slot as before, no rotation of the server before its folds', async (t) => {
  const built = buildNetwork(net, S);
  const first = built.steps[0] as LinearStep;
  t.ok(
    first.terms.some((x) => x.giant !== 0),
    'the original step has giant steps',
  );
  const all = withInputCopies(built, 16);
  const babies = withInputCopies(built, 4);
  t.equal(withInputCopies(built, 1), built, 'one ciphertext: unchanged');
  const allFirst = all.steps[0] as LinearStep;
  const offsets = [...new Set(first.terms.map((x) => x.giant + x.baby))].filter((d) => d !== 0).sort((a, b) => a - b);
  t.same(allFirst.inputRotations, offsets, 'every offset the step reads is a copy');
  t.ok(
    allFirst.terms.every((x) => x.giant === 0),
    'and no group is rotated',
  );
  const babyFirst = babies.steps[0] as LinearStep;
  t.same(
    babyFirst.inputRotations,
    [...new Set(first.terms.map((x) => x.baby))].filter((b) => b !== 0).sort((a, b) => a - b),
    'at 4 ciphertexts: the baby steps',
  );
  t.equal(babyFirst.terms, first.terms, 'with the terms unchanged');
  t.equal(built.masks.length, all.masks.length, 'one mask per term still');
  for (const img of images) {
    const [v] = packRecords(built.input, [img]);
    const want = simulate({ steps: built.steps } as Program, built.masks, v);
    for (const b of [all, babies]) {
      const got = simulate({ steps: b.steps } as Program, b.masks, v);
      let worst = 0;
      for (let i = 0; i < S; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
      t.ok(worst < 1e-9, `every slot within ${worst.toExponential(1)} of the original program`);
    }
  }
  // The terms read the copies as rot(x, offset): a mask left unrotated gives another result.
  const wrong = { ...allFirst, terms: allFirst.terms.map((x, i) => ({ ...x, mask: first.terms[i].mask })) };
  const [v] = packRecords(built.input, [images[0]]);
  const want = simulate({ steps: built.steps } as Program, built.masks, v);
  const got = simulate({ steps: [wrong, ...all.steps.slice(1)] } as Program, built.masks, v);
  t.ok(
    got.some((x, i) => Math.abs(x - want[i]) > 1e-3),
    'the masks must be rotated by their giant step (checked: unrotated ones fail)',
  );
});

t.test('the compile report says what --input-copies would take off the server', async (t) => {
  const plain = compileNetwork(net, images, { slots: S, privacy: 'none' });
  const copied = compileNetwork(net, images, { slots: S, privacy: 'none', inputCopies: 16 });
  const hint = copiesHint(plain.program) ?? '';
  t.match(hint, /--input-copies 4 would take the first layer's 3 baby-step rotation\(s\) off the server for a query 4 times larger/);
  t.match(hint, /--input-copies 16, all 6 before its folds \(16 times\)/);
  t.equal(copiesHint(copied.program), undefined, 'nothing to say once the client sends copies');
});

t.test('a section splits into exactly its ciphertexts; any other framing is a bad query', async (t) => {
  const object = (n: number, fill: number) => {
    const b = new Uint8Array(n).fill(fill);
    writeSealHeader(new DataView(b.buffer), 0, n);
    return b;
  };
  const a = object(100, 1);
  const b = object(70, 2);
  const both = new Uint8Array([...a, ...b]);
  const parts = splitSection(both, 2, 'the query');
  t.same(
    parts.map((p) => [p.length, p[20]]),
    [
      [100, 1],
      [70, 2],
    ],
    'two objects, at the sizes their headers declare',
  );
  t.equal(splitSection(a, 1, 'q')[0], a, 'one ciphertext per section: the bytes as they are');
  t.throws(() => splitSection(a, 2, 'the query'), { code: 'bad-query', message: /holds 1 ciphertexts; this model reads 2 per section/ });
  t.throws(() => splitSection(new Uint8Array([...both, 0, 0]), 2, 'the query'), { code: 'bad-query', message: /2 bytes after its 2 ciphertexts/ });
  t.throws(() => splitSection(both.subarray(0, 150), 2, 'the query'), { code: 'bad-query', message: /ciphertext 2 of 2 declares 70 bytes, 50 are left/ });
  const huge = both.slice();
  new DataView(huge.buffer).setUint32(12, 1, true); // 2^32 + 100 bytes declared
  t.throws(() => splitSection(huge, 2, 'the query'), { code: 'bad-query', message: /ciphertext 1 of 2 declares 4294967396 bytes/ });
});

t.test("a bundle whose copies are not the first step's increasing rotations is refused at load", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-copies-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const side = 12;
  const pics = Array.from({ length: 6 }, () => Array.from({ length: side * side }, () => Math.floor(r() * 256)));
  const { client } = compileImageModel(smallCnn, pics);
  const m = compileNetwork(net, images, { slots: S, privacy: 'none', inputCopies: 16 });
  const given = (m.program.steps[0] as LinearStep).inputRotations!;
  const write = async (name: string, steps: Program['steps']) => {
    await writeBundle(join(dir, name), client, { ...m.program, steps }, m.masks);
    return readServerPart(join(dir, name));
  };
  t.same(((await write('good', m.program.steps)).program.steps[0] as LinearStep).inputRotations, given, 'valid copies load');
  const [first, ...rest] = m.program.steps as [LinearStep, ...Program['steps']];
  const bad: [string, Program['steps']][] = [
    ['on a later step', [first, rest[0], { ...(rest[1] as LinearStep), inputRotations: [1] }]],
    ['not increasing', [{ ...first, inputRotations: [...given].reverse() }, ...rest]],
    ['outside the slots', [{ ...first, inputRotations: [1, S] }, ...rest]],
    ['too many', [{ ...first, inputRotations: Array.from({ length: 64 }, (_, i) => i + 1) }, ...rest]],
    ['not numbers', [{ ...first, inputRotations: ['1'] as unknown as number[] }, ...rest]],
  ];
  for (const [what, steps] of bad)
    await t.rejects(write(what.replace(/ /g, '-'), steps), { code: 'bad-bundle', message: /inputRotations that are not 1 to 63 increasing rotations/ }, what);
});
