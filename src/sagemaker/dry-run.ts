// --dry-run: every command of the clients is answered locally instead of sent. A middleware at
// the start of each client's stack, so the command still goes through the real `client.send`
// and its input is exactly what would leave; the answers simulate a fresh (or existing) account.
import type { Clients } from './aws.ts';

/** A request as it leaves the SDK client: service, operation (command name without "Command") and input. */
export interface SentRequest {
  service: keyof Clients;
  command: string;
  input: Record<string, unknown>;
}
export type Responder = (r: SentRequest) => unknown;
// The one overload of middlewareStack.add used here (the union of all the clients' stacks is not callable).
type InitializeStack = {
  add(mw: (next: unknown, context: { commandName?: string }) => (args: { input: unknown }) => Promise<unknown>, o: { step: 'initialize'; name: string }): void;
};

/**
 * Answers every command of these clients with `respond` instead of sending it: a middleware at the
 * start of each client's stack, so the command goes through the real `client.send`. Used by
 * `--dry-run` (and usable by tests); throw from `respond` to simulate a service error.
 */
export function intercept(c: Clients, respond: Responder): Clients {
  for (const service of Object.keys(c) as (keyof Clients)[]) {
    (c[service].middlewareStack as unknown as InitializeStack).add(
      (_next, context) => async (args) => {
        const command = String(context.commandName ?? '').replace(/Command$/, '');
        const output = await respond({ service, command, input: args.input as Record<string, unknown> });
        return { output: { $metadata: {}, ...(output as object) }, response: {} } as never;
      },
      { step: 'initialize', name: 'sealedIntercept' },
    );
  }
  return c;
}

/**
 * Clients that print each request as one JSON line on stdout and answer it as a fresh account
 * would (no endpoint yet), or as one whose endpoint exists (`existing`, for --update and delete).
 */
export function dryRunClients(make: () => Clients, existing: boolean, print: (line: string) => void = (l) => console.log(l)): Clients {
  let exists = existing;
  let config = '<current endpoint config>';
  return intercept(make(), (r) => {
    print(JSON.stringify(r));
    switch (r.command) {
      case 'DescribeEndpoint':
        if (!exists) throw Object.assign(new Error(`Could not find endpoint (dry run)`), { name: 'ValidationException' });
        return { EndpointStatus: 'InService', EndpointConfigName: config };
      case 'CreateEndpoint':
      case 'UpdateEndpoint':
        exists = true;
        config = String(r.input.EndpointConfigName);
        return {};
      case 'DescribeEndpointConfig':
        return { ProductionVariants: [{ ModelName: '<current model>' }] };
      case 'PutScalingPolicy':
        return { PolicyARN: `<PolicyARN of ${String(r.input.PolicyName)}>` };
      default:
        return {};
    }
  });
}
