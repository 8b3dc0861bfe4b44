// Where the SDK runs, and the door to its Node-only modules. Kept apart so the browser-safe
// modules (index.ts, sealed-client.ts, load-model.ts, transport*.ts) share one rule.
import { SealedError } from '../errors.ts';

export const isNode = typeof process !== 'undefined' && typeof process.versions?.node === 'string';

/**
 * Loads a Node-only module of this package on first use. The specifier is not a literal on
 * purpose: bundlers for the browser leave it out, so no Node-only module reaches a web page.
 */
export function nodeOnly<M>(specifier: string, what: string): Promise<M> {
  if (!isNode)
    return Promise.reject(
      new SealedError('bad-request', `${what} is available in Node only`, 'in a browser, pass `model` as a URL or object and use `proxy` or `transport`'),
    );
  return import(/* @vite-ignore */ specifier) as Promise<M>;
}
