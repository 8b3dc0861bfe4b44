// GET /execution-parameters, SageMaker Batch Transform's container contract: before a transform
// job sends records, it asks the container how many requests to send at once, how to group
// records, and how large a request may be. The values come from the server's memory budget and
// worker count (serve.ts executionParameters), so a job that follows them is never refused for
// capacity.
import type { FastifyPluginAsync } from 'fastify';

export interface ExecutionParameters {
  MaxConcurrentTransforms: number;
  /** A sealed query is one record: binary, it can be neither split nor joined by SageMaker. */
  BatchStrategy: 'SINGLE_RECORD' | 'MULTI_RECORD';
  MaxPayloadInMB: number;
}

const answer = {
  type: 'object',
  required: ['MaxConcurrentTransforms', 'BatchStrategy', 'MaxPayloadInMB'],
  additionalProperties: false,
  properties: {
    MaxConcurrentTransforms: { type: 'integer', minimum: 1 },
    BatchStrategy: { type: 'string', enum: ['SINGLE_RECORD', 'MULTI_RECORD'] },
    MaxPayloadInMB: { type: 'integer', minimum: 1, maximum: 100 },
  },
} as const;

const executionParameters: FastifyPluginAsync<{ parameters: ExecutionParameters }> = async (app, o) => {
  app.get('/execution-parameters', { schema: { response: { 200: answer } } }, async () => o.parameters);
};

export default executionParameters;
