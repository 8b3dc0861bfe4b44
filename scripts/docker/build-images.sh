#!/usr/bin/env bash
# Builds the two SageMaker images, sealed-inference:dev and sealed-training:dev, from the repo root.
# Usable on a fresh Debian machine as root (CI): installs docker.io and debootstrap when missing,
# starts dockerd when it is not running, makes the node:24-bookworm-slim stand-in when that tag
# is missing (scripts/docker/make-base-image.sh), then builds with BuildKit.
# A CA bundle (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, npm's cafile or the system's) is handed to `npm ci` as the
# BuildKit secret `npmca` (it never lands in a layer).
#
# Usage: scripts/docker/build-images.sh [extra docker build args, e.g. --no-cache --progress=plain]
# Env:   DOCKER   docker CLI with BuildKit (default /usr/bin/docker when present, else docker)
#        TAG      image tag (default dev)
#        PRUNE_TFJS=1  leave @tensorflow out of the inference image (needs a CLI that loads
#                 src/train/ lazily; the build checks it)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
TAG=${TAG:-dev}

log() { echo "build-images: $*" >&2; }
die() { log "error: $*"; exit 1; }
t_all=$SECONDS
step_t=$SECONDS
step_done() { log "$1 took $((SECONDS - step_t)) s"; step_t=$SECONDS; }

# --- tools: a docker CLI that can use BuildKit (RUN --mount), dockerd, debootstrap -------------
pick_docker() {
  if [ -n "${DOCKER:-}" ]; then return; fi
  if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker
  elif command -v docker >/dev/null && docker buildx version >/dev/null 2>&1; then DOCKER=docker
  fi
}
pick_docker
missing=()
if [ -z "${DOCKER:-}" ]; then
  missing+=(docker.io)
elif ! command -v dockerd >/dev/null && ! "$DOCKER" info >/dev/null 2>&1; then
  missing+=(docker.io)
fi
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; run as root (or install them) first"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  pick_docker
  DOCKER=${DOCKER:-/usr/bin/docker}
fi
export DOCKER
step_done "tools"

# --- dockerd ------------------------------------------------------------------------------------
if ! "$DOCKER" info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || die "$DOCKER cannot reach a daemon and there is no dockerd"
  log "starting dockerd (log: /tmp/dockerd.log)"
  setsid dockerd >/tmp/dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    "$DOCKER" info >/dev/null 2>&1 && break
    sleep 1
  done
  "$DOCKER" info >/dev/null 2>&1 || { tail -20 /tmp/dockerd.log >&2; die "dockerd did not come up in 60 s"; }
fi
step_done "dockerd"

# --- base image -----------------------------------------------------------------------------------
"$root/scripts/docker/make-base-image.sh"
step_done "base image"

# --- the two images -------------------------------------------------------------------------------
# The CA bundle npm needs behind a TLS-inspecting proxy: SSL_CERT_FILE, else Node's extra CA
# certificates, else npm's own cafile setting, else the system's bundle (a shell started with a
# clean environment has none of the first two, and npm's global config moves with the node on
# PATH: with Node 24 from .cache/node first, Debian's /etc/npmrc, which holds the cafile on
# these machines, is not read. On 2026-12-02 that left the build without the proxy's CA and
# every registry request failed once npm's retries ran out, ~73 s in.)
ca_bundle=${SSL_CERT_FILE:-${NODE_EXTRA_CA_CERTS:-}}
if [ -z "$ca_bundle" ] && command -v npm >/dev/null; then
  ca_bundle=$(npm config get cafile 2>/dev/null || true)
  case "$ca_bundle" in null | undefined) ca_bundle= ;; esac
fi
if [ -z "$ca_bundle" ] && [ -r /etc/npmrc ]; then
  ca_bundle=$(sed -n 's/^[[:space:]]*cafile[[:space:]]*=[[:space:]]*//p' /etc/npmrc | tail -1)
fi
if [ -z "$ca_bundle" ] && [ -r /etc/ssl/certs/ca-certificates.crt ]; then ca_bundle=/etc/ssl/certs/ca-certificates.crt; fi
secret=()
if [ -n "$ca_bundle" ]; then
  [ -r "$ca_bundle" ] || die "the CA bundle $ca_bundle (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, npm's cafile or the system's) is not readable"
  secret=(--secret "id=npmca,src=$ca_bundle")
  log "CA bundle for npm in the build: $ca_bundle"
else
  log "no CA bundle found for npm in the build (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, npm's cafile, /etc/ssl/certs)"
fi
for kind in inference training; do
  log "building sealed-$kind:$TAG"
  args=()
  [ "$kind" = inference ] && [ -n "${PRUNE_TFJS:-}" ] && args=(--build-arg "PRUNE_TFJS=$PRUNE_TFJS")
  # Retries: behind the proxy a registry request sometimes fails its TLS handshake
  # (SELF_SIGNED_CERT_IN_CHAIN on one package of hundreds, seen in CI on 2026-12-01; the same
  # build passed at once on a retry). Once, the same package failed for minutes (npm's own
  # retries and a second build both failed; a build 8 minutes later passed), hence three
  # attempts a minute apart. The npm cache mount keeps what an earlier attempt fetched.
  for attempt in 1 2 3; do
    DOCKER_BUILDKIT=1 "$DOCKER" build "${secret[@]}" "${args[@]}" -f "Dockerfile.$kind" -t "sealed-$kind:$TAG" "$@" . && break
    [ "$attempt" = 3 ] && die "building sealed-$kind:$TAG failed three times"
    log "building sealed-$kind:$TAG failed (attempt $attempt); retrying in 60 s"
    sleep 60
  done
  step_done "sealed-$kind:$TAG"
done

# --- smoke test: node-seal's WASM loads, and the CLI starts (all its static imports resolve) ------
for kind in inference training; do
  img="sealed-$kind:$TAG"
  "$DOCKER" run --rm --entrypoint node "$img" -e \
    "import('node-seal').then(async m => { const s = await m.default(); if (typeof s.SEALContext !== 'function') process.exit(1) })" \
    || die "$img: node-seal does not load"
  if [ -f src/cli/main.ts ]; then
    "$DOCKER" run --rm "$img" --help >/dev/null || die "$img: 'node src/cli/main.ts --help' fails"
  else
    log "warning: src/cli/main.ts does not exist yet; CLI not checked"
  fi
done
step_done "smoke test"

"$DOCKER" image ls --format 'table {{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.Size}}' \
  | awk -v t="$TAG" 'NR == 1 || $1 == "sealed-inference:" t || $1 == "sealed-training:" t || $1 == "node:24-bookworm-slim"'
log "done in $((SECONDS - t_all)) s"
