// Admission: how many invocations work at once, how long each may take, and a graceful stop.
//   - at most maxInFlight invocations hold a slot; beyond, 503 with Retry-After (SageMaker and
//     clients retry);
//   - each races a deadline (504), and its work is aborted then;
//   - a slot is held until the work has stopped, not until its caller was answered: a 504 at
//     the deadline does not free capacity that the abandoned work still uses;
//   - once the app is closing, answers carry Connection: close.
// Registered unencapsulated (skip-override), so `app.admit` and `app.sealed` reach the routes.
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import { SealedError } from '../../errors.ts';

export interface AdmissionOptions {
  /** Requests admitted at once; beyond, 503 with Retry-After. */
  maxInFlight: number;
  /** Per-request deadline; SageMaker real-time invocations time out at 60 s. */
  deadlineMs: number;
}

/** What the app exposes for a graceful stop. */
export interface AppState {
  /** Invocations whose work has not stopped yet (answered or not). */
  readonly inFlight: number;
  /** Resolves when no invocation is working. */
  drained(): Promise<void>;
  /** Stops every invocation at once (as at its deadline): for a stop that cannot wait longer. */
  abortAll(): void;
}

declare module 'fastify' {
  interface FastifyInstance {
    sealed: AppState;
    /** Runs `work` in an admission slot, against the deadline (its signal aborts at the deadline or a forced stop). */
    admit<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T>;
  }
}

const admission: FastifyPluginAsync<AdmissionOptions> = async (app: FastifyInstance, o: AdmissionOptions) => {
  // Once closing, in-flight answers carry Connection: close: otherwise their keep-alive sockets
  // hold close() open for keepAliveTimeout (72 s), past SageMaker's 30 s before SIGKILL.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onSend', async (_req, reply) => {
    if (closing) reply.header('connection', 'close');
  });

  let inFlight = 0;
  let idle: (() => void)[] = [];
  const aborts = new Set<AbortController>();
  const settle = () => {
    inFlight--;
    if (inFlight === 0) {
      for (const f of idle) f();
      idle = [];
    }
  };
  app.decorate('sealed', {
    get inFlight() {
      return inFlight;
    },
    drained: () => (inFlight === 0 ? Promise.resolve() : new Promise<void>((r) => idle.push(r))),
    abortAll: () => {
      for (const a of aborts) a.abort();
    },
  } satisfies AppState);

  app.decorate('admit', async function admit<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    if (inFlight >= o.maxInFlight) {
      throw new SealedError(
        'overloaded',
        `the server is at capacity (${o.maxInFlight} requests in flight)`,
        'retry after the number of seconds in Retry-After',
      );
    }
    inFlight++;
    const abort = new AbortController();
    aborts.add(abort);
    const running = work(abort.signal);
    const done = () => {
      aborts.delete(abort);
      settle();
    };
    running.then(done, done);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(
          new SealedError(
            'deadline',
            `the request did not finish within ${o.deadlineMs} ms`,
            'send fewer records per request, or use an asynchronous endpoint',
          ),
        );
        abort.abort();
      }, o.deadlineMs);
      // abortAll (a stop that cannot wait): answered now; a promise settles once, so after the
      // deadline's reject this one is a no-op.
      abort.signal.addEventListener(
        'abort',
        () => reject(new SealedError('overloaded', 'the server is stopping; the request was not completed', 'retry (another instance will take it)')),
        { once: true },
      );
    });
    try {
      return await Promise.race([running, deadline]);
    } finally {
      clearTimeout(timer);
    }
  });
};
// What fastify-plugin does: the decorators and hooks belong to the app, not to a child context.
(admission as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true;

export default admission;
