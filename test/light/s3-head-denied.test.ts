// HeadObject on a missing key answers 403 (not 404) to an identity without an unconditioned
// s3:ListBucket, which is every sealed client and the endpoint role (their ListBucket grants carry
// an s3:prefix condition). ObjectStore.head must not take that 403 for a failure. The real S3
// client, answered at the first step of its middleware stack as Amazon S3 would answer.
import t from 'tap';
import { S3ServiceException } from '@aws-sdk/client-s3';
import { ObjectStore } from '../../src/storage/s3.ts';

type Call = { command: string; input: Record<string, unknown> };
const forbidden = () => new S3ServiceException({ name: 'Forbidden', $fault: 'client', $metadata: { httpStatusCode: 403 }, message: 'UnknownError' });
const accessDenied = () => new S3ServiceException({ name: 'AccessDenied', $fault: 'client', $metadata: { httpStatusCode: 403 }, message: 'Access Denied' });

function store(respond: (c: Call) => unknown): { store: ObjectStore; calls: Call[] } {
  const s = new ObjectStore({ endpoint: 'http://127.0.0.1:9', region: 'us-east-1' });
  const calls: Call[] = [];
  (s.client.middlewareStack as unknown as { add: (mw: unknown, o: unknown) => void }).add(
    (_next: unknown, context: { commandName: string }) => async (args: { input: Record<string, unknown> }) => {
      const call = { command: context.commandName.replace(/Command$/, ''), input: args.input };
      calls.push(call);
      return { output: { $metadata: {}, ...(respond(call) as object) }, response: {} };
    },
    { step: 'initialize', name: 'testS3' },
  );
  return { store: s, calls };
}
const loc = { bucket: 'b-1', key: 'sealed/tenants/acme/keys/abc.keys' };

t.test('403 on a missing key, listing allowed by prefix: missing (undefined), not an error', async (t) => {
  const { store: s, calls } = store((c) => {
    if (c.command === 'HeadObject') throw forbidden();
    // A listing of the key's own prefix finds a longer key, not this one.
    return { KeyCount: 1, Contents: [{ Key: `${loc.key}.old` }] };
  });
  t.equal(await s.head(loc), undefined);
  t.same(
    calls.map((c) => c.command),
    ['HeadObject', 'ListObjectsV2'],
  );
  t.same(calls[1].input, { Bucket: 'b-1', Prefix: loc.key, MaxKeys: 1 }, 'lists exactly that key (a prefix-conditioned ListBucket allows it)');
  s.close();
});

t.test('403 on an object that is listed: present but unreadable, a clear error', async (t) => {
  const { store: s } = store((c) => {
    if (c.command === 'HeadObject') throw forbidden();
    return { KeyCount: 1, Contents: [{ Key: loc.key }] };
  });
  await t.rejects(s.head(loc), {
    code: 'storage',
    message: /access denied to s3:\/\/b-1\/.*it exists, but this identity may not read it/,
    hint: /s3:GetObject/,
  });
  s.close();
});

t.test('403 from both HeadObject and ListObjectsV2: an error that says what to grant, or "not known to exist" when asked', async (t) => {
  const { store: s } = store(() => {
    throw accessDenied();
  });
  await t.rejects(s.head(loc), { code: 'storage', message: /cannot tell whether s3:\/\/b-1\/.* exists: HeadObject was denied/, hint: /s3:ListBucket/ });
  t.equal(await s.head(loc, { deniedAsUnknown: true }), undefined, 'deniedAsUnknown: the caller uploads (or keeps polling)');
  s.close();
});

t.test('404 stays missing without a listing; other errors stay errors; checksum on request', async (t) => {
  const missing = store(() => {
    throw new S3ServiceException({ name: 'NotFound', $fault: 'client', $metadata: { httpStatusCode: 404 }, message: 'UnknownError' });
  });
  t.equal(await missing.store.head(loc), undefined);
  t.same(
    missing.calls.map((c) => c.command),
    ['HeadObject'],
  );
  const down = store(() => {
    throw new S3ServiceException({ name: 'InternalError', $fault: 'server', $metadata: { httpStatusCode: 500 }, message: 'We encountered an internal error' });
  });
  await t.rejects(down.store.head(loc, { deniedAsUnknown: true }), { code: 'storage', message: /failed \(InternalError\)/ });
  const sha = 'a'.repeat(64);
  const ok = store(() => ({ ContentLength: 42, ETag: '"e"', ChecksumSHA256: Buffer.from(sha, 'hex').toString('base64'), ChecksumType: 'FULL_OBJECT' }));
  t.same(await ok.store.head(loc, { checksum: true }), { size: 42, etag: '"e"', sha256: sha });
  t.equal(ok.calls[0].input.ChecksumMode, 'ENABLED');
  t.same(await ok.store.head(loc), { size: 42, etag: '"e"' }, 'no checksum unless asked');
  for (const x of [missing, down, ok]) x.store.close();
});
