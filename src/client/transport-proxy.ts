// The transport of web pages: to a sealed web server (src/web/server.ts), which holds the S3
// side for browsers that cannot sign S3 requests. fetch only: browsers and Node.
import { SealedError } from '../errors.ts';
import { isNode } from './node-only.ts';
import { OCTETS, type Transport } from './transport.ts';

const now = () => performance.now();
const round = (v: number) => Math.round(v * 100) / 100;

async function errorFrom(res: Response, what: string): Promise<SealedError> {
  const json = (await res.json().catch(() => ({}))) as { error?: unknown; message?: unknown; hint?: unknown };
  const code = typeof json.error === 'string' ? json.error : res.status === 404 ? 'not-found' : 'internal';
  return new SealedError(
    code as never,
    `${what}: the server answered ${res.status}: ${String(json.message ?? res.statusText)}`,
    typeof json.hint === 'string' ? json.hint : undefined,
  );
}

/**
 * Transport to a sealed web server (src/web/server.ts): `GET`/`PUT /api/keys/<id>` uploads the
 * evaluation keys once, `POST /api/predict?keys=<id>` sends the encrypted query and answers the
 * encrypted result. Uses fetch only: works in browsers and in Node.
 */
export function proxyTransport(base: string | URL): Transport {
  const root = new URL(String(base).endsWith('/') ? String(base) : `${String(base)}/`, isNode ? undefined : globalThis.location?.href);
  const uploaded = new Set<string>();
  const send = async (path: string, init: RequestInit): Promise<Response> => {
    try {
      return await fetch(new URL(path, root), init);
    } catch (e) {
      throw new SealedError(
        'storage',
        `cannot reach the sealed web server at ${root.href} (${(e as Error).message})`,
        'check that it is running (`sealed demo --web`) and the URL',
      );
    }
  };
  const octets = { 'content-type': OCTETS };
  return {
    async evaluate(query, keys) {
      if (!keys)
        throw new SealedError(
          'bad-request',
          'the page proxy takes single-layout queries only',
          "send fewer records than the model's batch crossover, or use the S3 transport",
        );
      const ms: Record<string, number> = {};
      let keysUploaded = false;
      if (!uploaded.has(keys.id)) {
        const t0 = now();
        const head = await send(`api/keys/${keys.id}`, { method: 'GET' });
        if (!head.ok) throw await errorFrom(head, 'checking the evaluation keys');
        if (!((await head.json()) as { uploaded?: boolean }).uploaded) {
          // As a Blob, a browser streams the body from its own copy: a tree model's single-record keys
          // are 100-250 MB, and a page inspected through the DevTools protocol (tests, profiling)
          // would otherwise have them copied, as text, into one protocol message.
          const put = await send(`api/keys/${keys.id}`, { method: 'PUT', headers: octets, body: new Blob([keys.bytes as Uint8Array<ArrayBuffer>]) });
          if (!put.ok) throw await errorFrom(put, 'uploading the evaluation keys');
          keysUploaded = true;
        }
        uploaded.add(keys.id);
        ms.keys_upload = round(now() - t0);
      }
      const t1 = now();
      const res = await send(`api/predict?keys=${encodeURIComponent(keys.id)}`, { method: 'POST', headers: octets, body: query as Uint8Array<ArrayBuffer> });
      if (!res.ok) {
        // Keys gone or replaced in S3: ask (and upload) again next time.
        if (res.status === 404 || res.status === 422) uploaded.delete(keys.id);
        throw await errorFrom(res, 'the encrypted prediction');
      }
      const result = new Uint8Array(await res.arrayBuffer());
      ms.round_trip = round(now() - t1);
      let server: unknown;
      try {
        server = JSON.parse(res.headers.get('x-sealed-server') ?? 'null');
      } catch {
        server = undefined;
      }
      return { result, keysUploaded, ms, server, via: 'proxy' };
    },
  };
}
