// Listing an S3 prefix, as Batch Transform's S3Prefix input does (every key that begins with it),
// for the emulator and for the transform client's progress and resumption. src/storage has no
// listing (the server never lists); this uses its client.
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { describeS3Location, type ObjectStore, type S3Location } from '../storage/s3.ts';
import { SealedError } from '../errors.ts';

export interface ListedObject {
  key: string;
  size: number;
}

/** Every object whose key begins with `prefix.key`, in key order (S3 lists in UTF-8 byte order). */
export async function listPrefix(store: ObjectStore, prefix: S3Location, o: { suffix?: string } = {}): Promise<ListedObject[]> {
  const out: ListedObject[] = [];
  let token: string | undefined;
  try {
    do {
      const r = await store.client.send(new ListObjectsV2Command({ Bucket: prefix.bucket, Prefix: prefix.key, ContinuationToken: token }));
      for (const c of r.Contents ?? []) {
        if (!c.Key || c.Key.endsWith('/')) continue; // "folder" markers hold no input
        if (o.suffix && !c.Key.endsWith(o.suffix)) continue;
        out.push({ key: c.Key, size: c.Size ?? 0 });
      }
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
  } catch (e) {
    const status = (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (status === 403)
      throw new SealedError(
        'storage',
        `cannot list ${describeS3Location(prefix)}: access denied`,
        'give this identity s3:ListBucket with an s3:prefix condition covering that prefix (npm run deploy -- policies)',
        { cause: e },
      );
    throw new SealedError(
      'storage',
      `cannot list ${describeS3Location(prefix)} (${(e as Error).name ?? 'error'})`,
      'check the bucket, the S3 endpoint and that it is reachable; then retry',
      { cause: e },
    );
  }
  return out.sort((a, b) => Buffer.compare(Buffer.from(a.key), Buffer.from(b.key)));
}
