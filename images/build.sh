#!/usr/bin/env bash
# Builds the project's container images with buildah (vfs storage, chroot isolation: no daemon, no
# privileges beyond root, no registry):
#   operator        modeldeploy[operator] on BASE_IMAGE
#   jobs-cpu        modeldeploy[cpu] on BASE_IMAGE, torch from TORCH_INDEX_URL
#   jobs-ascend     modeldeploy on CANN_BASE        (only when CANN_BASE is set)
#   jobs-magicmind  modeldeploy on MAGICMIND_BASE   (only when MAGICMIND_BASE is set)
# tagged with the references of operator/modeldeploy/images.py. Usage: images/build.sh [NAME...]
#
# BASE_IMAGE defaults to a Debian bookworm made here with debootstrap (minbase, python3, python3-venv,
# ca-certificates), so nothing is pulled. Python packages come from a wheelhouse that pip downloads on the host
# (the host's network and certificates) and that each build mounts with pip told to use it alone: the image's
# packages are what the host resolved. An image whose inputs (Containerfile, base image, build arguments, the
# project's sources) are unchanged is not rebuilt. Each image's size is printed; progress goes to stderr.
#
# Environment:
#   TORCH_INDEX_URL   where torch and torchvision come from (default: PyTorch's CPU index); "pip" takes them
#                     from pip's configured index (the CUDA builds on Linux) for hosts that cannot reach it
#   BASE_IMAGE        base of the operator and CPU images (default: the local Debian base)
#   CANN_BASE, CANN_RELEASE            base and toolkit release of the Ascend image (release default: the
#                                      backend's default, as images.py tags it)
#   MAGICMIND_BASE, MAGICMIND_RELEASE  the same for the MagicMind image
#   DEBIAN_MIRROR     debootstrap's mirror (default: http://deb.debian.org/debian)
#   PYTHON            the host Python that builds the wheel and reads images.py (default: python3)
#   MODELDEPLOY_CACHE cache root (default $HOME/.cache/modeldeploy); images live in its images/storage:
#                     buildah --storage-driver vfs --root "$MODELDEPLOY_CACHE/images/storage" images
set -euo pipefail
shopt -s inherit_errexit

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MODELDEPLOY_CACHE:-${HOME:?HOME is not set}/.cache/modeldeploy}/images
PYTHON=${PYTHON:-python3}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_PACKAGES=python3,python3-venv,ca-certificates
LOCAL_BASE=localhost/modeldeploy-base:$DEBIAN_SUITE
KEY_LABEL=io.modeldeploy.build-key

log() { printf 'images %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'images/build.sh: error: %s\n' "$*" >&2; exit 1; }

bah() { buildah --storage-driver vfs --root "$CACHE/storage" --runroot "$CACHE/run" "$@"; }

# The label a build stamps on its image: the hash of everything the image is made from.
key_of() { bah inspect --type image --format "{{index .OCIv1.Config.Labels \"$KEY_LABEL\"}}" "$1" 2>/dev/null || true; }
image_id() { bah inspect --type image --format '{{.FromImageID}}' "$1"; }
size_of() { bah images --noheading --format '{{.Size}}' "$1" | head -n1; }

reference() { # name -> the reference images.py gives it
  PYTHONPATH="$REPO/operator" "$PYTHON" -c '
import sys
from modeldeploy import images
name, release = sys.argv[1], sys.argv[2]
print({"operator": images.operator_image, "jobs-cpu": images.cpu_jobs_image}[name]() if not release
      else {"jobs-ascend": images.ascend_jobs_image, "jobs-magicmind": images.magicmind_jobs_image}[name](release))
' "$1" "${2:-}"
}

default_release() { # backend -> the release a target gets when it names none
  PYTHONPATH="$REPO/operator" "$PYTHON" -c "from modeldeploy.backends.$1 import $2; print($2)"
}

sources_hash() { # the project's sources that go into the wheel
  (cd "$REPO" && find pyproject.toml README.md operator jobs -type f \
     ! -path '*/__pycache__/*' ! -path '*.egg-info/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum) |
    sha256sum | cut -c1-64
}

# The Debian base: debootstrap's tree imported as a one-layer image.
debian_base() {
  local key
  key=$(printf '%s\n' "$DEBIAN_SUITE" "$DEBIAN_PACKAGES" "$DEBIAN_MIRROR" minbase | sha256sum | cut -c1-64)
  if [[ $(key_of "$LOCAL_BASE") == "$key" ]]; then
    log "cache hit: $LOCAL_BASE"
    return
  fi
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  local started=$SECONDS tree=$CACHE/debootstrap.$$ container
  rm -rf "$tree" "$tree.tar"
  log "debootstrap $DEBIAN_SUITE ($DEBIAN_PACKAGES) from $DEBIAN_MIRROR"
  debootstrap --variant=minbase --include="$DEBIAN_PACKAGES" "$DEBIAN_SUITE" "$tree" "$DEBIAN_MIRROR" \
    >"$CACHE/debootstrap.log" 2>&1 || die "debootstrap failed; see $CACHE/debootstrap.log"
  rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*
  container=$(bah from scratch)
  tar -C "$tree" -cf "$tree.tar" .
  bah add "$container" "$tree.tar" / >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd /bin/bash --label "$KEY_LABEL=$key" "$container"
  bah commit --quiet --rm "$container" "$LOCAL_BASE" >/dev/null
  rm -rf "$tree" "$tree.tar"
  log "built $LOCAL_BASE in $((SECONDS - started))s"
}

base_python() { # image -> its python3's X.Y, asked once per image
  local id known container version
  id=$(image_id "$1")
  known=$CACHE/python-of/$id
  if [[ ! -s $known ]]; then
    container=$(bah from --quiet "$1")
    version=$(bah run --isolation chroot "$container" -- python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    bah rm "$container" >/dev/null
    mkdir -p "$CACHE/python-of"
    printf '%s\n' "$version" >"$known"
  fi
  cat "$known"
}

WHEEL_DIR=""
project_wheel() { # builds the modeldeploy wheel once per run, from a copy of the sources
  [[ -n $WHEEL_DIR ]] && return
  WHEEL_DIR=$(mktemp -d "$CACHE/wheel.XXXXXX")
  local copy=$WHEEL_DIR/src
  mkdir -p "$copy"
  (cd "$REPO" && tar --exclude=__pycache__ --exclude='*.egg-info' -cf - pyproject.toml README.md operator jobs) |
    tar -C "$copy" -xf -
  "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WHEEL_DIR/dist" "$copy" >&2 ||
    die "building the modeldeploy wheel failed"
  rm -rf "$copy"
  cp "$REPO/images/requirement.py" "$WHEEL_DIR/dist/"
}

wheelhouse() { # python X.Y, requirements... -> the wheelhouse dir holding those requirements; the index is
  # asked only when the wheelhouse cannot satisfy them alone
  local python=$1; shift
  local dir options
  dir=$(wheelhouse_dir "$python")
  options=(--quiet --dest "$dir" --find-links "$dir" --only-binary=:all: --python-version "$python")
  mkdir -p "$dir"
  if ! "$PYTHON" -m pip download "${options[@]}" --no-index "$@" >/dev/null 2>&1; then
    "$PYTHON" -m pip download "${options[@]}" "$@" >&2 || die "downloading $* into $dir failed"
  fi
  rm -f "$dir"/modeldeploy-*.whl  # the project's own wheel is mounted from the build context
  printf '%s\n' "$dir"
}

wheelhouse_dir() { # python X.Y -> the wheelhouse for it and TORCH_INDEX_URL
  printf '%s/wheels/py%s-%s\n' "$CACHE" "$1" "$(printf '%s' "$TORCH_INDEX_URL" | sha256sum | cut -c1-12)"
}

torch_wheels() { # wheel, python X.Y: puts the torch and torchvision the wheel pins, from TORCH_INDEX_URL, into the
  # wheelhouse
  local wheel=$1 python=$2 index=() dir pins
  pins=("$("$PYTHON" "$REPO/images/requirement.py" "$wheel" torch torch)"
        "$("$PYTHON" "$REPO/images/requirement.py" "$wheel" torch torchvision)")
  [[ $TORCH_INDEX_URL == pip ]] || index=(--index-url "$TORCH_INDEX_URL")
  dir=$(wheelhouse_dir "$python")
  mkdir -p "$dir"
  local options=(--quiet --dest "$dir" --only-binary=:all: --python-version "$python")
  if ! "$PYTHON" -m pip download "${options[@]}" --no-index --find-links "$dir" "${pins[@]}" >/dev/null 2>&1; then
    "$PYTHON" -m pip download "${options[@]}" "${index[@]}" "${pins[@]}" >&2 ||
      die "downloading ${pins[*]} from $TORCH_INDEX_URL failed (set TORCH_INDEX_URL, see docs/images.md)"
  fi
}

tree_hash() { # dir -> the hash of its files
  (cd "$1" && find . -type f ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-64
}

# build_image REF CONTAINERFILE BASE REQUIREMENTS CONTEXT BUILD-ARG...: builds REF unless an image of the same
# inputs is there. REQUIREMENTS (space-separated; "@" is the project's wheel, "+torch" the torch and torchvision
# the wheel pins, from TORCH_INDEX_URL) go into the wheelhouse first.
# CONTEXT is the build context; empty, it is the project's wheel in dist/.
build_image() {
  local ref=$1 containerfile=$2 base=$3 requirements=$4 context=$5; shift 5
  local key started=$SECONDS python wheel="" house previous
  key=$( { cat "$containerfile"; image_id "$base"; printf '%s\n' "$@" "$TORCH_INDEX_URL" "$requirements"
           if [[ -n $context ]]; then tree_hash "$context"; else sources_hash; fi; } | sha256sum | cut -c1-64)
  if [[ $(key_of "$ref") == "$key" ]]; then
    log "cache hit: $ref"
    printf '%s\t%s\tcached\n' "$ref" "$(size_of "$ref")"
    return
  fi
  if [[ -z $context ]]; then
    project_wheel
    context=$WHEEL_DIR
    wheel=$(ls "$WHEEL_DIR"/dist/modeldeploy-*.whl)
  fi
  python=$(base_python "$base")
  if [[ $requirements == *+torch* ]]; then torch_wheels "$wheel" "$python"; fi
  requirements=${requirements//+torch/}
  house=$(wheelhouse "$python" ${requirements//@/$wheel})
  previous=$(image_id "$ref" 2>/dev/null || true)
  log "building $ref from $(basename "$containerfile") on $base"
  bah bud --quiet --isolation chroot --layers=false --disable-compression=false \
    --volume "$house:/tmp/wheels:ro" --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/tmp/wheels \
    --build-arg "BASE=$base" --build-arg "VERSION=$(reference_version)" \
    --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --build-arg "REVISION=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || true)" \
    "$@" --label "$KEY_LABEL=$key" --file "$containerfile" --tag "$ref" "$context" >/dev/null 2>"$CACHE/bud.err" ||
    bud_failed "$ref"
  log "built $ref in $((SECONDS - started))s"
  if [[ -n $previous ]]; then  # the image this one replaces, untagged now: vfs keeps every layer whole
    bah rmi "$previous" >/dev/null 2>&1 || log "kept the replaced image $previous: a container uses it"
  fi
  printf '%s\t%s\tbuilt in %ss\n' "$ref" "$(size_of "$ref")" "$((SECONDS - started))"
}

bud_failed() { # ref: buildah's own output, then the cause when it is the disk
  cat "$CACHE/bud.err" >&2
  if grep -q "no space left on device" "$CACHE/bud.err"; then
    die "building $1 failed: the disk is full ($(df -h --output=avail "$CACHE" | tail -1 | tr -d ' ') free on the" \
      "file system of $CACHE). vfs storage keeps each layer whole, and a commit holds the container's files," \
      "the compressed layer twice and the unpacked layer at once: about three times the image's size. Free" \
      "that much, or set MODELDEPLOY_CACHE to a larger disk (docs/images.md)"
  fi
  die "building $1 failed"
}

reference_version() { PYTHONPATH="$REPO/operator" "$PYTHON" -c 'import modeldeploy; print(modeldeploy.__version__)'; }

cleanup() { [[ -z $WHEEL_DIR ]] || rm -rf "$WHEEL_DIR"; }

main() {
  command -v buildah >/dev/null || die "buildah is not installed (apt-get install buildah)"
  mkdir -p "$CACHE"
  trap cleanup EXIT
  local names=("$@") base
  ((${#names[@]})) || names=(operator jobs-cpu jobs-ascend jobs-magicmind)
  base=${BASE_IMAGE:-$LOCAL_BASE}
  if [[ -z ${BASE_IMAGE:-} ]]; then debian_base; fi
  for name in "${names[@]}"; do
    case $name in
      operator)
        build_image "$(reference operator)" "$REPO/images/operator.Containerfile" "$base" "@[operator]" "" ;;
      jobs-cpu)
        build_image "$(reference jobs-cpu)" "$REPO/images/jobs-cpu.Containerfile" "$base" "@[cpu] +torch" "" \
          --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL" ;;
      jobs-ascend)
        if [[ -z ${CANN_BASE:-} ]]; then log "skipping jobs-ascend: CANN_BASE is not set"; continue; fi
        local cann=${CANN_RELEASE:-$(default_release ascend CANN_VERSION)}
        build_image "$(reference jobs-ascend "$cann")" "$REPO/images/jobs-ascend.Containerfile" "$CANN_BASE" \
          "@ numpy" "" --build-arg "CANN_BASE=$CANN_BASE" --build-arg "CANN_RELEASE=$cann" ;;
      jobs-magicmind)
        if [[ -z ${MAGICMIND_BASE:-} ]]; then log "skipping jobs-magicmind: MAGICMIND_BASE is not set"; continue; fi
        local mm=${MAGICMIND_RELEASE:-$(default_release magicmind MAGICMIND_VERSION)}
        build_image "$(reference jobs-magicmind "$mm")" "$REPO/images/jobs-magicmind.Containerfile" \
          "$MAGICMIND_BASE" "@ numpy" "" --build-arg "MAGICMIND_BASE=$MAGICMIND_BASE" \
          --build-arg "MAGICMIND_RELEASE=$mm" ;;
      *) die "unknown image '$name' (operator, jobs-cpu, jobs-ascend, jobs-magicmind)" ;;
    esac
  done
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
