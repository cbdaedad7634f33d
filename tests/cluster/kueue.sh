#!/usr/bin/env bash
# Builds Kueue's controller manager (sigs.k8s.io/kueue/cmd/kueue) from the Go module proxy, once per
# machine, into ${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}/kueue/$KUEUE_VERSION/:
#   bin/kueue   the manager
#   crd/        the release's own CRDs (config/components/crd/bases of the module, copied as they are)
#   version.env KUEUE_VERSION, the commit the proxy records, Go version, timings
#
# sigs.k8s.io/kueue has no replace directives, so `go install mod@version` builds it with the release's
# go.mod as the main module: every dependency at exactly the version the release pins, no wrapper needed.
# A run that finds the binary (whose build info names the module at $KUEUE_VERSION), the CRDs and
# version.env exits at once. Any failure exits non-zero with the reason; see docs/kueue.md.
#
# Environment:
#   KUEUE_VERSION      release to build (default below)
#   MODELDEPLOY_CACHE  cache root (default $HOME/.cache/modeldeploy)
#   GOMODCACHE/GOCACHE honoured when set (and kept); otherwise private to this build ($ROOT/go) and deleted
#                      once the binary is in place
# Prints the release directory on stdout; progress goes to stderr.
set -euo pipefail
shopt -s inherit_errexit

KUEUE_VERSION=${KUEUE_VERSION:-v0.19.2}
MODULE=sigs.k8s.io/kueue
CACHE=${MODELDEPLOY_CACHE:-${HOME:?HOME is not set}/.cache/modeldeploy}
ROOT=$CACHE/kueue/$KUEUE_VERSION
INFO=$ROOT/version.env

log() { printf 'kueue.sh %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'kueue.sh: error: %s\n' "$*" >&2; exit 1; }

[[ $KUEUE_VERSION =~ ^v0\.[0-9]+\.[0-9]+$ ]] || die "KUEUE_VERSION must look like v0.19.2, got '$KUEUE_VERSION'"

built_version() { # binary -> the version of $MODULE its build info records (go install stamps it)
  go version -m "$1" 2>/dev/null | awk -v m="$MODULE" '$1 == "mod" && $2 == m { print $3 }'
}

cache_is_complete() {
  [[ -f $INFO && -x $ROOT/bin/kueue && -f $ROOT/crd/kueue.x-k8s.io_workloads.yaml ]] || return 1
  [[ $(built_version "$ROOT/bin/kueue") == "$KUEUE_VERSION" ]]
}

command -v go >/dev/null || die "go is not on PATH; Kueue is built from source with Go"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false
PRIVATE_GO=()
[[ -n ${GOMODCACHE:-} ]] || { export GOMODCACHE=$ROOT/go/mod; PRIVATE_GO+=(-modcache); }
[[ -n ${GOCACHE:-} ]] || { export GOCACHE=$ROOT/go/build; PRIVATE_GO+=(-cache); }

if cache_is_complete; then
  log "cache hit: $ROOT"
  echo "$ROOT"
  exit 0
fi

mkdir -p "$ROOT"
# One builder per version at a time.
. "$(dirname "${BASH_SOURCE[0]}")/build-lock.sh"
take_build_lock "$ROOT"
STAGE=$ROOT/stage.$$
trap 'rm -rf "$LOCK" "$STAGE"' EXIT

if cache_is_complete; then
  log "cache hit after waiting: $ROOT"
  echo "$ROOT"
  exit 0
fi

log "$(go version); GOMODCACHE=$GOMODCACHE GOCACHE=$GOCACHE"
START=$SECONDS
json_field() { sed -n "s/^[[:space:]]*\"$1\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" | head -n1; }

JSON=$(go mod download -json "$MODULE@$KUEUE_VERSION" 2>&1) || die "go mod download $MODULE@$KUEUE_VERSION failed: $JSON"
DIR=$(printf '%s\n' "$JSON" | json_field Dir)
GOMOD=$(printf '%s\n' "$JSON" | json_field GoMod)
INFOFILE=$(printf '%s\n' "$JSON" | json_field Info)
[[ -d $DIR/config/components/crd/bases ]] || die "$MODULE@$KUEUE_VERSION has no config/components/crd/bases"
# go install refuses a module with replace directives; say so plainly rather than let it fail obscurely.
if [[ -z $(go mod edit -json "$GOMOD" | sed -n '/"Replace": null,$/p') ]]; then
  die "$MODULE@$KUEUE_VERSION has replace directives; it needs a wrapper module like build.sh's"
fi
# The stamp Kueue's Makefile sets; the commit and time are the ones the proxy records for the tag.
COMMIT=$(sed -n 's/.*"Hash":"\([0-9a-f]*\)".*/\1/p' "$INFOFILE")
RELEASED=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$INFOFILE")
[[ -n $RELEASED ]] || die "no release time in $INFOFILE"
LDFLAGS="-s -w -X $MODULE/pkg/version.GitVersion=$KUEUE_VERSION -X $MODULE/pkg/version.GitCommit=$COMMIT"
LDFLAGS+=" -X $MODULE/pkg/version.BuildDate=$RELEASED"
RESOLVE=$((SECONDS - START))

log "go install $MODULE/cmd/kueue@$KUEUE_VERSION"
mkdir -p "$STAGE/bin" "$STAGE/crd"
GOBIN=$STAGE/bin go install -p 2 -trimpath -ldflags "$LDFLAGS" "$MODULE/cmd/kueue@$KUEUE_VERSION" ||
  die "go install $MODULE/cmd/kueue@$KUEUE_VERSION failed"
[[ $(built_version "$STAGE/bin/kueue") == "$KUEUE_VERSION" ]] || die "the built binary does not record $MODULE $KUEUE_VERSION"
BUILD=$((SECONDS - START - RESOLVE))
cp "$DIR"/config/components/crd/bases/*.yaml "$STAGE/crd/"
chmod -R u+w "$STAGE/crd" # the module cache is read-only

rm -rf "$ROOT/bin" "$ROOT/crd"
mv "$STAGE/bin" "$ROOT/bin"
mv "$STAGE/crd" "$ROOT/crd"
{
  echo "KUEUE_VERSION=$KUEUE_VERSION"
  echo "KUEUE_COMMIT=$COMMIT"
  echo "GO_VERSION=$(go env GOVERSION)"
  echo "BUILT_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "RESOLVE_SECONDS=$RESOLVE"
  echo "BUILD_SECONDS=$BUILD"
} >"$INFO"
log "done in $((SECONDS - START))s (resolve ${RESOLVE}s, build ${BUILD}s); bin/kueue $(du -h "$ROOT/bin/kueue" | cut -f1)"
if ((${#PRIVATE_GO[@]})); then
  go clean "${PRIVATE_GO[@]}" && rm -rf "$ROOT/go" && log "removed this build's Go caches ($ROOT/go)"
fi
echo "$ROOT"
