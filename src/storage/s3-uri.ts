// S3 locations: the URI syntax and the key and bucket rules of S3, the SDK and the embedded
// server, checked before any request is made.
import { safeText, SealedError } from '../errors.ts';

export interface S3Location {
  bucket: string;
  key: string;
}

/** S3's limit on an object key: 1,024 bytes of UTF-8. */
export const MAX_KEY_BYTES = 1024;

/**
 * This system's limit on each '/'-separated part of a key, in UTF-8 bytes; not S3's, which has
 * none below MAX_KEY_BYTES. The embedded S3 server (s3rver) stores each directory part of a key
 * as a directory and the last part as file names with up to 36 bytes of its own added (the
 * longest: "<part>._S3rver_object.<16 hex>.tmp"), under file systems' limit of 255 bytes a name:
 * measured, a last part of 220 bytes (or a directory part of 256) fails there with a 500, retried
 * four times and answered 502. One rule everywhere, so that a key that works with the embedded
 * server works on AWS and the other way round; 200 leaves room below the measured 219.
 */
export const MAX_KEY_SEGMENT_BYTES = 200;

// Not in lib es2023's typings; Node (>= 20) has it.
type WellFormed = { isWellFormed(): boolean };

// C0 controls, DEL, C1 controls, and the two noncharacters XML 1.0 does not allow (S3 answers in
// XML, quoting the key in errors).
const CONTROL = /[\p{Cc}\uFFFE\uFFFF]/u;

/** Why `key` cannot name an object here, or undefined. The reasons quote none of the key. */
export function keyProblem(key: string): string | undefined {
  if (key === '') return 'the key is empty';
  if (!(key as unknown as WellFormed).isWellFormed()) return 'the key is not valid Unicode text (it holds an unpaired UTF-16 surrogate)';
  const control = CONTROL.exec(key);
  if (control) return `the key holds the control character U+${control[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
  // Bytes, not UTF-16 units: 'é' is one unit and two bytes.
  const bytes = Buffer.byteLength(key, 'utf8');
  if (bytes > MAX_KEY_BYTES) return `the key is ${bytes} bytes of UTF-8, over S3's limit of ${MAX_KEY_BYTES}`;
  for (const part of key.split('/')) {
    // Resolved away by anything that treats the key as a path (URL normalisation, the embedded
    // server's file names: it wrote 'a/../../x' outside the bucket's directory): the object read
    // or written would not be the one named.
    if (part === '.' || part === '..') return `the key has a '${part}' path segment`;
    const n = Buffer.byteLength(part, 'utf8');
    if (n > MAX_KEY_SEGMENT_BYTES)
      return `a '/'-separated part of the key is ${n} bytes of UTF-8, over this server's limit of ${MAX_KEY_SEGMENT_BYTES} bytes a part`;
    // The embedded server names its own files <part>._S3rver_<resource>: a key part with this
    // infix can collide with them (a directory where a file is: a 500 there).
    if (part.includes('._S3rver_')) return "the key holds '._S3rver_', reserved by the embedded S3 server for its own files";
  }
  return undefined;
}

/**
 * Why `bucket` cannot name a bucket, or undefined: AWS's rules for general purpose bucket names.
 * Names ending in -s3alias or --ol-s3 (access point aliases) and --x-s3 (directory buckets) are
 * reserved for those, which object requests accept in place of a bucket name, so they are
 * allowed.
 */
export function bucketProblem(bucket: string): string | undefined {
  if (bucket.length < 3 || bucket.length > 63) return 'bucket names are 3 to 63 characters long';
  if (!/^[a-z0-9.-]+$/.test(bucket)) return 'bucket names hold only lowercase letters, digits, dots and hyphens';
  if (!/^[a-z0-9]/.test(bucket) || !/[a-z0-9]$/.test(bucket)) return 'bucket names begin and end with a letter or digit';
  if (bucket.includes('..')) return 'bucket names hold no two adjacent dots';
  // Each dot-separated part is a DNS label in virtual-hosted-style requests.
  if (bucket.includes('.-') || bucket.includes('-.')) return 'each dot-separated part of a bucket name begins and ends with a letter or digit';
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(bucket)) return 'bucket names are not IP addresses';
  for (const prefix of ['xn--', 'sthree-', 'amzn-s3-demo-']) if (bucket.startsWith(prefix)) return `bucket names do not begin with ${prefix} (reserved by AWS)`;
  for (const suffix of ['.mrap', '--table-s3']) if (bucket.endsWith(suffix)) return `bucket names do not end with ${suffix} (reserved by AWS)`;
  return undefined;
}

export const BUCKET_HINT = 'bucket names are 3-63 lowercase letters, digits, dots and hyphens, beginning and ending with a letter or digit';
export const KEY_HINT = `keys are 1-${MAX_KEY_BYTES} bytes of UTF-8 text without control characters or '.'/'..' segments, each '/'-separated part at most ${MAX_KEY_SEGMENT_BYTES} bytes`;

/**
 * Parses a caller's s3://bucket/key, refusing ('bad-uri', a 400) what S3, the SDK or the embedded
 * S3 server would fail on or misread, before any request is made: such failures would otherwise
 * surface as 5xx after retries. Messages name `field` and the rule broken, never the URI.
 */
export function parseS3Uri(uri: unknown, field = 'uri'): S3Location {
  if (typeof uri !== 'string') throw new SealedError('bad-uri', `${field} must be a string of the form s3://bucket/key`);
  // The s flag: a newline in the key is a key problem, reported as such.
  const m = /^s3:\/\/([^/]*)\/(.*)$/s.exec(uri);
  if (!m) throw new SealedError('bad-uri', `${field} is not an s3:// URI (expected s3://bucket/key)`, 'give the S3 location as s3://bucket/key');
  const [, bucket, key] = m;
  const bad = bucketProblem(bucket);
  if (bad) throw new SealedError('bad-uri', `${field} names an invalid bucket: ${bad}`, BUCKET_HINT);
  const badKey = keyProblem(key);
  if (badKey) throw new SealedError('bad-uri', `${field} has an invalid key: ${badKey}`, KEY_HINT);
  return { bucket, key };
}

/** Refuses a location built without parseS3Uri that S3 could not take (see parseS3Uri). */
export function checkLocation(loc: S3Location, what: string): void {
  const bad = bucketProblem(loc.bucket);
  if (bad) throw new SealedError('bad-uri', `the S3 location for ${what} names an invalid bucket: ${bad}`, BUCKET_HINT);
  const badKey = keyProblem(loc.key);
  if (badKey) throw new SealedError('bad-uri', `the S3 location for ${what} has an invalid key: ${badKey}`, KEY_HINT);
}

/** The location as a URI, exactly: for requests and comparisons, not for messages. */
export const formatS3Uri = (l: S3Location) => `s3://${l.bucket}/${l.key}`;

/**
 * The location as messages show it: the bucket and the first 64 characters of the key, others
 * than [0-9A-Za-z_.-/:=+@~] as '?'. Never the whole caller's string, which may be 1,024 bytes of
 * anything (newlines, control characters, text that reads as a message of its own).
 */
export const describeS3Location = (l: S3Location) => `s3://${safeText(l.bucket, 63)}/${safeText(l.key, 64)}`;
