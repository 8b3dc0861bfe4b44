// Node's built-in modules for code that also runs in browsers (src/fhe, src/util): found at run
// time by process.getBuiltinModule (Node >= 22.3), so the browser bundle never imports node:*
// and callers fall back to portable code where this returns undefined.
type Builtins = { 'node:crypto': typeof import('node:crypto'); 'node:fs': typeof import('node:fs'); 'node:zlib': typeof import('node:zlib') };

export function nodeBuiltin<K extends keyof Builtins>(id: K): Builtins[K] | undefined {
  const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  return proc?.getBuiltinModule?.(id) as Builtins[K] | undefined;
}
