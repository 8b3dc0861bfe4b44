// How a refused or failed HTTP request is answered, for the inference server and the web demo's
// server alike: JSON {error, message, hint} with the SealedError's status. A SealedError keeps
// its code, message and hint (they never carry ciphertext, key or plaintext bytes); Fastify's own
// 4xx (schema, parser, size, media type) say what was wrong and what to send instead; anything
// else is a 500 whose message gives nothing away (the log has the name and message).
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { isSealedError, safeText, type SealedError } from '../errors.ts';

/** The JSON schema of every error answer. */
export const errorSchema = {
  type: 'object',
  required: ['error', 'message'],
  additionalProperties: false,
  properties: { error: { type: 'string' }, message: { type: 'string' }, hint: { type: 'string' } },
} as const;

export interface ErrorHints {
  /** What a request that failed its schema should have been. */
  validation: string;
  /** What to send instead of a body the parser refused (bad JSON, a wrong media type). */
  body: string;
  /** What to do about a body over the limit (413). */
  tooLarge?: string;
  /** Where to look after a 500. */
  internal: string;
}

export function errorHandler(hints: ErrorHints) {
  return (err: FastifyError | SealedError, req: FastifyRequest, reply: FastifyReply) => {
    if (isSealedError(err)) {
      const e = err as SealedError;
      req.log.warn({ err: { code: e.code, message: e.message } }, 'request refused');
      if (e.code === 'overloaded') reply.header('retry-after', '1');
      return reply.status(e.status).send(e.toJSON());
    }
    const fe = err as FastifyError & { validation?: unknown };
    if (fe.validation) {
      return reply.status(400).send({ error: 'bad-request', message: `invalid request: ${fe.message}`, hint: hints.validation });
    }
    if (fe.statusCode === 413 && hints.tooLarge) {
      return reply.status(413).send({
        error: 'bad-request',
        message: `the request body is larger than this endpoint takes (${safeText(req.headers['content-length'] ?? 'unknown', 20)} bytes)`,
        hint: hints.tooLarge,
      });
    }
    if (fe.statusCode === 415) {
      return reply.status(415).send({
        error: 'bad-request',
        message: `the body's media type ${safeText(req.headers['content-type'] ?? 'none', 60)} is not one this endpoint takes`,
        hint: hints.body,
      });
    }
    if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
      return reply.status(fe.statusCode).send({ error: 'bad-request', message: fe.message, hint: hints.body });
    }
    req.log.error({ err: { name: (err as Error).name, message: (err as Error).message } }, 'internal error');
    return reply.status(500).send({ error: 'internal', message: 'internal error; the request was not processed', hint: hints.internal });
  };
}

/** JSON 404 for a route that does not exist; `hint` names the routes there are. */
export function notFoundHandler(hint: string) {
  return (req: FastifyRequest, reply: FastifyReply) => {
    reply.status(404).send({ error: 'not-found', message: `no route ${safeText(req.method, 10)} ${safeText(req.url, 100)}`, hint });
  };
}
