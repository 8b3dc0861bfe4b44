// Import rules that `npm run lint` checks (dependency-cruiser). Every import counts: static,
// dynamic (`await import()`) and type-only (`import type`, `typeof import()`), so a cycle is a
// cycle even when one of its edges is erased at run time or taken lazily.
//
// Layers point down: cli -> web -> client | server | train -> model -> fhe | wire -> util,
// errors.ts; storage (S3) and sagemaker sit aside, under whichever layer uses them. Small pieces
// that two layers share (hashing, limits, constants) go down to a module both may import.
const SRC = '^src/';
const BOTTOM = '^src/(fhe|wire|util)/|^src/errors[.]ts$';

/** @type {import('dependency-cruiser').IConfiguration} */
export default {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'An import cycle: move the piece both modules need into a module of its own, below both.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'bottom-imports-no-layer-above',
      severity: 'error',
      comment: 'fhe, wire, util and errors.ts are the bottom layer: they import nothing else of src/.',
      from: { path: BOTTOM },
      to: { path: SRC, pathNot: BOTTOM },
    },
    {
      name: 'model-imports-only-below',
      severity: 'error',
      comment: 'src/model imports only fhe, wire, util and errors.ts (a piece it shares with a layer above goes down).',
      from: { path: '^src/model/' },
      to: { path: SRC, pathNot: `^src/model/|${BOTTOM}` },
    },
    {
      name: 'storage-stands-aside',
      severity: 'error',
      comment: 'src/storage (S3) imports only errors.ts and util: the layers above use it, not the other way round.',
      from: { path: '^src/storage/' },
      to: { path: SRC, pathNot: '^src/storage/|^src/util/|^src/errors[.]ts$' },
    },
    {
      name: 'client-server-train-are-siblings',
      severity: 'error',
      comment: 'client, server and train do not import one another (what two of them share goes down to model or below).',
      from: { path: '^src/(client|server|train)/' },
      to: { path: '^src/(client|server|train)/', pathNot: '^src/$1/' },
    },
    {
      name: 'only-cli-imports-cli',
      severity: 'error',
      comment: 'src/cli is the top layer: nothing else in src/ imports it.',
      from: { path: SRC, pathNot: '^src/cli/' },
      to: { path: '^src/cli/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|out|[.]tap|[.]cache)/' },
    // Type-only imports are dependencies too (they are resolved through the TypeScript compiler).
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.json'] },
  },
};
