// The checked-in test vectors (test/vectors, docs/wire-format.md): this build still reads the
// query, keys and result they hold, and evaluating their query gives their expected scores. The
// batch-mode set (test/vectors/batch) is also checked against the spec itself: its framing, the
// re-randomization key (SRK1), SEAL's NTT and key layout, and the recipe the spec gives a SEAL
// client for the key.
import t from 'tap';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ClientSession } from '../../src/client/session.ts';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { paramsKey } from '../../src/fhe/params.ts';
import { NegacyclicNtt, secretKeyResidues } from '../../src/fhe/privacy.ts';
import { RAW_DATA_OFFSET, unpackResidues } from '../../src/fhe/raw-ciphertext.ts';
import { release } from '../../src/fhe/seal.ts';
import { readClientPart } from '../../src/model/bundle.ts';
import { deskew } from '../../src/model/deskew.ts';
import { preprocessRecord } from '../../src/model/postprocess.ts';
import { decodeWire, encodeWire, type QueryHeader, type ResultHeader } from '../../src/wire/format.ts';
import { startStack } from '../helpers/fixture.ts';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = fileURLToPath(new URL('../vectors/', import.meta.url));
const file = async (name: string) => new Uint8Array(await readFile(join(dir, name)));
const expected = JSON.parse(await readFile(join(dir, 'expected.json'), 'utf8')) as {
  model_id: string;
  scores: number[][];
  labels: string[];
  tolerance: number;
};
const { modelId, client } = await readClientPart(join(dir, 'model'));
const session = await ClientSession.open(modelId, client);
session.useSecretKey(await file('secret.key'));
t.teardown(() => session.close());

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const close = (got: number[][]) => Math.max(...got.flatMap((r, i) => r.map((v, c) => Math.abs(v - expected.scores[i][c]))));

// The batch vectors are read here, before the first t.test, as everything the subtests share
// (test/light/transport.test.ts says why).
interface BatchExpected {
  model_id: string;
  query_sha256: string;
  records: number[][];
  inputs: number[][];
  scores: number[][];
  plaintext_scores: number[][];
  labels: string[];
  probabilities: number[][];
  decrypt_tolerance: number;
  tolerance: number;
  ntt: { primes: number[]; psi: number[]; secret_key_coefficients: number[]; rerand_key_noise: number[] };
}
const bdir = join(dir, 'batch');
const bfile = async (name: string) => new Uint8Array(await readFile(join(bdir, name)));
const bexp = JSON.parse(await readFile(join(bdir, 'expected.json'), 'utf8')) as BatchExpected;
const bpart = await readClientPart(join(bdir, 'model'));
const bsession = await ClientSession.open(bpart.modelId, bpart.client);
bsession.useBatchSecretKey(await bfile('secret.key'));
t.teardown(() => bsession.close());
const b = bpart.client.batch!;
const N = b.params.polyModulusDegree;
const worst = (got: number[][], want: number[][]) => Math.max(...got.flatMap((r, i) => r.map((v, c) => Math.abs(v - want[i][c]))));

t.test('the stored result decrypts to the expected scores', async (t) => {
  t.equal(modelId, expected.model_id);
  const got = session.decryptScores(await file('result.bin'));
  t.ok(close(got) < expected.tolerance, `within ${expected.tolerance}`);
  t.same(
    session.decrypt(await file('result.bin')).map((p) => p.label),
    expected.labels,
  );
});

t.test("the stored result's header names the SHA-256 of the stored query (docs/wire-format.md)", async (t) => {
  const querySha256 = sha256(await file('query.bin'));
  const h = decodeWire<ResultHeader>('result', await file('result.bin'), 'result.bin').header;
  t.same(h, { model_id: expected.model_id, params: paramsKey(client.params), records: 3, query_sha256: querySha256 });
  t.ok(close(session.decryptScores(await file('result.bin'), { querySha256 })) < expected.tolerance, 'accepted as the answer to query.bin');
  const stored = await file('result.bin');
  t.throws(
    () => session.decryptScores(stored, { querySha256: '0'.repeat(64) }),
    { code: 'bad-data', message: /answers another query/ },
    'refused as the answer to another query',
  );
});

t.test('the server evaluates the stored query with the stored keys to the expected scores', async (t) => {
  const work = await mkdtemp(join(tmpdir(), 'sealed-vectors-'));
  const stack = await startStack(join(dir, 'model'), work, 1);
  t.teardown(async () => {
    await stack.close();
    await rm(work, { recursive: true, force: true });
  });
  const B = stack.bucket;
  const query = await file('query.bin');
  const keys = await file('evaluation.keys');
  const k = `k/${sha256(keys)}.keys`;
  await stack.store.put({ bucket: B, key: 'q' }, query, 'query');
  await stack.store.put({ bucket: B, key: k }, keys, 'keys');
  const res = await fetch(`${stack.server.url}/invocations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ encrypted_query_uri: `s3://${B}/q`, evaluation_keys_uri: `s3://${B}/${k}`, output_uri: `s3://${B}/r`, query_sha256: sha256(query) }),
  });
  t.equal(res.status, 200);
  t.equal(((await res.json()) as { query_sha256: string }).query_sha256, sha256(query), 'the answer names the query');
  const { bytes } = await stack.store.get({ bucket: B, key: 'r' }, 2 ** 24, 'result');
  t.ok(close(session.decryptScores(bytes, { querySha256: sha256(query) })) < expected.tolerance, 'same scores as recorded');
  t.same(
    decodeWire<ResultHeader>('result', bytes, 'result').header,
    decodeWire<ResultHeader>('result', await file('result.bin'), 'result.bin').header,
    'the same header as result.bin',
  );
});

// ---------------------------------------------------------------------------------------------
// Batch mode (test/vectors/batch): a tiny deskewed image model, linear, circuit privacy 'flood'.

/** The SRK1 bytes as docs/wire-format.md lays them out: read here without the code that writes them. */
function readSrk1(bytes: Uint8Array) {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const size = v.getUint32(4, true),
    k = v.getUint32(8, true),
    degree = v.getUint32(12, true);
  const primes = Array.from({ length: k }, (_, i) => v.getUint32(16 + 4 * i, true));
  const at = (poly: number, p: number, c: number) => v.getUint32(16 + 4 * k + 4 * ((poly * k + p) * degree + c), true);
  return { magic: new TextDecoder().decode(bytes.subarray(0, 4)), size, primes, degree, at, length: bytes.length };
}

const mulmod = (a: number, b: number, q: number) => Number((BigInt(a) * BigInt(b)) % BigInt(q));
const powmod = (a: number, e: number, q: number) => {
  let r = 1;
  for (; e > 0; e >>= 1, a = mulmod(a, a, q)) if (e & 1) r = mulmod(r, a, q);
  return r;
};
const centered = (x: number, q: number) => (x > q / 2 ? x - q : x);
const bitrev = (x: number, bits: number) => {
  let r = 0;
  for (let i = 0; i < bits; i++) r = (r << 1) | ((x >>> i) & 1);
  return r;
};

/** The batch secret key's residues (NTT form) for the data primes, read as the spec says. */
async function batchSecret(): Promise<{ primes: number[]; sHat: Uint32Array }> {
  const s = await CkksSession.open(b.params);
  const sk = new s.seal.SecretKey();
  try {
    sk.loadFromArray(s.context, await bfile('secret.key'));
    const raw = sk.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
    const k = b.params.coeffModulusBits.length - 1;
    return { primes: bexp.ntt.primes, sHat: secretKeyResidues(raw, N, k + 1, k) };
  } finally {
    release(sk);
    s.close();
  }
}

t.test('batch: the stored result decrypts to the expected outputs with the stored key', async (t) => {
  t.equal(bpart.modelId, bexp.model_id);
  const result = await bfile('result.bin');
  const querySha256 = createHash('sha256')
    .update(await bfile('query.bin'))
    .digest('hex');
  t.equal(querySha256, bexp.query_sha256);
  t.same(decodeWire<ResultHeader>('result', result, 'result.bin').header, {
    model_id: bexp.model_id,
    params: paramsKey(b.params),
    records: bexp.records.length,
    layout: 'batch',
    query_sha256: querySha256,
  });
  const got = bsession.decryptScores(result, { querySha256 });
  t.ok(worst(got, bexp.scores) < bexp.decrypt_tolerance, `decrypts to the stored scores (within ${bexp.decrypt_tolerance})`);
  t.ok(worst(got, bexp.plaintext_scores) < bexp.tolerance, `the model in plaintext, within the flood's tolerance ${bexp.tolerance.toExponential(2)}`);
  const predictions = bsession.decrypt(result, { querySha256 });
  t.same(
    predictions.map((p) => p.label),
    bexp.labels,
    'labels',
  );
  t.ok(
    worst(
      predictions.map((p) => p.probabilities!),
      bexp.probabilities,
    ) < 1e-6,
    'softmax probabilities',
  );
  t.equal(decodeWire<ResultHeader>('result', result, 'result.bin').sections.length, b.outputs, 'one batch: one ciphertext per output');
});

t.test('batch: pre-processing (deskew, standardise) gives the stored slot values', async (t) => {
  t.same(bpart.client.image, { side: 3, deskew: true });
  const got = bexp.records.map((r) => preprocessRecord(r, bpart.client));
  t.ok(worst(got, bexp.inputs) < 1e-12, '3x3 records');
  t.same(got[2], new Array<number>(9).fill(0), 'an empty image is left as it is');
  const d = JSON.parse(await readFile(join(bdir, 'deskew.json'), 'utf8')) as { side: number; images: number[][]; deskewed: number[][] };
  t.equal(d.side, 28);
  t.ok(
    worst(
      d.images.map((img) => deskew(img, 28)),
      d.deskewed,
    ) < 1e-9,
    'MNIST test images 0 and 1',
  );
});

t.test('batch: the stored query is framed as docs/wire-format.md says', async (t) => {
  const q = decodeWire<QueryHeader>('query', await bfile('query.bin'), 'query.bin');
  t.same(q.header, { model_id: bexp.model_id, params: paramsKey(b.params), records: bexp.records.length, layout: 'batch', rerand_key: true });
  const features = bpart.client.features.length;
  t.equal(q.sections.length, 1 + Math.ceil(bexp.records.length / b.records_per_batch) * features, 'the key, then batches x features ciphertexts');
  const k = b.params.coeffModulusBits.length - 1;
  const key = readSrk1(q.sections[0]);
  t.same(
    { magic: key.magic, size: key.size, primes: key.primes, degree: key.degree },
    { magic: 'SRK1', size: b.result_size, primes: bexp.ntt.primes, degree: N },
  );
  t.equal(key.length, 16 + 4 * k + 4 * b.result_size * k * N);
  for (const section of q.sections.slice(1)) {
    const v = new DataView(section.buffer, section.byteOffset, section.byteLength);
    t.equal(new TextDecoder().decode(section.subarray(0, 3)), 'P26');
    t.equal(section[3], 0);
    t.equal(v.getUint32(4, true), 113, 'prefix length');
    t.equal(v.getUint32(8, true), k * N, 'residue count: seeded, c0 only');
    t.equal(section.length, 12 + 113 + ((k * N) / 4) * 13 + 81, 'prefix, residues, seed record');
  }
  // The first section unpacked by the spec's bit order, against the code's unpacking.
  const p = q.sections[1];
  const raw = unpackResidues(p);
  const rv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  let bad = 0;
  for (let i = 0; i < k * N; i++) {
    let x = 0;
    for (let bit = 0; bit < 26; bit++) {
      const at = 26 * i + bit;
      x += ((p[12 + 113 + (at >> 3)] >> (at & 7)) & 1) * 2 ** bit;
    }
    if (x !== rv.getUint32(RAW_DATA_OFFSET + 8 * i, true) || rv.getUint32(RAW_DATA_OFFSET + 8 * i + 4, true) !== 0) bad++;
  }
  t.equal(bad, 0, 'residue i at bits 26i..26i+25');
  t.same(Array.from(raw.subarray(0, 113)), Array.from(p.subarray(12, 125)), 'SEAL bytes up to the residues, as they are');
  t.equal(rv.getBigUint64(16 + 32 + 1, true), 2n, 'a ciphertext of two polynomials');
  t.equal(rv.getFloat64(16 + 32 + 1 + 24, true), 2 ** b.input_scale_bits, 'at scale 2^input_scale_bits');
});

t.test("batch: SEAL's NTT and key layout, and the SRK1 relation, as the spec states them", async (t) => {
  const { primes, sHat } = await batchSecret();
  const bits = Math.log2(N);
  primes.forEach((q, p) => {
    const psi = bexp.ntt.psi[p];
    // psi: a primitive 2N-th root (psi^N = -1), the smallest of them (the odd powers of psi).
    t.equal(powmod(psi, N, q), q - 1, `prime ${q}: psi^N = -1`);
    const psi2 = mulmod(psi, psi, q);
    let smaller = 0;
    for (let k = 0, x = psi; k < N; k++, x = mulmod(x, psi2, q)) if (x < psi) smaller++;
    t.equal(smaller, 0, `prime ${q}: psi = ${psi} is the smallest primitive 2N-th root`);
    // The forward NTT: entry i holds a(psi^(2 bitrev(i) + 1)).
    const ntt = new NegacyclicNtt(q, N);
    const a = Float64Array.from({ length: N }, (_, i) => (i * 7919 + 13) % q);
    const hat = Float64Array.from(a);
    ntt.forward(hat);
    let wrong = 0;
    for (const i of [0, 1, 2, 3, 1000, N - 1]) {
      const x = powmod(psi, 2 * bitrev(i, bits) + 1, q);
      let acc = 0;
      for (let c = N - 1; c >= 0; c--) acc = (mulmod(acc, x, q) + a[c]) % q;
      if (acc !== hat[i]) wrong++;
    }
    t.equal(wrong, 0, `prime ${q}: NTT entry i is the evaluation at psi^(2 bitrev(i) + 1)`);
    // The secret key: ternary, the same integer polynomial modulo every prime.
    const s = Float64Array.from(sHat.subarray(p * N, (p + 1) * N));
    ntt.inverse(s);
    const coeffs = Array.from(s, (x) => centered(x, q));
    t.ok(
      coeffs.every((x) => x >= -1 && x <= 1),
      `prime ${q}: the secret key is ternary`,
    );
    t.same(coeffs.slice(0, 16), bexp.ntt.secret_key_coefficients, `prime ${q}: its first coefficients`);
  });
  // SRK1: a_0 + a_1 s (+ a_2 s^2) = e, small, one integer polynomial modulo every prime.
  const key = readSrk1(decodeWire<QueryHeader>('query', await bfile('query.bin'), 'query.bin').sections[0]);
  let e0: number[] | undefined;
  primes.forEach((q, p) => {
    const e = new Float64Array(N);
    for (let c = 0; c < N; c++) {
      const sc = sHat[p * N + c];
      let acc = key.at(0, p, c),
        pw = 1;
      for (let j = 1; j < key.size; j++) {
        pw = mulmod(pw, sc, q);
        acc = (acc + mulmod(key.at(j, p, c), pw, q)) % q;
      }
      e[c] = acc;
    }
    new NegacyclicNtt(q, N).inverse(e);
    const coeffs = Array.from(e, (x) => centered(x, q));
    t.ok(
      coeffs.every((x) => Math.abs(x) <= 21),
      `prime ${q}: the key's noise is small`,
    );
    if (!e0) {
      e0 = coeffs;
      t.same(coeffs.slice(0, 16), bexp.ntt.rerand_key_noise, 'its first coefficients');
    } else t.same(coeffs, e0, `prime ${q}: the same noise polynomial`);
  });
});

/**
 * The spec's recipe for a SEAL client (docs/wire-format.md, "Building SRK1 with SEAL"): a symmetric
 * encryption of zero, saved uncompressed, is (c_0, c_1) = (-(a s + e), a) in NTT form: SRK1 of
 * size 2 as it is.
 */
async function srk1FromSeal(): Promise<Uint8Array> {
  const s = await CkksSession.open(b.params);
  const { seal } = s;
  const sk = new seal.SecretKey();
  const pt = new seal.Plaintext();
  const ct = new seal.Ciphertext();
  let kg, pk, enc;
  try {
    sk.loadFromArray(s.context, await bfile('secret.key'));
    kg = new seal.KeyGenerator(s.context, sk);
    pk = kg.createPublicKey();
    enc = new seal.Encryptor(s.context, pk, sk);
    s.encoder.encode(new Float64Array(N / 2), 2 ** 20, pt);
    enc.encryptSymmetric(pt, ct);
    const raw = ct.saveToArray(seal.ComprModeType.none) as Uint8Array;
    const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const k = bexp.ntt.primes.length;
    const out = new Uint8Array(16 + 4 * k + 4 * 2 * k * N);
    const o = new DataView(out.buffer);
    out.set(new TextEncoder().encode('SRK1'));
    o.setUint32(4, 2, true);
    o.setUint32(8, k, true);
    o.setUint32(12, N, true);
    bexp.ntt.primes.forEach((q, i) => o.setUint32(16 + 4 * i, q, true));
    for (let i = 0; i < 2 * k * N; i++) o.setUint32(16 + 4 * k + 4 * i, Number(v.getBigUint64(RAW_DATA_OFFSET + 8 * i, true)), true);
    return out;
  } finally {
    release(enc, pk, kg, ct, pt, sk);
    s.close();
  }
}

t.test("batch: the server evaluates the stored query to the expected outputs (and one keyed by SEAL's own zero encryption)", async (t) => {
  t.equal(b.result_size, 2, 'the recipe below is for results of two polynomials');
  const work = await mkdtemp(join(tmpdir(), 'sealed-vectors-'));
  const stack = await startStack(join(bdir, 'model'), work, 1);
  t.teardown(async () => {
    await stack.close();
    await rm(work, { recursive: true, force: true });
  });
  const B = stack.bucket;
  const stored = await bfile('query.bin');
  const q = decodeWire<QueryHeader>('query', stored, 'query.bin');
  const rekeyed = encodeWire<QueryHeader>('query', q.header, [await srk1FromSeal(), ...q.sections.slice(1)]);
  for (const [name, query] of [
    ['the stored query', stored],
    ['the stored ciphertexts with a key made by SEAL', rekeyed],
  ] as const) {
    const key = `q-${sha256(query)}`;
    await stack.store.put({ bucket: B, key }, query, 'query');
    const res = await fetch(`${stack.server.url}/invocations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ encrypted_query_uri: `s3://${B}/${key}`, output_uri: `s3://${B}/r-${key}`, query_sha256: sha256(query) }),
    });
    t.equal(res.status, 200, name);
    const body = (await res.json()) as { layout: string; query_sha256: string };
    t.same({ layout: body.layout, query_sha256: body.query_sha256 }, { layout: 'batch', query_sha256: sha256(query) });
    const { bytes } = await stack.store.get({ bucket: B, key: `r-${key}` }, 2 ** 24, 'result');
    const got = bsession.decryptScores(bytes, { querySha256: sha256(query) });
    t.ok(
      worst(got, bexp.scores) < bexp.tolerance,
      `${name}: within ${bexp.tolerance.toExponential(2)} of the stored scores (${worst(got, bexp.scores).toExponential(2)})`,
    );
    t.same(
      bsession.decrypt(bytes, { querySha256: sha256(query) }).map((p) => p.label),
      bexp.labels,
      `${name}: the same labels`,
    );
    if (query === stored)
      t.same(
        decodeWire<ResultHeader>('result', bytes, 'result').header,
        decodeWire<ResultHeader>('result', await bfile('result.bin'), 'result.bin').header,
        'the same header as result.bin',
      );
  }
});
