// Node: the body form over SageMaker's runtime: InvokeEndpoint with the query as Body
// (application/octet-stream) and the keys' URI in CustomAttributes (`keys=<s3 uri>`); the
// response's Body is the encrypted result. The JSON forms (real-time and async) live in
// src/sagemaker/runtime-client.ts.
import { InvokeEndpointCommand, type SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { sdkError } from '../sagemaker/runtime-client.ts';
import { keysAttribute, resultBytes } from './invoke.ts';
import type { InvokeBody } from './route.ts';
import { OCTETS, PayloadRefused } from './transport.ts';

/**
 * The body form's own refusals first: a container (ModelError 413/415) or SageMaker (413) that will
 * not take the query as a body is a PayloadRefused, so `auto` retries through S3; any other error
 * maps as for the JSON forms.
 */
function bodyError(e: unknown, endpointName: string): unknown {
  const err = e as { name?: string; OriginalStatusCode?: number; $metadata?: { httpStatusCode?: number } };
  if (err.name === 'ModelError' && (err.OriginalStatusCode === 413 || err.OriginalStatusCode === 415))
    return new PayloadRefused(err.OriginalStatusCode, `the endpoint's container refused the query as a request body (${err.OriginalStatusCode})`);
  if (err.$metadata?.httpStatusCode === 413)
    return new PayloadRefused(413, `SageMaker refused the query as a request body: more than its payload limit (endpoint ${endpointName})`);
  return sdkError(e, endpointName);
}

export function sagemakerBody(client: SageMakerRuntimeClient, endpointName: string): InvokeBody {
  return async (query, o) => {
    let r;
    try {
      r = await client.send(
        new InvokeEndpointCommand({
          EndpointName: endpointName,
          ContentType: OCTETS,
          Accept: OCTETS,
          Body: query,
          CustomAttributes: o.keysUri === undefined ? undefined : keysAttribute(o.keysUri),
        }),
      );
    } catch (e) {
      throw bodyError(e, endpointName);
    }
    return { result: resultBytes(r.Body ?? new Uint8Array(), r.ContentType) };
  };
}
