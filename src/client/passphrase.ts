// Optional passphrase protection of the secret key at rest: scrypt (N=2^15, r=8, p=1) derives
// an AES-256-GCM key. File layout: "SEALEDSK1" | salt (16) | iv (12) | tag (16) | ciphertext.
import { createCipheriv, createDecipheriv, randomBytes, scryptSync } from 'node:crypto';
import { SealedError } from '../errors.ts';

const MAGIC = new TextEncoder().encode('SEALEDSK1');
const SCRYPT = { N: 2 ** 15, r: 8, p: 1, maxmem: 64 * 2 ** 20 };

export function isProtected(file: Uint8Array): boolean {
  return file.length > MAGIC.length && MAGIC.every((b, i) => file[i] === b);
}

export function protect(secretKey: Uint8Array, passphrase: string): Uint8Array {
  const salt = randomBytes(16);
  const iv = randomBytes(12);
  const key = scryptSync(passphrase, salt, 32, SCRYPT);
  const c = createCipheriv('aes-256-gcm', key, iv);
  const body = Buffer.concat([c.update(secretKey), c.final()]);
  return Buffer.concat([MAGIC, salt, iv, c.getAuthTag(), body]);
}

export function unprotect(file: Uint8Array, passphrase: string | undefined, where: string): Uint8Array {
  if (!passphrase) throw new SealedError('bad-keys', `the secret key in ${where} is protected by a passphrase`, 'set SEALED_PASSPHRASE to it');
  const o = MAGIC.length;
  const salt = file.subarray(o, o + 16);
  const iv = file.subarray(o + 16, o + 28);
  const tag = file.subarray(o + 28, o + 44);
  const key = scryptSync(passphrase, salt, 32, SCRYPT);
  const d = createDecipheriv('aes-256-gcm', key, iv);
  d.setAuthTag(tag);
  try {
    return new Uint8Array(Buffer.concat([d.update(file.subarray(o + 44)), d.final()]));
  } catch {
    throw new SealedError('bad-keys', `wrong passphrase for the secret key in ${where}`, 'set SEALED_PASSPHRASE to the passphrase given at `sealed keygen`');
  }
}
