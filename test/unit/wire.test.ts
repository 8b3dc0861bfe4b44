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
