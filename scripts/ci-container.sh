#!/usr/bin/env bash
# CI: builds both SageMaker images (scripts/docker/build-images.sh) and runs the container
# contract test on them (npm run test:container) with TAP output.
# Needs: root (the build installs docker.io/debootstrap when missing), Node >= 22 on PATH and
# `npm ci` done (the test's client, S3 server and emulator run on the host).
# The last line is always "# { total: N, pass: N, fail: N }" (as tap's, with fail: even when 0),
# so .ci/run can add the counts; the exit code is non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=$(mktemp /tmp/sealed-ci-container.XXXXXX)
trap 'rm -f "$out"' EXIT
t0=$SECONDS

if ! bash scripts/docker/build-images.sh; then
  echo "not ok - building the images failed (scripts/docker/build-images.sh)"
  echo "# { total: 1, pass: 0, fail: 1 }"
  exit 1
fi
echo "# ci-container: images built in $((SECONDS - t0)) s"

t1=$SECONDS
npm run --silent test:container -- --reporter=tap 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
echo "# ci-container: contract test took $((SECONDS - t1)) s"

summary=$(grep -E '^# \{ total' "$out" | tail -1)
total=$(sed -nE 's/.*total: ([0-9]+).*/\1/p' <<<"$summary")
pass=$(sed -nE 's/.*pass: ([0-9]+).*/\1/p' <<<"$summary")
fail=$(sed -nE 's/.*fail: ([0-9]+).*/\1/p' <<<"$summary")
total=${total:-0} pass=${pass:-0} fail=${fail:-0}
# A crash before tap's summary (or an exit code without failed assertions) still counts as one.
if [ "$status" -ne 0 ] && [ "$fail" -eq 0 ]; then
  fail=1 total=$((total + 1))
fi
echo "# { total: $total, pass: $pass, fail: $fail }"
[ "$status" -eq 0 ] && [ "$fail" -eq 0 ]
