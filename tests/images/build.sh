#!/usr/bin/env bash
# Builds what tests/images needs, each only when its inputs changed (images/build.sh keys them by content):
# the Debian base, the operator and CPU job images, the stand-in vendor bases (this folder's Containerfiles:
# the Debian base with tests/ascend_toolchain or tests/magicmind_toolchain where the vendor's files live), and
# the Ascend and MagicMind job images on them. Prints one line per image: reference, size, built or cached.
# The stand-in bases exist only here; they are never shipped.
#
# TORCH_INDEX_URL defaults to "pip" here, not to PyTorch's CPU index as in `make images`: the tests build
# where only the package registries are reachable, which serve the CUDA build of torch (docs/images.md).
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export TORCH_INDEX_URL=${TORCH_INDEX_URL:-pip}
# shellcheck source=../../images/build.sh
source "$HERE/../../images/build.sh"

CANN_STANDIN=localhost/modeldeploy-test/cann-standin:latest
MAGICMIND_STANDIN=localhost/modeldeploy-test/magicmind-standin:latest

command -v buildah >/dev/null || die "buildah is not installed (apt-get install buildah)"
mkdir -p "$CACHE"
trap cleanup EXIT
debian_base
main operator jobs-cpu
build_image "$CANN_STANDIN" "$HERE/cann-standin.Containerfile" "$LOCAL_BASE" "numpy onnx onnxruntime" \
  "$REPO/tests/ascend_toolchain" --build-arg "CANN_RELEASE=$(default_release ascend CANN_VERSION)"
build_image "$MAGICMIND_STANDIN" "$HERE/magicmind-standin.Containerfile" "$LOCAL_BASE" "numpy onnx onnxruntime" \
  "$REPO/tests/magicmind_toolchain"
CANN_BASE=$CANN_STANDIN MAGICMIND_BASE=$MAGICMIND_STANDIN main jobs-ascend jobs-magicmind
