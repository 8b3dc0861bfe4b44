// Secret keys at rest: the encrypted file format (versioned, scrypt N >= 2^17, old files still
// open and are upgraded), clear errors, and the passphrase from a file descriptor, a file and a
// terminal prompt (under a pseudo-terminal made by util-linux `script`).
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { createCipheriv, randomBytes, scryptSync } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadKeys, saveKeys } from '../../src/client/key-files.ts';
import { describeProtected, passphraseSource, protect, unprotect } from '../../src/client/passphrase.ts';
import { ClientSession } from '../../src/client/session.ts';
import { readClientPart } from '../../src/model/bundle.ts';
import { trainBreastCancer } from '../helpers/fixture.ts';

const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const tr = await trainBreastCancer();
t.teardown(tr.cleanup);
const part = await readClientPart(tr.modelDir);
const env: NodeJS.ProcessEnv = { ...process.env, SEALED_HOME: join(tr.dir, 'home') };
delete env.SEALED_PASSPHRASE;

/** The format written before v2 (scrypt N = 2^15, no header authentication), as that code wrote it. */
function protectV1(secretKey: Uint8Array, passphrase: string): Uint8Array {
  const salt = randomBytes(16);
  const iv = randomBytes(12);
  const key = scryptSync(passphrase, salt, 32, { N: 2 ** 15, r: 8, p: 1, maxmem: 64 * 2 ** 20 });
  const c = createCipheriv('aes-256-gcm', key, iv);
  const body = Buffer.concat([c.update(secretKey), c.final()]);
  return Buffer.concat([Buffer.from('SEALEDSK1'), salt, iv, c.getAuthTag(), body]);
}
// Written by the v1 code itself (src/client/passphrase.ts before the format was versioned).
const V1_FIXTURE = Buffer.from(
  'U0VBTEVEU0sxklgZhWBvSiiclbP1wR0+hdKUpfPm+pJxD/i1u5cV3a6QjwDONr1mjGi0U/Gae/eTUYRbcprE5KkrC9H8utVhAmf8OoIb1+AMcBubx47E2JyQQg==',
  'base64',
);

const sessions: ClientSession[] = [];
t.teardown(() => sessions.forEach((s) => s.close()));
async function session(): Promise<ClientSession> {
  const s = await ClientSession.open(part.modelId, part.client);
  sessions.push(s);
  return s;
}
const withPassphrase = (p: string) => passphraseSource({ env: { SEALED_PASSPHRASE: p } });

function cli(args: string[], fd3?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [main, ...args], { env, stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const extra = child.stdio[3] as NodeJS.WritableStream;
  if (fd3 !== undefined) extra.end(fd3);
  else extra.end();
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

t.test('new files record scrypt N >= 2^17, r = 8, p = 1 in a versioned header', async (t) => {
  const secret = randomBytes(200);
  const file = Buffer.from(await protect(secret, 'pw'));
  t.equal(file.subarray(0, 9).toString('latin1'), 'SEALEDSK2', 'format version 2');
  t.equal(file[9], 1, 'kdf: scrypt');
  t.ok(file[10] >= 17, `log2 N = ${file[10]}`);
  t.equal(file[11], 8, 'r');
  t.equal(file[12], 1, 'p');
  t.same(describeProtected(file), { version: 2, kdf: { log2N: file[10], r: 8, p: 1 } });
  const opened = await unprotect(file, 'pw', 'f');
  t.equal(opened.version, 2);
  t.same(Buffer.from(opened.secretKey), secret);
  // The header is authenticated: lowering N in it does not give an easier file.
  const weakened = Buffer.from(file);
  weakened[10] = 15;
  await t.rejects(unprotect(weakened, 'pw', 'f'), { code: 'bad-keys', message: /wrong passphrase or corrupted key file/ });
});

t.test('an old-format (v1, N = 2^15) file still opens', async (t) => {
  const opened = await unprotect(V1_FIXTURE, 'old passphrase', 'fixture');
  t.equal(opened.version, 1);
  t.equal(Buffer.from(opened.secretKey).toString(), 'sealed v1 fixture: not a real SEAL key');
  await t.rejects(unprotect(V1_FIXTURE, 'wrong', 'fixture'), { message: /fixture: wrong passphrase or corrupted key file/ });
});

t.test('a key set with old-format files loads and is rewritten in the current format', async (t) => {
  const s = await session();
  const dir = join(tr.dir, 'v1-set');
  const keys = s.generateKeys();
  await saveKeys(dir, s, keys);
  await writeFile(join(dir, 'secret.key'), protectV1(keys.secretKey, 'old passphrase'), { mode: 0o600 });
  if (keys.batchSecretKey) await writeFile(join(dir, 'batch-secret.key'), protectV1(keys.batchSecretKey, 'old passphrase'), { mode: 0o600 });
  const loaded = await loadKeys(dir, await session(), withPassphrase('old passphrase'));
  t.same(Buffer.from(loaded!.secretKey), Buffer.from(keys.secretKey), 'the same secret key');
  for (const f of keys.batchSecretKey ? ['secret.key', 'batch-secret.key'] : ['secret.key']) {
    const stored = await readFile(join(dir, f));
    t.same(describeProtected(stored).version, 2, `${f} rewritten as v2`);
  }
  const again = await loadKeys(dir, await session(), withPassphrase('old passphrase'));
  t.same(Buffer.from(again!.secretKey), Buffer.from(keys.secretKey), 'and opens again with the same passphrase');
});

t.test('a wrong passphrase or a damaged file is refused with a clear error', async (t) => {
  const s = await session();
  const dir = join(tr.dir, 'wrong');
  await saveKeys(dir, s, s.generateKeys(), 'right');
  const expected = {
    code: 'bad-keys',
    message: /secret\.key: wrong passphrase or corrupted key file$/,
    hint: /passphrase chosen at `sealed keygen`.*sealed keygen --force/,
  };
  await t.rejects(loadKeys(dir, await session(), withPassphrase('wrong')), expected);
  const file = await readFile(join(dir, 'secret.key'));
  file[file.length - 1] ^= 1;
  await writeFile(join(dir, 'secret.key'), file);
  await t.rejects(loadKeys(dir, await session(), withPassphrase('right')), expected, 'one flipped bit');
  await writeFile(join(dir, 'secret.key'), file.subarray(0, 30));
  await t.rejects(loadKeys(dir, await session(), withPassphrase('right')), { code: 'bad-keys', message: /wrong passphrase or corrupted key file \(truncated/ });
  await t.rejects(loadKeys(dir, await session(), passphraseSource({ env: {} })), {
    code: 'bad-keys',
    message: /protected by a passphrase and none was given/,
    hint: /--passphrase-fd N/,
  });
});

t.test('CLI: keygen with the passphrase on a file descriptor or in a file; predict refuses a wrong one', async (t) => {
  const keys = join(tr.dir, 'fd-keys');
  const r = await cli(['keygen', '--model', tr.modelDir, '--keys', keys, '--passphrase-fd', '3'], 'fd passphrase 1\nignored second line');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /secret\.key .* mode 0600: never leaves this machine; encrypted with the passphrase \(scrypt N=2\^17/);
  t.notMatch(r.stdout + r.stderr, /fd passphrase/, 'the passphrase is not printed');
  const stored = await readFile(join(keys, 'secret.key'));
  t.ok(describeProtected(stored).kdf.log2N >= 17, 'a v2 file');
  const loaded = await loadKeys(keys, await session(), withPassphrase('fd passphrase 1'));
  t.ok(loaded, 'opens with the passphrase up to the newline');

  const wrong = await cli(
    ['predict', '--model', tr.modelDir, '--input', join(tr.testDir, 'data.csv'), '--keys', keys, '--endpoint', 'http://127.0.0.1:9', '--passphrase-fd', '3'],
    'not it',
  );
  t.equal(wrong.code, 2);
  t.match(wrong.stderr, /error: .*secret\.key: wrong passphrase or corrupted key file/);
  t.match(wrong.stderr, /what to do: give the passphrase chosen at `sealed keygen`/);

  const pfile = join(tr.dir, 'pass.txt');
  await writeFile(pfile, 'file passphrase\n', { mode: 0o600 });
  const keys2 = join(tr.dir, 'file-keys');
  t.equal((await cli(['keygen', '--model', tr.modelDir, '--keys', keys2, '--passphrase-file', pfile])).code, 0);
  t.ok(await loadKeys(keys2, await session(), passphraseSource({ file: pfile })), 'opens with the passphrase from the file');

  const none = await cli(['keygen', '--model', tr.modelDir, '--keys', join(tr.dir, 'none'), '--encrypt']);
  t.equal(none.code, 2, 'without a terminal, --encrypt needs a passphrase from somewhere');
  t.match(none.stderr, /none was given[\s\S]*what to do: run on a terminal to be asked, pass --passphrase-fd N/);
});

const hasScript = spawnSync('script', ['-qec', 'true', '/dev/null'], { stdio: 'ignore' }).status === 0;
t.test(
  'CLI: on a terminal, keygen --encrypt asks twice without echo and predict asks for it',
  { skip: hasScript ? false : 'needs util-linux `script` and a pseudo-terminal' },
  async (t) => {
    const sh = (a: string[]) => a.map((x) => `'${x.replace(/'/g, `'\\''`)}'`).join(' ');
    /** Runs the CLI on a pseudo-terminal, typing each answer once its prompt has appeared. */
    function onPty(args: string[], answers: [RegExp, string][]): Promise<{ code: number | null; out: string }> {
      const child = spawn('script', ['-qec', sh([process.execPath, main, ...args]), '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let seen = 0;
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      const onData = (d: Buffer) => {
        out += d;
        const next = answers[0];
        if (next && next[0].test(out.slice(seen))) {
          seen = out.length;
          answers.shift();
          child.stdin!.write(next[1] + '\r');
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      return new Promise((resolve) =>
        child.on('close', (code) => {
          clearTimeout(timer);
          resolve({ code, out });
        }),
      );
    }
    const keys = join(tr.dir, 'tty-keys');
    const r = await onPty(
      ['keygen', '--model', tr.modelDir, '--keys', keys, '--encrypt'],
      [
        [/new passphrase for the secret key: /, 'typed secret'],
        [/the same passphrase again: /, 'typed secret'],
      ],
    );
    t.equal(r.code, 0, r.out);
    t.match(r.out, /encrypted with the passphrase/);
    t.notMatch(r.out, /typed secret/, 'not echoed');
    t.ok(await loadKeys(keys, await session(), withPassphrase('typed secret')), 'the typed passphrase opens the key');

    const differ = await onPty(
      ['keygen', '--model', tr.modelDir, '--keys', join(tr.dir, 'tty-differ'), '--encrypt'],
      [
        [/new passphrase/, 'one'],
        [/again/, 'two'],
      ],
    );
    t.equal(differ.code, 2);
    t.match(differ.out, /the two passphrases differ/);

    const wrong = await onPty(
      ['predict', '--model', tr.modelDir, '--input', join(tr.testDir, 'data.csv'), '--keys', keys, '--endpoint', 'http://127.0.0.1:9'],
      [[/passphrase for the secret key in .*tty-keys: /, 'typed wrong']],
    );
    t.equal(wrong.code, 2);
    t.match(wrong.out, /wrong passphrase or corrupted key file/);
    t.notMatch(wrong.out, /typed wrong/, 'not echoed');
  },
);
