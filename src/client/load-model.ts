// The model's client part, from wherever the SDK's caller has it: an object, JSON text or a URL
// (browser and Node), or (Node) a bundle directory or a model.tar.gz, local or in S3.
import { SealedError } from '../errors.ts';
import { parseClientPart, type ClientPart } from '../model/client-part.ts';
import { isNode, nodeOnly } from './node-only.ts';

/**
 * The client part from an object, JSON text, a URL, or (Node) a model directory or a
 * model.tar.gz (a file or an s3:// URI; `s3Endpoint` as for createClient).
 */
export async function loadClientPart(model: ClientPart | string | URL, o: { s3Endpoint?: string } = {}): Promise<ClientPart & { model_id: string }> {
  if (typeof model === 'object' && !(model instanceof URL)) return parseClientPart(JSON.stringify(model), 'the given model');
  const s = String(model);
  if (s.trimStart().startsWith('{')) return parseClientPart(s, 'the given model JSON');
  if (model instanceof URL || /^(https?|blob|data):/i.test(s) || !isNode) {
    const url = new URL(s, isNode ? undefined : globalThis.location?.href);
    let res: Response;
    try {
      res = await fetch(url);
    } catch (e) {
      throw new SealedError(
        'storage',
        `cannot fetch the model's client part from ${url.href} (${(e as Error).message})`,
        'check the URL and that the server is running',
      );
    }
    if (!res.ok) throw new SealedError('not-found', `fetching the model's client part from ${url.href} answered ${res.status}`, 'check the URL');
    return parseClientPart(await res.text(), url.href);
  }
  const source = await nodeOnly<typeof import('./model-source.ts')>('./model-source.ts', 'reading a model directory or archive');
  const { client } = await source.loadClientPart(s, { endpoint: o.s3Endpoint });
  return client as ClientPart & { model_id: string };
}
