// GET /ping, SageMaker's health check. It answers at once while evaluations run (the pool is
// other threads); unhealthy (a pool that cannot evaluate a known answer) is a 503, so SageMaker
// replaces the container.
import type { FastifyPluginAsync } from 'fastify';

export interface PingOptions {
  modelId: string;
  /** Health of the evaluation pool (a cached known-answer probe); absent: healthy. */
  healthy?: () => Promise<boolean>;
  /** Worker threads replaced since start (poisoned or failed ones). */
  workersReplaced?: () => number;
}

const pingAnswer = {
  type: 'object',
  required: ['status', 'model_id', 'workers_replaced'],
  additionalProperties: false,
  properties: { status: { type: 'string', enum: ['ok', 'unhealthy'] }, model_id: { type: 'string' }, workers_replaced: { type: 'integer', minimum: 0 } },
} as const;

const ping: FastifyPluginAsync<PingOptions> = async (app, o) => {
  app.get('/ping', { schema: { response: { 200: pingAnswer, 503: pingAnswer } } }, async (_req, reply) => {
    const workers_replaced = o.workersReplaced?.() ?? 0;
    if (o.healthy && !(await o.healthy())) {
      return reply.status(503).send({ status: 'unhealthy', model_id: o.modelId, workers_replaced });
    }
    return { status: 'ok', model_id: o.modelId, workers_replaced };
  });
};

export default ping;
