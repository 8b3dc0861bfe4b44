// Node: the body form over SageMaker's runtime: InvokeEndpoint with the query as Body
// (application/octet-stream) and the keys' URI in CustomAttributes (`keys=<s3 uri>`); the
// response's Body is the encrypted result. The JSON forms (real-time and async) live in
// src/sagemaker/runtime-client.ts.
import { InvokeEndpointCommand, type SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { SealedError } from '../errors.ts';
import { keysAttribute, resultBytes } from './invoke.ts';
import type { InvokeBody } from './route.ts';
import { OCTETS, PayloadRefused, serverError } from './transport.ts';

/** The container's answer as SageMaker relays it (ModelError carries its status and body). */
function sdkError(e: unknown, endpointName: string): unknown {
  if (e instanceof SealedError) return e;
  const err = e as { name?: string; message?: string; OriginalStatusCode?: number; OriginalMessage?: string; $metadata?: { httpStatusCode?: number } };
  if (err.name === 'ModelError' && (err.OriginalStatusCode === 413 || err.OriginalStatusCode === 415))
    return new PayloadRefused(err.OriginalStatusCode, `the endpoint's container refused the query as a request body (${err.OriginalStatusCode})`);
  if (err.name === 'ModelError' && err.OriginalMessage !== undefined) return serverError(err.OriginalStatusCode ?? 424, err.OriginalMessage);
  if (err.$metadata?.httpStatusCode === 413)
    return new PayloadRefused(413, `SageMaker refused the query as a request body: more than its payload limit (endpoint ${endpointName})`);
  if (err.name === 'ValidationError')
    return new SealedError(
      'bad-request',
      `SageMaker refused the request to endpoint ${endpointName}: ${err.message}`,
      'check the endpoint name, region and request size',
    );
  const hint = 'check the endpoint name, region and credentials (or the --sagemaker-url of a local emulator), and that the endpoint is InService';
  return new SealedError('storage', `cannot invoke SageMaker endpoint ${endpointName} (${err.name ?? 'error'}: ${err.message ?? String(e)})`, hint, {
    cause: e,
  });
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
      throw sdkError(e, endpointName);
    }
    return { result: resultBytes(r.Body ?? new Uint8Array(), r.ContentType) };
  };
}
