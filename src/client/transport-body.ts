// Node: the body form of an endpoint transport (issue #17). The query is the request's body
// (application/octet-stream, docs/wire-format.md) and the result the response's: no query or
// result objects, two S3 round trips fewer than the S3 form. The evaluation keys, when the layout
// needs them, are still uploaded once to S3 under their content id and named by the header
// `X-Amzn-SageMaker-Custom-Attributes: keys=<s3 uri>` (InvokeEndpoint's CustomAttributes).
import { formatS3Uri } from '../storage/s3.ts';
import { invokeBodyWithKeys, keysAttribute } from './invoke.ts';
import { ensureKeysUploaded } from './keys-upload.ts';
import { bodyAvailable, keysLocation, type S3Route } from './route.ts';
import { choosePayload, type Transport } from './transport.ts';

const now = () => performance.now();
const round = (v: number) => Math.round(v * 100) / 100;

/**
 * `limit`: the largest query sent (default BODY_LIMIT, SageMaker's 6 MB); a larger one is refused
 * here, before any traffic. `ms`: keys (checking, once uploading, the keys), invoke (the round trip).
 */
export function bodyRouteTransport(t: S3Route, o: { limit?: number } = {}): Transport {
  return {
    async evaluate(query, keys) {
      choosePayload({ mode: 'body', queryBytes: query.length, limit: o.limit, bodyAvailable: bodyAvailable(t) });
      const t0 = now();
      const publicKeys = keys && { evaluationKeys: keys.bytes, evaluationKeysId: keys.id };
      // A keys URI the header cannot carry is refused before anything is uploaded.
      if (keys) keysAttribute(formatS3Uri(keysLocation(t, keys.id)));
      const k = publicKeys && (await ensureKeysUploaded(t, publicKeys));
      const t1 = now();
      const r = await invokeBodyWithKeys(t, query, k && formatS3Uri(k.loc), publicKeys);
      const t2 = now();
      return {
        result: r.result,
        keysUploaded: (k?.uploaded ?? false) || r.keysUploaded,
        ms: { keys: round(t1 - t0), invoke: round(t2 - t1) },
        server: r.server,
        via: 'body',
      };
    },
    batch: true,
  };
}
