// A stand-in Batch Transform instance implementing the server's body contract (being merged):
// POST /invocations takes application/octet-stream and answers "OUT<index>:" + the bytes reversed;
// GET /execution-parameters answers the given parameters (404 without). It records what it saw.
import Fastify from 'fastify';

export async function instance(index: number, o: { params?: object; failOnce?: string; refuse?: string } = {}) {
  const seen: { body: string; type: string | undefined }[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const failed = new Set<string>();
  const app = Fastify({ logger: false, bodyLimit: 200 * 1024 * 1024 });
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_r, body, done) => done(null, body));
  app.get('/execution-parameters', async (_req, reply) => (o.params ? o.params : reply.code(404).send({ error: 'not-found' })));
  app.post('/invocations', async (req, reply) => {
    const body = (req.body as Buffer).toString('latin1');
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await new Promise((r) => setTimeout(r, 20));
    inFlight--;
    seen.push({ body, type: req.headers['content-type'] });
    if (o.failOnce === body && !failed.has(body)) {
      failed.add(body);
      return reply.code(503).send({ error: 'overloaded', message: 'busy' });
    }
    if (o.refuse === body) return reply.code(400).send({ error: 'bad-request', message: 'not a query' });
    return reply.type('application/octet-stream').send(Buffer.from(`OUT${index}:${[...body].reverse().join('')}`, 'latin1'));
  });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return { url, seen, maxInFlight: () => maxInFlight, close: () => app.close() };
}
