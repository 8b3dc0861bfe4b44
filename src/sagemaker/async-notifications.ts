// Waiting for an async inference by its notification instead of polling S3. An async endpoint
// posts to its SNS success and error topics (deploy's --success-topic/--error-topic); the client
// subscribes an SQS queue to both and long-polls it here: one ReceiveMessage call waits up to
// 20 s and costs nothing while the request sits in the endpoint's queue, where polling S3 costs a
// HEAD per try and answers late by up to its back-off.
//
// One queue may serve many clients and requests: a message for another inference is made visible
// again at once (ChangeMessageVisibility 0) for its own waiter, and only ours is deleted.
import { ChangeMessageVisibilityCommand, DeleteMessageCommand, ReceiveMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { SealedError } from '../errors.ts';

/** SageMaker's async notification (the SNS message), as far as the client needs it. */
export interface AsyncNotification {
  inferenceId: string;
  invocationStatus: 'Completed' | 'Failed';
  outputLocation?: string;
  failureLocation?: string;
  failureReason?: string;
}

export interface NotificationQueue {
  sqs: SQSClient;
  /** The queue subscribed to the endpoint's success and error topics. */
  queueUrl: string;
}

/**
 * The notification in one SQS message body: SNS's envelope ({"Type": "Notification", "Message":
 * "<json>"}) or, with raw message delivery, SageMaker's JSON itself; undefined for anything else.
 */
export function parseNotification(body: string | undefined): AsyncNotification | undefined {
  try {
    let m = JSON.parse(body ?? '') as Record<string, unknown>;
    if (m.Type === 'Notification' && typeof m.Message === 'string') m = JSON.parse(m.Message) as Record<string, unknown>;
    const status = m.invocationStatus;
    if (typeof m.inferenceId !== 'string' || (status !== 'Completed' && status !== 'Failed')) return undefined;
    const r = (m.responseParameters ?? {}) as Record<string, unknown>;
    const text = (v: unknown) => (typeof v === 'string' ? v : undefined);
    return {
      inferenceId: m.inferenceId,
      invocationStatus: status,
      outputLocation: text(r.outputLocation),
      failureLocation: text(r.failureLocation),
      failureReason: text(m.failureReason),
    };
  } catch {
    return undefined;
  }
}

/** Waits for the notification of `inferenceId`; undefined when `deadline` (epoch ms) passes first. */
export async function waitForNotification(q: NotificationQueue, inferenceId: string, deadline: number): Promise<AsyncNotification | undefined> {
  const call = async <T>(doing: string, f: () => Promise<T>) => {
    try {
      return await f();
    } catch (e) {
      const err = e as { name?: string; message?: string };
      throw new SealedError(
        'storage',
        `cannot ${doing} the notification queue ${q.queueUrl.slice(0, 200)} (${err.name ?? 'Error'}: ${err.message ?? String(e)})`,
        'check the queue URL, that it is subscribed to the endpoint’s SNS topics, and that your identity may sqs:ReceiveMessage, sqs:DeleteMessage and sqs:ChangeMessageVisibility on it',
        { cause: e },
      );
    }
  };
  while (Date.now() < deadline) {
    const waitSeconds = Math.max(1, Math.min(20, Math.floor((deadline - Date.now()) / 1000)));
    const r = await call('read', () =>
      q.sqs.send(new ReceiveMessageCommand({ QueueUrl: q.queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: waitSeconds, VisibilityTimeout: 30 })),
    );
    let found: AsyncNotification | undefined;
    for (const msg of r.Messages ?? []) {
      const n = parseNotification(msg.Body);
      if (n && n.inferenceId === inferenceId && !found) {
        found = n;
        if (msg.ReceiptHandle)
          await call('delete from', () => q.sqs.send(new DeleteMessageCommand({ QueueUrl: q.queueUrl, ReceiptHandle: msg.ReceiptHandle })));
      } else if (msg.ReceiptHandle) {
        // Another request's (or not a notification): back to the queue for whoever waits for it.
        await call('release a message of', () =>
          q.sqs.send(new ChangeMessageVisibilityCommand({ QueueUrl: q.queueUrl, ReceiptHandle: msg.ReceiptHandle, VisibilityTimeout: 0 })),
        );
      }
    }
    if (found) return found;
    // Only others' messages came back: let their waiters take them before asking again.
    if (r.Messages?.length) await new Promise((res) => setTimeout(res, 250));
  }
  return undefined;
}
