// The CLI's passphrase options, shared by every command that opens or makes a key set.
import { passphraseSource, type PassphraseSource } from '../client/passphrase.ts';

export interface PassphraseOpts {
  passphraseFd?: number;
  passphraseFile?: string;
}

/** The CLI's passphrase: --passphrase-fd, --passphrase-file, SEALED_PASSPHRASE, else asked when stdin is a terminal. */
export function cliPassphrase(o: PassphraseOpts): PassphraseSource {
  return passphraseSource({ fd: o.passphraseFd, file: o.passphraseFile, prompt: process.stdin.isTTY === true });
}
