// Small networks for batch-mode tests: fast to encrypt and evaluate, same layer types as MNIST.
import type { Network } from '../../src/model/network.ts';

export function rng(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31 - 0.5;
  };
}
const r = rng(11);
export const F = 4;
export const side = 12;
export const smallCnn: Network = {
  input: { height: side, width: side },
  layers: [
    {
      type: 'conv2d-parity',
      kernel: Array.from({ length: F }, () => Array.from({ length: 5 }, () => Array.from({ length: 5 }, () => r() * 0.8))),
      bias: Array.from({ length: F }, () => r() * 0.2),
    },
    { type: 'quadratic', a: 0.5, b: 1, c: 0.1 },
    {
      type: 'dense',
      weights: Array.from({ length: 10 }, () => Array.from({ length: 4 * 4 * F }, () => r() * 0.3)),
      bias: Array.from({ length: 10 }, () => r()),
    },
  ],
};

/**
 * The smallest network of smallCnn's layer types (8x8 input, two filters, four outputs): a batch
 * query of 64 ciphertexts instead of 144, and 4 result ciphertexts instead of 10. For tests whose
 * subject is the path around the kernel (the wire frame, the sections' headers, seeds and
 * re-randomization key), not the network: its evaluation costs a third of smallCnn's.
 */
export const tinyCnn: Network = (() => {
  const t = rng(13);
  const filters = 2;
  return {
    input: { height: 8, width: 8 },
    layers: [
      {
        type: 'conv2d-parity',
        kernel: Array.from({ length: filters }, () => Array.from({ length: 5 }, () => Array.from({ length: 5 }, () => t() * 0.8))),
        bias: Array.from({ length: filters }, () => t() * 0.2),
      },
      { type: 'quadratic', a: 0.5, b: 1, c: 0.1 },
      {
        type: 'dense',
        weights: Array.from({ length: 4 }, () => Array.from({ length: 2 * 2 * filters }, () => t() * 0.3)),
        bias: Array.from({ length: 4 }, () => t()),
      },
    ],
  };
})();

/**
 * A 28x28 CNN (conv2d-parity with `filters` 5x5 filters, quadratic, dense 10) and an MLP
 * (784-`hidden`-10 with a quadratic), drawn in that order from `r`, which the caller may go on
 * drawing from.
 */
export function mnistShapedNetworks(r: () => number, filters: number, hidden: number): { cnn: Network; mlp: Network } {
  const cnn: Network = {
    input: { height: 28, width: 28 },
    layers: [
      {
        type: 'conv2d-parity',
        kernel: Array.from({ length: filters }, () => Array.from({ length: 5 }, () => Array.from({ length: 5 }, () => r() * 0.6))),
        bias: Array.from({ length: filters }, () => r() * 0.2),
      },
      { type: 'quadratic', a: 0.5, b: 1, c: 0.1 },
      {
        type: 'dense',
        weights: Array.from({ length: 10 }, () => Array.from({ length: 12 * 12 * filters }, () => r() * 0.1)),
        bias: Array.from({ length: 10 }, () => r()),
      },
    ],
  };
  const mlp: Network = {
    input: { height: 28, width: 28 },
    layers: [
      {
        type: 'dense',
        weights: Array.from({ length: hidden }, () => Array.from({ length: 784 }, () => r() * 0.1)),
        bias: Array.from({ length: hidden }, () => r()),
      },
      { type: 'quadratic', a: 0.7, b: 0.2, c: 0.1 },
      {
        type: 'dense',
        weights: Array.from({ length: 10 }, () => Array.from({ length: hidden }, () => r() * 0.3)),
        bias: Array.from({ length: 10 }, () => r()),
      },
    ],
  };
  return { cnn, mlp };
}
