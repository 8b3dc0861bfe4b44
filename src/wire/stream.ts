// The wire format (format.ts) read and written as a stream: a query of a gigabyte is parsed
// section by section as it arrives, and a result is written section by section as it is made,
// so neither is ever whole in memory.
import { SealedError } from '../errors.ts';
import { checkPrefix, decodeWire, encodeWire, MAX_HEADER, MAX_SECTIONS, QUERY_UNCHANGED_HINT, type WireKind } from './format.ts';

const MAX_SECTION = 64 * 1024 * 1024;

/** Pulls exact byte counts out of a chunked stream. */
class Reader {
  private readonly it: AsyncIterator<Uint8Array>;
  private buf: Uint8Array = new Uint8Array(0);
  private pos = 0;
  consumed = 0;

  constructor(stream: AsyncIterable<Uint8Array>) {
    this.it = stream[Symbol.asyncIterator]();
  }

  /**
   * n bytes, or fewer if the stream ends first. `own`: the result has its own buffer (it can be
   * transferred to a worker), else it may be a view of a chunk.
   */
  async take(n: number, own = false): Promise<Uint8Array> {
    if (this.buf.length - this.pos >= n) {
      // Uint8Array's slice copies; a Buffer's slice is a view, which a transfer to a worker would detach with the whole input.
      const out = own ? Uint8Array.prototype.slice.call(this.buf, this.pos, this.pos + n) : this.buf.subarray(this.pos, this.pos + n);
      this.pos += n;
      this.consumed += n;
      return out;
    }
    const out = new Uint8Array(n);
    const have = await this.takeInto(out);
    return have === n ? out : out.subarray(0, have);
  }

  /** Fills `dst` from the stream (no allocation, one copy); the bytes written, fewer if the stream ends first. */
  async takeInto(dst: Uint8Array): Promise<number> {
    let have = 0;
    while (have < dst.length) {
      if (this.pos >= this.buf.length) {
        const next = await this.it.next();
        if (next.done) break;
        this.buf = next.value;
        this.pos = 0;
        continue;
      }
      const k = Math.min(dst.length - have, this.buf.length - this.pos);
      dst.set(this.buf.subarray(this.pos, this.pos + k), have);
      have += k;
      this.pos += k;
    }
    this.consumed += have;
    return have;
  }

  async atEnd(): Promise<boolean> {
    while (this.pos >= this.buf.length) {
      const next = await this.it.next();
      if (next.done) return true;
      this.buf = next.value;
      this.pos = 0;
    }
    return false;
  }
}

export interface WireStream<H> {
  header: H;
  count: number;
  /** Each section once, in order; ends with an error if the stream is truncated or has trailing bytes. */
  sections: AsyncGenerator<Uint8Array>;
  /**
   * The next section is read straight into `dst` if it is `dst.length` bytes long, and yielded
   * as `dst` itself; a section of another length is read as usual. Once, for the next section
   * only. A batch query's sections go to their place in the server's shared buffer this way:
   * a fresh array per section, then a copy, was a gigabyte of each per LeNet batch.
   */
  into(dst: Uint8Array): void;
}

export interface StreamLimits {
  /** Most sections the reader accepts (checked before any section is read). */
  maxSections?: number;
  /** Byte bounds of one section (checked before its bytes are read). */
  minSection?: number;
  maxSection?: number;
}

/**
 * Reads the header (checked as decodeWire checks it) and returns the sections as they arrive.
 * The section count and every section length are checked against the limits (which may depend
 * on the header) before anything is buffered, so a small object cannot make the reader hold more
 * than one section.
 */
export async function readWireStream<H>(
  kind: WireKind,
  stream: AsyncIterable<Uint8Array>,
  what: string,
  limitsFor: StreamLimits | ((header: H) => StreamLimits) = {},
): Promise<WireStream<H>> {
  const r = new Reader(stream);
  const head = await r.take(12);
  const code = kind === 'keys' ? 'bad-keys' : 'bad-query';
  const fail = (why: string) => new SealedError(code, `${what} ${why}`, QUERY_UNCHANGED_HINT);
  checkPrefix(kind, head, fail);
  if (head.length < 12) throw fail('is truncated (header)');
  const hl = new DataView(head.buffer, head.byteOffset).getUint32(8, true);
  if (hl > MAX_HEADER) throw fail('is truncated (header)');
  const rest = await r.take(hl + 4);
  if (rest.length < hl + 4) throw fail('is truncated (header)');
  // The fixed part and the header are small: reuse the whole-buffer checks on them.
  const prefix = new Uint8Array(12 + hl + 4);
  prefix.set(head);
  prefix.set(rest, 12);
  const count = new DataView(rest.buffer, rest.byteOffset).getUint32(hl, true);
  // decodeWire sees the header with no sections; the count is checked here instead.
  prefix.fill(0, 12 + hl);
  const { header } = decodeWire<H>(kind, prefix, what);
  const limits = typeof limitsFor === 'function' ? limitsFor(header) : limitsFor;
  const maxSections = Math.min(limits.maxSections ?? MAX_SECTIONS, MAX_SECTIONS);
  if (count > maxSections) throw fail(`declares ${count} sections; at most ${maxSections} are accepted`);
  const minSection = Math.max(limits.minSection ?? 1, 1);
  const maxSection = Math.min(limits.maxSection ?? MAX_SECTION, MAX_SECTION);
  let dst: Uint8Array | undefined;
  async function* sections(): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < count; i++) {
      const len = await r.take(4);
      if (len.length < 4) throw fail('is truncated');
      const n = new DataView(len.buffer, len.byteOffset).getUint32(0, true);
      if (n < minSection || n > maxSection)
        throw fail(`has a section of ${n} bytes (section ${i + 1} of ${count}); sections of this model are ${minSection} to ${maxSection} bytes`);
      const target = dst?.length === n ? dst : undefined;
      dst = undefined;
      if (target) {
        if ((await r.takeInto(target)) < n) throw fail('is truncated');
        yield target;
        continue;
      }
      const bytes = await r.take(n, true);
      if (bytes.length < n) throw fail('is truncated');
      yield bytes;
    }
    if (!(await r.atEnd())) throw fail('has trailing bytes');
  }
  return { header, count, sections: sections(), into: (d) => (dst = d) };
}

/** The wire encoding of `count` sections, produced as they come. */
export async function* writeWireStream<H>(kind: WireKind, header: H, count: number, sections: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const prefix = encodeWire(kind, header, []);
  new DataView(prefix.buffer).setUint32(prefix.length - 4, count, true);
  yield prefix;
  let n = 0;
  for await (const s of sections) {
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, s.length, true);
    yield len;
    yield s;
    n++;
  }
  if (n !== count) throw new SealedError('internal', `wrote ${n} result sections, declared ${count}`);
}
