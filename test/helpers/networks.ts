// Small networks for batch-mode tests: fast to encrypt and evaluate, same layer types as MNIST.
import type { Network } from '../../src/model/network.ts';

export function rng(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31 - 0.5;
  };
}
/**
 * conv2d-parity (`filters` 5x5 filters over a side x side image) -> quadratic -> dense `outputs`,
 * weights drawn from `r` in that order (kernel, its bias, dense weights, their bias), scaled by
 * `kernelScale` and `denseScale`.
 */
function parityCnn(r: () => number, side: number, filters: number, outputs: number, kernelScale: number, denseScale: number): Network {
  const pooled = ((side - 4) / 2) ** 2;
  return {
    input: { height: side, width: side },
    layers: [
      {
        type: 'conv2d-parity',
        kernel: Array.from({ length: filters }, () => Array.from({ length: 5 }, () => Array.from({ length: 5 }, () => r() * kernelScale))),
        bias: Array.from({ length: filters }, () => r() * 0.2),
      },
      { type: 'quadratic', a: 0.5, b: 1, c: 0.1 },
      {
        type: 'dense',
        weights: Array.from({ length: outputs }, () => Array.from({ length: pooled * filters }, () => r() * denseScale)),
        bias: Array.from({ length: outputs }, () => r()),
      },
    ],
  };
}

export const F = 4;
export const side = 12;
export const smallCnn: Network = parityCnn(rng(11), side, F, 10, 0.8, 0.3);

/**
 * The smallest network of smallCnn's layer types (8x8 input, two filters, four outputs): a batch
 * query of 64 ciphertexts instead of 144, and 4 result ciphertexts instead of 10. For tests whose
 * subject is the path around the kernel (the wire frame, the sections' headers, seeds and
 * re-randomization key), not the network: its evaluation costs a third of smallCnn's.
 */
export const tinyCnn: Network = parityCnn(rng(13), 8, 2, 4, 0.8, 0.3);

/**
 * A 28x28 CNN (conv2d-parity with `filters` 5x5 filters, quadratic, dense 10) and an MLP
 * (784-`hidden`-10 with a quadratic), drawn in that order from `r`, which the caller may go on
 * drawing from.
 */
export function mnistShapedNetworks(r: () => number, filters: number, hidden: number): { cnn: Network; mlp: Network } {
  const cnn = parityCnn(r, 28, filters, 10, 0.6, 0.1);
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
