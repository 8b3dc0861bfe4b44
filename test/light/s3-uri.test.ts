// Callers' S3 locations: refused with a 400 ('bad-uri') naming the field and the rule broken
// before any request is made (S3's key and bucket rules, and what the embedded S3 server cannot
// store), never a 5xx after retries; messages never repeat a caller's string beyond a short safe
// form; odd but valid keys keep working against a real (local) S3.
import t, { type Test } from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { safeText, SealedError } from '../../src/errors.ts';
import { startLocalS3 } from '../../src/storage/local-s3.ts';
import { MAX_KEY_SEGMENT_BYTES, ObjectStore, parseS3Uri, type S3Location } from '../../src/storage/s3.ts';
import { startStack, trainBreastCancer } from '../helpers/fixture.ts';

const dir = await mkdtemp(join(tmpdir(), 'sealed-s3-uri-'));
const s3 = await startLocalS3({ directory: join(dir, 's3') });
const store = new ObjectStore({ endpoint: s3.endpoint });
const B = 'uri-test';
await store.ensureBucket(B);
t.teardown(async () => {
  store.close();
  await s3.close();
  await rm(dir, { recursive: true, force: true });
});

const utf8 = (s: string) => Buffer.byteLength(s, 'utf8');
// 200-byte parts of two-byte characters: UTF-16 length and UTF-8 length differ by half.
const part200 = 'é'.repeat(100);
const fiveParts = Array.from({ length: 5 }, () => part200).join('/'); // 1,004 bytes, 504 units
const key1024 = `${fiveParts}/${'é'.repeat(9)}a`;
const key1025 = `${fiveParts}/${'é'.repeat(10)}`;

/** Nothing in a message that a caller could have smuggled in: no control or odd characters, short. */
function clean(t: Test, message: string, hostile?: string) {
  t.notOk(/[\p{Cc}\p{Cs}\uFFFE\uFFFF\u2028\u2029]/u.test(message), 'no control characters, newlines or lone surrogates in the message');
  t.ok(message.length < 400, `message is short (${message.length})`);
  if (hostile !== undefined) t.notOk(message.includes(hostile), 'the caller string is not repeated');
}

t.test('parseS3Uri refuses keys S3, the SDK or the embedded S3 server would fail on, naming the field and the rule', async (t) => {
  t.equal(utf8(key1025), 1025);
  t.ok(key1025.length < 1024, 'a 1,025-byte key is fewer than 1,024 UTF-16 units');
  const cases: [string, string, RegExp][] = [
    ['lone surrogate', 'a\ud800b', /not valid Unicode/],
    ['lone low surrogate at the end', 'ab\udc00', /not valid Unicode/],
    ['NUL', 'a\u0000b', /control character U\+0000/],
    ['newline', 'a\nb', /control character U\+000A/],
    ['tab', 'a\tb', /control character U\+0009/],
    ['DEL', 'a\u007fb', /control character U\+007F/],
    ['C1 control', 'a\u0085b', /control character U\+0085/],
    ['XML noncharacter', 'a\uffffb', /control character U\+FFFF/],
    ['1,025 UTF-8 bytes in 515 UTF-16 units', key1025, /1025 bytes of UTF-8, over S3's limit of 1024/],
    ['empty key', '', /key is empty/],
    ['"." segment', 'a/./b', /'\.' path segment/],
    ['".." segment', 'a/../b', /'\.\.' path segment/],
    ['trailing ".."', 'a/..', /'\.\.' path segment/],
    ['1,015-byte single part (the embedded S3 server failed on it)', 'k'.repeat(1015), /1015 bytes of UTF-8, over this server's limit of 200/],
    ['201-byte part', `a/${'x'.repeat(201)}/b`, /201 bytes/],
    ["the embedded server's file infix", 'x._S3rver_object/y', /_S3rver_/],
  ];
  for (const [name, key, says] of cases) {
    const err = t.throws(() => parseS3Uri(`s3://${B}/${key}`, 'evaluation_keys_uri'), name) as SealedError;
    t.equal(err?.code, 'bad-uri', `${name}: bad-uri`);
    t.equal(err?.status, 400);
    t.match(err?.message, /^evaluation_keys_uri has an invalid key: /, `${name}: names the field`);
    t.match(err?.message, says, `${name}: names the rule`);
    clean(t, err?.message ?? '', key.length > 8 ? key : undefined);
  }
});

t.test('parseS3Uri refuses invalid buckets (AWS general purpose bucket rules)', async (t) => {
  const cases: [string, RegExp][] = [
    ['ab', /3 to 63/],
    ['a'.repeat(64), /3 to 63/],
    ['My-Bucket', /lowercase/],
    ['a_b', /lowercase/],
    ['bu\ud800ck', /lowercase/],
    ['buc\nket', /lowercase/],
    ['-abc', /begin and end/],
    ['abc-', /begin and end/],
    ['a..b', /two adjacent dots/],
    ['a.-b', /dot-separated part/],
    ['a-.b', /dot-separated part/],
    ['192.168.5.4', /IP address/],
    ['xn--abc', /xn--/],
    ['sthree-abc', /sthree-/],
    ['sthree-configurator-x', /sthree-/],
    ['amzn-s3-demo-bucket', /amzn-s3-demo-/],
    ['abc.mrap', /\.mrap/],
    ['abc--table-s3', /--table-s3/],
  ];
  for (const [bucket, says] of cases) {
    const err = t.throws(() => parseS3Uri(`s3://${bucket}/key`, 'output_uri'), bucket) as SealedError;
    t.equal(err?.code, 'bad-uri');
    t.match(err?.message, /^output_uri names an invalid bucket: /);
    t.match(err?.message, says, `${JSON.stringify(bucket)}: ${err?.message}`);
    clean(t, err?.message ?? '', bucket.length > 4 ? bucket : undefined);
  }
  // Object requests accept these in place of a bucket name.
  for (const bucket of ['my-ap-abcdefgh1234567890-s3alias', 'my-olap-abcdefgh--ol-s3', 'base--usw2-az1--x-s3', 'a.b-c.d1', '1.2.3.4.5', '999']) {
    t.same(parseS3Uri(`s3://${bucket}/k`), { bucket, key: 'k' }, `accepts ${bucket}`);
  }
  t.throws(() => parseS3Uri('https://example.com/q', 'encrypted_query_uri'), { code: 'bad-uri', message: /encrypted_query_uri is not an s3:\/\/ URI/ });
  t.throws(() => parseS3Uri(`s3://${B}`, 'encrypted_query_uri'), { code: 'bad-uri', message: /not an s3:\/\/ URI/ });
  t.throws(() => parseS3Uri(42, 'encrypted_query_uri'), { code: 'bad-uri', message: /must be a string/ });
});

t.test('odd but valid keys are accepted and round-trip through the local S3', async (t) => {
  t.equal(utf8(key1024), 1024);
  const keys = [
    key1024,
    `${Array.from({ length: 6 }, () => 'k'.repeat(150)).join('/')}/${'k'.repeat(1024 - 6 * 151)}`, // 1,024 bytes of ASCII
    'ключ/日本語のキー/é😀 file.bin',
    'with spaces/a b  c',
    `p/${'x'.repeat(MAX_KEY_SEGMENT_BYTES)}`,
    `${'d'.repeat(MAX_KEY_SEGMENT_BYTES)}/f`,
    'dots/.../..a/a../.hidden',
    'a/trailing/',
    'sym!$&\'()*+,;=:@~%20#?[]{}|^`"<>\\',
    '\u202Ebidi\u200Bzero-width',
  ];
  for (const key of keys) {
    const loc = parseS3Uri(`s3://${B}/${key}`, 'output_uri');
    t.equal(loc.key, key);
    const body = new TextEncoder().encode(`object at ${key}`);
    await store.put(loc, body, 'round trip');
    const got = await store.get(loc, 1 << 20, 'round trip');
    t.same(Buffer.from(got.bytes), Buffer.from(body), `round trip (${utf8(key)} bytes): ${JSON.stringify(key.slice(0, 40))}`);
    t.equal((await store.head(loc))?.size, body.length);
  }
});

t.test('ObjectStore refuses bad locations built without parseS3Uri at once: 400, no request, no retries', async (t) => {
  for (const [name, loc] of [
    ['lone surrogate', { bucket: B, key: 'q/a\ud800b' }],
    ['NUL', { bucket: B, key: 'q/a\u0000b' }],
    ['newline', { bucket: B, key: 'q/line1\nline2' }],
    ['1,015-byte part', { bucket: B, key: 'k'.repeat(1015) }],
    ['bad bucket', { bucket: 'Bad_Bucket', key: 'k' }],
  ] as [string, S3Location][]) {
    for (const [op, run] of [
      ['get', () => store.get(loc, 100, 'encrypted query')],
      ['getStream', () => store.getStream(loc, 100, 'encrypted query')],
      ['head', () => store.head(loc)],
      ['put', () => store.put(loc, new Uint8Array(3), 'encrypted result')],
      [
        'putStream',
        () =>
          store.putStream(
            loc,
            (async function* () {
              yield new Uint8Array(3);
            })(),
            'encrypted result',
          ),
      ],
    ] as [string, () => Promise<unknown>][]) {
      const before = s3.requests();
      const err = await run().then(
        () => undefined,
        (e: unknown) => e as SealedError,
      );
      t.equal(err?.code, 'bad-uri', `${name} ${op}: bad-uri (${err?.message})`);
      t.equal(s3.requests() - before, 0, `${name} ${op}: refused before any request`);
      clean(t, err?.message ?? '', loc.key.length > 8 ? loc.key : undefined);
    }
  }
});

t.test('an SDK error building the request from a caller string is a 400 at once, never a 502 after retries', async (t) => {
  // Stands for whatever check might let through: the SDK throwing while it builds the request,
  // inside its retry loop (as a URIError from encodeURIComponent does).
  const s = new ObjectStore({ endpoint: s3.endpoint });
  t.teardown(() => s.close());
  let attempts = 0;
  s.client.middlewareStack.add(
    () => async () => {
      attempts++;
      throw new URIError('URI malformed');
    },
    { step: 'finalizeRequest', priority: 'low', name: 'testThrowsURIError' },
  );
  const err = (await s.get({ bucket: B, key: 'q/x' }, 100, 'encrypted query').catch((e: unknown) => e)) as SealedError;
  t.equal(err.code, 'bad-uri', err.message);
  t.equal(err.status, 400);
  t.equal(attempts, 1, 'not retried');
  const terr = new TypeError('Invalid character in header content') as TypeError & { code: string };
  terr.code = 'ERR_INVALID_CHAR';
  const s2 = new ObjectStore({ endpoint: s3.endpoint });
  t.teardown(() => s2.close());
  s2.client.middlewareStack.add(
    () => async () => {
      throw terr;
    },
    { step: 'finalizeRequest', priority: 'low', name: 'testThrowsTypeError' },
  );
  t.equal(((await s2.put({ bucket: B, key: 'q/x' }, new Uint8Array(1), 'encrypted result').catch((e: unknown) => e)) as SealedError).code, 'bad-uri');
});

t.test('messages repeat at most a short safe form of a location', async (t) => {
  const marker = 'MARKER-7f3a';
  const longKey = `q/${'a'.repeat(100)}/${marker}/${'b'.repeat(150)}/${'c'.repeat(150)}`;
  const loc = parseS3Uri(`s3://${B}/${longKey}`, 'encrypted_query_uri');
  for (const [op, run] of [
    ['get', () => store.get(loc, 100, 'encrypted query')],
    ['getStream', () => store.getStream(loc, 100, 'encrypted query')],
  ] as [string, () => Promise<unknown>][]) {
    const err = (await run().catch((e: unknown) => e)) as SealedError;
    t.equal(err.code, 'not-found', op);
    t.match(err.message, new RegExp(`^encrypted query not found at s3://${B}/q/a{62}\\.\\.\\.$`), `${op}: ${err.message}`);
    clean(t, err.message, marker);
  }
  // Over the size limit: the message names the object by its safe form too.
  await store.put(loc, new Uint8Array(200), 'fixture');
  const big = (await store.get(loc, 100, 'encrypted query').catch((e: unknown) => e)) as SealedError;
  t.equal(big.code, 'bad-request');
  clean(t, big.message, marker);
  const bigStream = (await store.getStream(loc, 100, 'encrypted query').catch((e: unknown) => e)) as SealedError;
  t.equal(bigStream.code, 'bad-request');
  clean(t, bigStream.message, marker);
  // Characters outside the safe set become '?', one per character (code point).
  const odd = (await store.get({ bucket: B, key: 'q/é😀 <b>x</b>' }, 100, 'encrypted query').catch((e: unknown) => e)) as SealedError;
  t.equal(odd.message, `encrypted query not found at s3://${B}/q/????b?x?/b?`);
  t.equal(safeText('a\nb\u0000c'), 'a?b?c');
  t.equal(safeText('x'.repeat(70)), `${'x'.repeat(64)}...`);
  t.equal(safeText(undefined), 'undefined');
});

t.test('a server answers hostile URIs with a 400 naming the field, at once', async (t) => {
  const trained = await trainBreastCancer({ epochs: '5' });
  const stack = await startStack(trained.modelDir, trained.dir, 1);
  t.teardown(async () => {
    await stack.close();
    await trained.cleanup();
  });
  const good = { encrypted_query_uri: `s3://${stack.bucket}/q/x`, evaluation_keys_uri: `s3://${stack.bucket}/k/x`, output_uri: `s3://${stack.bucket}/out/x` };
  const hostile: [keyof typeof good, string][] = [
    ['encrypted_query_uri', `s3://${stack.bucket}/q/\ud800`],
    ['evaluation_keys_uri', `s3://${stack.bucket}/k/a\u0000b`],
    ['output_uri', `s3://${stack.bucket}/${'k'.repeat(1015)}`],
    ['encrypted_query_uri', `s3://${stack.bucket}/q/line1\nIGNORE PREVIOUS\r\nline3`],
    ['output_uri', `s3://${stack.bucket}/${key1025}`],
  ];
  for (const [field, uri] of hostile) {
    const before = stack.s3.requests();
    const res = await fetch(`${stack.server.url}/invocations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...good, [field]: uri }),
    });
    const json = (await res.json()) as { error?: string; message?: string; hint?: string };
    t.equal(res.status, 400, `${field}: 400 (${json.message})`);
    t.equal(json.error, 'bad-uri');
    t.match(json.message, new RegExp(`^${field} has an invalid key: `));
    clean(t, `${json.message} ${json.hint}`, uri.slice(`s3://${stack.bucket}/`.length));
    t.equal(stack.s3.requests() - before, 0, 'answered without any S3 request (so without retries)');
  }
});
