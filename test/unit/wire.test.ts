import t from 'tap';
import { decodeWire, encodeWire } from '../../src/wire/format.ts';

const sections = [new Uint8Array([1, 2, 3]), new Uint8Array(1000).fill(7), new Uint8Array(0)];
const header = { model_id: 'abc', params: 'ckks-8192-60.60-128', records: 3 };

t.test('round trip', async (t) => {
  const b = encodeWire('query', header, sections);
  const m = decodeWire<typeof header>('query', b, 'q');
  t.same(m.header, header);
  t.same(
    m.sections.map((s) => Array.from(s)),
    sections.map((s) => Array.from(s)),
  );
});

t.test('every truncation and a trailing byte are refused with a clear error', async (t) => {
  const b = encodeWire('query', header, sections);
  let refused = 0;
  for (let n = 0; n < b.length; n += 37) {
    try {
      decodeWire('query', b.subarray(0, n), 'the query');
    } catch (e) {
      if (/the query (is truncated|is not a sealed object|has a corrupted header|has trailing)/.test((e as Error).message)) refused++;
    }
  }
  t.equal(refused, Math.ceil(b.length / 37), 'all truncations refused');
  const longer = new Uint8Array(b.length + 1);
  longer.set(b);
  t.throws(() => decodeWire('query', longer, 'the query'), { message: /trailing bytes/ });
});

t.test('kind, version and absurd lengths are checked', async (t) => {
  const b = encodeWire('keys', { params: 'x', galois_steps: [], relin: false }, [new Uint8Array(4)]);
  t.throws(() => decodeWire('query', b, 'the query'), { code: 'bad-query', message: /is a sealed keys object, not query/ });
  const v = new Uint8Array(b);
  v[6] = 9;
  t.throws(() => decodeWire('keys', v, 'the keys'), { code: 'bad-keys', message: /wire version 9/ });
  const huge = new Uint8Array(b);
  new DataView(huge.buffer).setUint32(8, 2 ** 31, true);
  t.throws(() => decodeWire('keys', huge, 'the keys'), { message: /truncated/ });
});

t.test('streamed sections own their memory, even when the stream yields one Node Buffer', async (t) => {
  const { readWireStream } = await import('../../src/wire/stream.ts');
  const parts = sections.filter((s) => s.length > 0); // the stream reader refuses empty sections
  const whole = Buffer.from(encodeWire('query', header, parts));
  async function* once() {
    yield whole;
  }
  const s = await readWireStream<typeof header>('query', once(), 'q');
  const got: Uint8Array[] = [];
  for await (const sec of s.sections) got.push(sec);
  // A section is transferred to a worker: sharing the input's buffer would detach all of it.
  t.ok(
    got.every((g) => g.buffer !== whole.buffer && g.byteLength === g.buffer.byteLength),
    'each section has a buffer of its own',
  );
  t.same(
    got.map((g) => Array.from(g)),
    parts.map((s) => Array.from(s)),
  );
});

t.test('into: the next section of the right length is read straight into the place given, across chunks', async (t) => {
  const { readWireStream } = await import('../../src/wire/stream.ts');
  const parts = [Uint8Array.from({ length: 300 }, (_, i) => i % 251), Uint8Array.from({ length: 200 }, (_, i) => (7 * i) % 256), Uint8Array.of(9, 8, 7)];
  const whole = encodeWire('query', header, parts);
  async function* chunked() {
    for (let at = 0; at < whole.length; at += 37) yield whole.slice(at, at + 37); // sections span chunks
  }
  const s = await readWireStream<typeof header>('query', chunked(), 'q');
  const arena = new Uint8Array(new SharedArrayBuffer(600));
  const place = arena.subarray(100, 400);
  s.into(place);
  const first = await s.sections.next();
  t.equal(first.value, place, 'the section is the place given');
  t.same(Array.from(arena.subarray(100, 400)), Array.from(parts[0]), 'its bytes are there');
  t.ok(arena.subarray(0, 100).every((b) => b === 0) && arena.subarray(400).every((b) => b === 0), 'nothing written around it');
  s.into(arena.subarray(0, 150)); // a section of 200 bytes does not fit: read as usual
  const second = await s.sections.next();
  t.not(second.value!.buffer, arena.buffer, 'a section of another length gets its own buffer');
  t.same(Array.from(second.value!), Array.from(parts[1]));
  t.ok(
    arena.subarray(0, 100).every((b) => b === 0),
    'and the place is left alone',
  );
  const third = await s.sections.next(); // into is for one section only
  t.not(third.value!.buffer, arena.buffer);
  t.same(Array.from(third.value!), [9, 8, 7]);
  t.ok((await s.sections.next()).done);
});

t.test('into: a stream that ends inside the section is refused as truncated', async (t) => {
  const { readWireStream } = await import('../../src/wire/stream.ts');
  const whole = encodeWire('query', header, [new Uint8Array(64).fill(5)]);
  async function* cut() {
    yield whole.subarray(0, whole.length - 10);
  }
  const s = await readWireStream<typeof header>('query', cut(), 'the query');
  s.into(new Uint8Array(64));
  await t.rejects(s.sections.next(), { message: /the query is truncated/ });
});
