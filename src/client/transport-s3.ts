// Node: the S3 form of an endpoint transport. The keys (once, under their content id) and the
// query go to S3, the JSON request names them and the result's location, the result comes back
// from S3. Any size, any layout, and the only form async endpoints take.
import { formatS3Uri } from '../storage/s3.ts';
import { invokeWithKeys } from './invoke.ts';
import { ensureKeysUploaded } from './keys-upload.ts';
import { requestLocations, sha256, type S3Route } from './route.ts';
import type { Transport } from './transport.ts';

const now = () => performance.now();
const round = (v: number) => Math.round(v * 100) / 100;

/** `ms`: upload (keys and query, in parallel), invoke, download. */
export function s3RouteTransport(t: S3Route): Transport {
  return {
    async evaluate(query, keys, info) {
      const loc = requestLocations(t);
      const t0 = now();
      // ensureKeysUploaded reads only the public part; the secret key is not given to transports.
      const publicKeys = keys && { evaluationKeys: keys.bytes, evaluationKeysId: keys.id };
      const [k] = await Promise.all([publicKeys && ensureKeysUploaded(t, publicKeys), t.store.put(loc.query, query, 'encrypted query')]);
      const t1 = now();
      const request: Record<string, string> = {
        encrypted_query_uri: formatS3Uri(loc.query),
        output_uri: formatS3Uri(loc.result),
        query_sha256: info?.querySha256 ?? sha256(query),
      };
      if (k) request.evaluation_keys_uri = formatS3Uri(k.loc);
      const invoked = await invokeWithKeys(t, request, publicKeys);
      const t2 = now();
      const { bytes: result } = await t.store.get(loc.result, 2 ** 31, 'encrypted result');
      const t3 = now();
      return {
        result,
        keysUploaded: (k?.uploaded ?? false) || invoked.keysUploaded,
        ms: { upload: round(t1 - t0), invoke: round(t2 - t1), download: round(t3 - t2) },
        server: invoked.server,
        via: 's3',
      };
    },
    batch: true,
  };
}
