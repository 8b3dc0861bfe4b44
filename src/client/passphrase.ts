// Optional passphrase protection of secret key files at rest, and where the passphrase comes from.
//
// Encrypted file formats (AES-256-GCM under a key derived by scrypt from the passphrase):
//   v2 (written): "SEALEDSK2" | kdf (1 = scrypt) | log2 N | r | p | salt (16) | nonce (12) | tag (16) | ciphertext
//       The bytes before the tag are GCM associated data, so the recorded KDF parameters cannot be
//       changed without the file failing to open. Written with N = 2^17, r = 8, p = 1.
//   v1 (read only): "SEALEDSK1" | salt (16) | nonce (12) | tag (16) | ciphertext, scrypt N = 2^15, r = 8, p = 1.
//       key-files.ts rewrites a v1 file as v2 once it has been opened with the right passphrase.
// An unencrypted secret key is SEAL's own serialization, which never starts with "SEALEDSK".
import { createCipheriv, createDecipheriv, randomBytes, scrypt, type ScryptOptions } from 'node:crypto';
import { read } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline/promises';
import { Writable } from 'node:stream';
import { SealedError } from '../errors.ts';

const PREFIX = 'SEALEDSK';
const MAGIC_V1 = Buffer.from(`${PREFIX}1`);
const MAGIC_V2 = Buffer.from(`${PREFIX}2`);
const KDF_SCRYPT = 1;
/** What new files use: N = 2^17 is the current minimum recommended for scrypt (OWASP). */
export const SCRYPT_V2 = { log2N: 17, r: 8, p: 1 } as const;
const SCRYPT_V1 = { log2N: 15, r: 8, p: 1 } as const;
const SALT = 16;
const NONCE = 12;
const TAG = 16;
const V1_HEADER = MAGIC_V1.length + SALT + NONCE;
const V2_HEADER = MAGIC_V2.length + 4 + SALT + NONCE;
/** How the error for a file that does not open reads; the same for both causes since GCM cannot tell them apart. */
const WRONG = 'wrong passphrase or corrupted key file';

export interface KdfParams {
  log2N: number;
  r: number;
  p: number;
}

export function isProtected(file: Uint8Array): boolean {
  return file.length >= PREFIX.length && Buffer.from(file.buffer, file.byteOffset, PREFIX.length).toString('latin1') === PREFIX;
}

/** The format version and KDF parameters recorded in an encrypted key file (no passphrase needed). */
export function describeProtected(file: Uint8Array, where = 'the key file'): { version: 1 | 2; kdf: KdfParams } {
  const f = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  if (f.length >= V1_HEADER + TAG && f.subarray(0, MAGIC_V1.length).equals(MAGIC_V1)) return { version: 1, kdf: { ...SCRYPT_V1 } };
  if (f.length >= V2_HEADER + TAG && f.subarray(0, MAGIC_V2.length).equals(MAGIC_V2)) {
    const o = MAGIC_V2.length;
    const kdf = { log2N: f[o + 1], r: f[o + 2], p: f[o + 3] };
    // Bounds keep a damaged or hostile header from asking scrypt for gigabytes of memory.
    if (f[o] !== KDF_SCRYPT || kdf.log2N < 10 || kdf.log2N > 20 || kdf.r < 1 || kdf.r > 32 || kdf.p < 1 || kdf.p > 16) {
      throw new SealedError(
        'bad-keys',
        `${where}: ${WRONG} (unsupported key derivation parameters)`,
        'restore the key file from a backup, or make a new key set with `sealed keygen --force`',
      );
    }
    return { version: 2, kdf };
  }
  if (isProtected(f) && f.length > PREFIX.length && f[PREFIX.length] > MAGIC_V2[PREFIX.length]) {
    throw new SealedError('bad-keys', `${where} was written by a newer version of sealed`, 'open it with that version');
  }
  throw new SealedError(
    'bad-keys',
    `${where}: ${WRONG} (truncated or unknown header)`,
    'restore the key file from a backup, or make a new key set with `sealed keygen --force`',
  );
}

function deriveKey(passphrase: string, salt: Uint8Array, k: KdfParams): Promise<Buffer> {
  const N = 2 ** k.log2N;
  // scrypt needs 128 * N * r bytes; Node refuses above maxmem (32 MiB by default), so allow that plus slack.
  const o: ScryptOptions = { N, r: k.r, p: k.p, maxmem: 128 * N * k.r + 2 ** 20 };
  // The asynchronous form runs on the libuv thread pool, so secret.key and batch-secret.key derive in parallel.
  return new Promise((resolve, reject) => scrypt(passphrase, salt, 32, o, (e, key) => (e ? reject(e) : resolve(key))));
}

/** Encrypts a secret key file in the current format (v2). */
export async function protect(secretKey: Uint8Array, passphrase: string): Promise<Uint8Array> {
  const salt = randomBytes(SALT);
  const nonce = randomBytes(NONCE);
  const header = Buffer.concat([MAGIC_V2, Buffer.from([KDF_SCRYPT, SCRYPT_V2.log2N, SCRYPT_V2.r, SCRYPT_V2.p]), salt, nonce]);
  const c = createCipheriv('aes-256-gcm', await deriveKey(passphrase, salt, SCRYPT_V2), nonce);
  c.setAAD(header);
  const body = Buffer.concat([c.update(secretKey), c.final()]);
  return new Uint8Array(Buffer.concat([header, c.getAuthTag(), body]));
}

/** Decrypts a v1 or v2 file; `version` tells the caller whether it should be rewritten as v2. */
export async function unprotect(file: Uint8Array, passphrase: string, where: string): Promise<{ secretKey: Uint8Array; version: 1 | 2 }> {
  const { version, kdf } = describeProtected(file, where);
  const f = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  const headerLength = version === 1 ? V1_HEADER : V2_HEADER;
  const salt = f.subarray(headerLength - NONCE - SALT, headerLength - NONCE);
  const nonce = f.subarray(headerLength - NONCE, headerLength);
  const d = createDecipheriv('aes-256-gcm', await deriveKey(passphrase, salt, kdf), nonce);
  if (version === 2) d.setAAD(f.subarray(0, headerLength));
  d.setAuthTag(f.subarray(headerLength, headerLength + TAG));
  try {
    return { secretKey: new Uint8Array(Buffer.concat([d.update(f.subarray(headerLength + TAG)), d.final()])), version };
  } catch {
    throw new SealedError(
      'bad-keys',
      `${where}: ${WRONG}`,
      'give the passphrase chosen at `sealed keygen`; if it is lost, make a new key set with `sealed keygen --force`',
    );
  }
}

// ---- where the passphrase comes from ----

export interface PassphraseOptions {
  /** Read it from this inherited file descriptor, to end-of-file or the first newline. */
  fd?: number;
  /** Read it from this file, to end-of-file or the first newline. */
  file?: string;
  /** SEALED_PASSPHRASE is looked up here (default process.env); a flag beats it. */
  env?: NodeJS.ProcessEnv;
  /** Ask on the terminal (no echo) when a key file needs one and nothing above gave it. */
  prompt?: boolean;
}

export interface PassphraseSource {
  /** The passphrase given without asking (fd, file or environment), read once; undefined if none. */
  given(): Promise<string | undefined>;
  /** For an encrypted key file: the given passphrase, else one asked on the terminal. */
  unlock(where: string): Promise<string>;
  /** For a new encrypted key set: the given passphrase, else one asked twice on the terminal. */
  choose(): Promise<string>;
}

const HOW = 'run on a terminal to be asked, pass --passphrase-fd N or --passphrase-file PATH, or set SEALED_PASSPHRASE';

export function passphraseSource(o: PassphraseOptions = {}): PassphraseSource {
  if (o.fd !== undefined && o.file !== undefined) throw new SealedError('bad-request', '--passphrase-fd and --passphrase-file both given', 'give one of them');
  if (o.fd !== undefined && !(Number.isInteger(o.fd) && o.fd >= 0))
    throw new SealedError(
      'bad-request',
      `--passphrase-fd ${o.fd} is not a file descriptor number`,
      'give a number such as 3, and open that descriptor for reading (e.g. `3<file`)',
    );
  const env = o.env ?? process.env;
  let givenOnce: Promise<string | undefined> | undefined;
  // Memoized: a descriptor can be read only once, and one run may open several key files.
  const given = () =>
    (givenOnce ??= (async () => {
      if (o.fd !== undefined) return nonEmpty(await readFd(o.fd), `file descriptor ${o.fd}`);
      if (o.file !== undefined) return nonEmpty(await readPassphraseFile(o.file), o.file);
      return env.SEALED_PASSPHRASE || undefined;
    })());
  let asked: string | undefined;
  return {
    given,
    async unlock(where) {
      const g = await given();
      if (g !== undefined) return g;
      if (!o.prompt) throw new SealedError('bad-keys', `the secret key in ${where} is protected by a passphrase and none was given`, HOW);
      return (asked ??= nonEmpty(await ask(`passphrase for the secret key in ${where}: `), 'the terminal'));
    },
    async choose() {
      const g = await given();
      if (g !== undefined) return g;
      if (!o.prompt) throw new SealedError('bad-request', 'a passphrase is needed to encrypt the secret key and none was given', HOW);
      const first = nonEmpty(await ask('new passphrase for the secret key: '), 'the terminal');
      if ((await ask('the same passphrase again: ')) !== first)
        throw new SealedError('bad-request', 'the two passphrases differ', 'run the command again and type the same passphrase twice');
      return (asked = first);
    },
  };
}

function nonEmpty(p: string, from: string): string {
  if (!p) throw new SealedError('bad-request', `the passphrase from ${from} is empty`, 'give a non-empty passphrase');
  return p;
}

/** Up to the first newline (a trailing CR dropped too), so `echo pass` and files with a final newline work. */
function firstLine(b: Buffer): string {
  const nl = b.indexOf(10);
  return (nl < 0 ? b : b.subarray(0, nl)).toString('utf8').replace(/\r$/, '');
}

async function readPassphraseFile(path: string): Promise<string> {
  try {
    return firstLine(await readFile(path));
  } catch (e) {
    throw new SealedError(
      'bad-request',
      `cannot read the passphrase file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      'give a readable file holding the passphrase',
    );
  }
}

/** Reads an inherited descriptor (pipe, socket or file) to end-of-file or the first newline. */
async function readFd(fd: number): Promise<string> {
  const chunks: Buffer[] = [];
  for (let total = 0; ;) {
    const buf = Buffer.alloc(512);
    let n: number;
    try {
      n = await new Promise<number>((resolve, reject) => read(fd, buf, 0, buf.length, null, (e, bytes) => (e ? reject(e) : resolve(bytes))));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // A descriptor inherited in non-blocking mode reports EAGAIN until the writer has written.
      if (code === 'EAGAIN') {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      throw new SealedError(
        'bad-request',
        `cannot read a passphrase from file descriptor ${fd}: ${code ?? (e as Error).message}`,
        `open descriptor ${fd} for reading when starting sealed, e.g. \`${fd}<file\` or \`${fd}<<<"$PASS"\``,
      );
    }
    if (n === 0) break;
    const part = buf.subarray(0, n);
    chunks.push(part);
    if (part.includes(10)) break;
    if ((total += n) > 64 * 1024)
      throw new SealedError(
        'bad-request',
        `file descriptor ${fd} holds more than 64 KiB and no newline`,
        'write the passphrase and a newline, or close the descriptor after it',
      );
  }
  return firstLine(Buffer.concat(chunks));
}

/**
 * Asks on the terminal without echo: readline in terminal mode puts stdin in raw mode (so the
 * terminal does not echo) and its own echo goes to a muted stream. The prompt goes to stderr so
 * stdout stays the command's output.
 */
async function ask(prompt: string): Promise<string> {
  const muted = new Writable({ write: (_chunk, _encoding, done) => done() });
  const rl = createInterface({ input: process.stdin, output: muted, terminal: true });
  const cancel = new AbortController();
  // Ctrl-C arrives as a key in raw mode, Ctrl-D on an empty line closes the interface.
  rl.on('SIGINT', () => cancel.abort());
  rl.on('close', () => cancel.abort());
  process.stderr.write(prompt);
  try {
    return await rl.question('', { signal: cancel.signal });
  } catch {
    throw new SealedError('bad-request', 'no passphrase typed (cancelled)', 'run the command again and type the passphrase');
  } finally {
    process.stderr.write('\n');
    rl.close();
  }
}
