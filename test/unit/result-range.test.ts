// The client's range check of batch results (result-range.ts) and its bound in the client part.
// The attack tests (a faulty server's result refused; evaluated once more) are in
// test/light/model-server.test.ts and test/batch-server.test.ts.
import t from 'tap';
import { decryptOrRetry, outOfRange, resultOutOfRange, ResultOutOfRange } from '../../src/client/result-range.ts';
import { parseClientPart } from '../../src/model/client-part.ts';

t.test('counts the records beyond the bound per output ciphertext; NaN is beyond', async (t) => {
  const outs = [Float64Array.from([1, -2, 3, 99]), Float64Array.from([3, -3, NaN, 99]), Float64Array.from([4, 5, 6, 99])];
  // Slot 3 is past the batch's records (`used` 3): never counted.
  t.same(outOfRange(outs, 3, 3, 7), [
    { batch: 7, output: 1, records: 1, of: 3 },
    { batch: 7, output: 2, records: 3, of: 3 },
  ]);
  t.same(outOfRange(outs, 3, 6, 0), [{ batch: 0, output: 1, records: 1, of: 3 }], 'a score equal to the bound is within it');
});

t.test('the refusal tells a corrupt ciphertext from unusual records', async (t) => {
  const corrupt = resultOutOfRange([{ batch: 0, output: 2, records: 8192, of: 8192 }], 480.5);
  t.type(corrupt, ResultOutOfRange);
  t.equal(corrupt.code, 'bad-data');
  t.equal(corrupt.corruptCiphertexts, 1);
  t.match(corrupt.message, /beyond 481 in magnitude.*output 2 of batch 0: 8192 of 8192 records/);
  t.match(corrupt.hint, /corrupt/);
  const some = resultOutOfRange(
    [1, 2, 3, 4, 5].map((output) => ({ batch: 1, output, records: 2, of: 100 })),
    16,
  );
  t.equal(some.corruptCiphertexts, 0);
  t.match(some.message, /output 3 of batch 1: 2 of 100 records; 2 more\)/);
  t.match(some.hint, /outside the data the model was compiled with/);
  // A corrupt ciphertext's garbage lands within the bound now and then: half or more beyond is corrupt.
  t.equal(resultOutOfRange([{ batch: 0, output: 0, records: 69, of: 70 }], 16).corruptCiphertexts, 1, '69 of 70: corrupt');
  t.equal(resultOutOfRange([{ batch: 0, output: 0, records: 35, of: 70 }], 16).corruptCiphertexts, 1, 'half: corrupt');
  t.equal(resultOutOfRange([{ batch: 0, output: 0, records: 34, of: 70 }], 16).corruptCiphertexts, 0, 'fewer than half: unusual records');
});

t.test('the client part refuses an output bound that is not a positive number', async (t) => {
  const params = { scheme: 'ckks', polyModulusDegree: 8192, coeffModulusBits: [60, 40, 60], securityLevel: 128 };
  const part = (output_bound: unknown) =>
    JSON.stringify({ format: 'sealed-client', version: 1, model_id: 'a'.repeat(32), params, input: {}, batch: { params, output_bound } });
  t.equal(parseClientPart(part(12.5), 'm').batch!.output_bound, 12.5);
  t.equal(parseClientPart(part(undefined), 'm').batch!.output_bound, undefined, 'absent (older bundles): accepted, not checked');
  for (const bad of [0, -1, 'big', Infinity, null])
    t.throws(() => parseClientPart(part(bad), 'm'), { code: 'bad-bundle', message: /output bound/ }, String(bad));
});

t.test('decryptOrRetry: a corrupt result is fetched once more, its fetch timed apart from decryption; anything else is thrown', async (t) => {
  const corrupt = resultOutOfRange([{ batch: 0, output: 0, records: 70, of: 70 }], 16);
  const unusual = resultOutOfRange([{ batch: 0, output: 0, records: 1, of: 70 }], 16);
  const decrypt = (r: string) => {
    if (r === 'corrupt') throw corrupt;
    if (r === 'unusual') throw unusual;
    return [[r.length]];
  };
  let fetches = 0;
  const again = async () => {
    fetches++;
    await new Promise((resolve) => setTimeout(resolve, 20));
    return 'good!';
  };
  t.same(await decryptOrRetry('good', decrypt, again), { scores: [[4]], result: 'good', retries: 0, retryMs: 0 }, 'a good result: no fetch');
  const r = await decryptOrRetry('corrupt', decrypt, again);
  t.same([r.scores, r.result, r.retries, fetches], [[[5]], 'good!', 1, 1], 'a corrupt one: fetched again, once');
  t.ok(r.retryMs > 0, `the second fetch's time is reported apart (${r.retryMs.toFixed(1)} ms)`);
  await t.rejects(decryptOrRetry('unusual', decrypt, again), unusual, 'unusual records: thrown, not fetched again');
  await t.rejects(decryptOrRetry('corrupt', decrypt), corrupt, 'no way to fetch again: thrown');
  t.equal(fetches, 1);
});
