// The model's client part, from wherever the SDK's caller has it: an object, JSON text or a URL
// (browser and Node), or (Node) a bundle directory or a model.tar.gz, local or in S3.
import { SealedError } from '../errors.ts';
import { parseClientPart, type ClientPart } from '../model/client-part.ts';
import { checkTreeClientPart } from '../model/trees/client-part.ts';
import type { TreeClientPart } from '../model/trees/compile.ts';
import { isNode, nodeOnly } from './node-only.ts';

/** A network's or linear model's client part, or a tree ensemble's (`model: 'trees'`). */
export type AnyModelPart = (ClientPart & { model_id: string }) | TreeClientPart;

/** Client part JSON of either kind, checked. */
export function parseAnyClientPart(text: string, where: string): AnyModelPart {
  let c: unknown;
  try {
    c = JSON.parse(text);
  } catch {
    throw new SealedError('bad-bundle', `the client part in ${where} is not valid JSON`);
  }
  if ((c as { model?: unknown } | null)?.model === 'trees') return checkTreeClientPart(c, where);
  return parseClientPart(text, where);
}

/**
 * The client part from an object, JSON text, a URL, or (Node) a model directory or a
 * model.tar.gz (a file or an s3:// URI; `s3Endpoint` as for createClient).
 */
export async function loadClientPart(model: ClientPart | TreeClientPart | string | URL, o: { s3Endpoint?: string } = {}): Promise<AnyModelPart> {
  if (typeof model === 'object' && !(model instanceof URL)) return parseAnyClientPart(JSON.stringify(model), 'the given model');
  const s = String(model);
  if (s.trimStart().startsWith('{')) return parseAnyClientPart(s, 'the given model JSON');
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
    return parseAnyClientPart(await res.text(), url.href);
  }
  const source = await nodeOnly<typeof import('./model-source.ts')>('./model-source.ts', 'reading a model directory or archive');
  const any = await source.loadAnyClientPart(s, { endpoint: o.s3Endpoint });
  return any.kind === 'trees' ? any.part : (any.client as ClientPart & { model_id: string });
}
