// Node: evaluation keys in S3, content-addressed. Every endpoint transport needs them there
// (the S3 form names them in the request, the body form in a header), uploaded once per key set.
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { isSealedError, safeText, SealedError } from '../errors.ts';
import { describeS3Location, formatS3Uri, type ObjectStore, type S3Location } from '../storage/s3.ts';
import { keysLocation, sha256, type S3Route } from './route.ts';

/** The public part of a key set: what the upload reads (never the secret key). */
export interface PublicKeys {
  evaluationKeys: Uint8Array;
  evaluationKeysId: string;
  /** Never read: allowed so that a whole key set can be passed (src/web/server.ts passes an empty one). */
  secretKey?: Uint8Array;
}

// Key objects this process has seen in place, per store: later requests skip the check.
const present = new WeakMap<ObjectStore, Set<string>>();

/**
 * Uploads the evaluation keys under their content id unless the object there already holds them;
 * returns their location. `recheck`: forget that this process saw them in place (the server
 * could not use them: the object was replaced or deleted since).
 */
export async function ensureKeysUploaded(t: S3Route, keys: PublicKeys, o: { recheck?: boolean } = {}): Promise<{ loc: S3Location; uploaded: boolean }> {
  const loc = keysLocation(t, keys.evaluationKeysId);
  const seen = present.get(t.store) ?? new Set<string>();
  present.set(t.store, seen);
  const uri = formatS3Uri(loc);
  if (o.recheck) seen.delete(uri);
  if (seen.has(uri)) return { loc, uploaded: false };
  const inPlace = await keysInPlace(t.store, loc, keys.evaluationKeys, keys.evaluationKeysId);
  if (!inPlace) await putKeys(t.store, loc, keys.evaluationKeys, keys.evaluationKeysId);
  seen.add(uri);
  return { loc, uploaded: !inPlace };
}

/**
 * Whether the object at `loc` holds exactly `bytes` (whose SHA-256 is `id`). A matching size
 * proves nothing (another client's result can have any size, and anyone who can write the
 * object can make it any size); user metadata can be set to anything by whoever writes the
 * object. So: S3's own full-object SHA-256 checksum when the store keeps one (Amazon S3 does
 * for objects written by putKeys, computing and checking it itself), else download and hash
 * (the embedded S3 server keeps no checksums). Either way only content decides.
 */
export async function keysInPlace(store: ObjectStore, loc: S3Location, bytes: Uint8Array, id: string): Promise<boolean> {
  const head = await headWithChecksum(store, loc);
  if (!head || head.size !== bytes.length) return false;
  if (head.sha256 !== undefined) return head.sha256 === id;
  try {
    const got = await store.get(loc, bytes.length, 'evaluation keys');
    return sha256(got.bytes) === id;
  } catch (e) {
    // Replaced or deleted between the HEAD and the GET: not our keys either way.
    if (isSealedError(e) && (e.code === 'not-found' || e.code === 'bad-request')) return false;
    throw e;
  }
}

/** S3's full-object SHA-256 when it has one; a missing key is undefined, even to a caller S3 answers 403 for it (ObjectStore.head settles that). */
function headWithChecksum(store: ObjectStore, loc: S3Location): Promise<{ size: number; sha256?: string } | undefined> {
  return store.head(loc, { checksum: true, deniedAsUnknown: true });
}

/** PutObject with S3's SHA-256 checksum: S3 checks the bytes against it and keeps it for keysInPlace. */
async function putKeys(store: ObjectStore, loc: S3Location, bytes: Uint8Array, id: string): Promise<void> {
  try {
    await store.client.send(
      new PutObjectCommand({
        Bucket: loc.bucket,
        Key: loc.key,
        Body: bytes,
        ContentType: 'application/octet-stream',
        ServerSideEncryption: 'AES256',
        ChecksumAlgorithm: 'SHA256',
        ChecksumSHA256: Buffer.from(id, 'hex').toString('base64'),
      }),
    );
  } catch (e) {
    const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
    if (err.$metadata?.httpStatusCode === 403)
      throw new SealedError(
        'storage',
        `access denied to ${describeS3Location(loc)}`,
        'give your identity write access to your keys prefix (npm run deploy -- policies prints the client policy)',
        { cause: e },
      );
    throw new SealedError(
      'storage',
      `uploading the evaluation keys to ${describeS3Location(loc)} failed (${safeText(err.name ?? 'error', 40)})`,
      'check the S3 endpoint and that the service is reachable; then retry',
      { cause: e },
    );
  }
}

/**
 * Runs `call` (an invocation that uses the uploaded keys). When the server could not use them
 * (`bad-keys` or `not-found`: the object was replaced, or deleted, after this process last saw it
 * in place), checks them again, uploads them if they are not there as they should be, and tries
 * once more.
 */
export async function retryingKeys<T>(t: S3Route, keys: PublicKeys | undefined, call: () => Promise<T>): Promise<{ value: T; keysUploaded: boolean }> {
  try {
    return { value: await call(), keysUploaded: false };
  } catch (e) {
    if (!keys || !isSealedError(e) || (e.code !== 'bad-keys' && e.code !== 'not-found')) throw e;
    const again = await ensureKeysUploaded(t, keys, { recheck: true });
    if (!again.uploaded) throw e;
    return { value: await call(), keysUploaded: true };
  }
}
