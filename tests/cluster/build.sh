#!/usr/bin/env bash
# Builds the Kubernetes control plane from Go modules, once per machine:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes $KUBE_VERSION)
#   etcd                                                              (go.etcd.io/etcd/server/v3, the version
#                                                                      kubeadm pairs with that Kubernetes)
# into ${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}/kubernetes/$KUBE_VERSION/bin.
#
# A run that finds all five binaries there, answering --version with the expected versions,
# exits at once. Anything else is built; any failure exits non-zero with the reason.
# Needs only bash, coreutils and Go (GOTOOLCHAIN=local: the local Go must be new enough).
# See tests/cluster/README.md for why each step is as it is.
#
# Environment:
#   KUBE_VERSION       Kubernetes release to build (default below)
#   ETCD_VERSION       etcd release (default: kubeadm's DefaultEtcdVersion of that release)
#   MODELDEPLOY_CACHE  cache root (default $HOME/.cache/modeldeploy)
#   GOMODCACHE/GOCACHE honoured when set (and kept); otherwise private to this build ($ROOT/go) and deleted
#                      once the binaries are in place: they need neither, and the two hold several GiB
# Prints the bin directory on stdout; progress goes to stderr.
set -euo pipefail
shopt -s inherit_errexit # a failure inside $(...) stops the script too

KUBE_VERSION=${KUBE_VERSION:-v1.36.5}
CACHE=${MODELDEPLOY_CACHE:-${HOME:?HOME is not set}/.cache/modeldeploy}
ROOT=$CACHE/kubernetes/$KUBE_VERSION
BIN=$ROOT/bin
INFO=$ROOT/versions.env
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

log() { printf 'build.sh %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }

[[ $KUBE_VERSION =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "KUBE_VERSION must look like v1.36.5, got '$KUBE_VERSION'"
KUBE_MINOR=${BASH_REMATCH[1]}
STAGING_VERSION=v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}   # k8s.io/api etc. are published as v0.Y.Z for v1.Y.Z

# What each binary prints for --version once stamped.
expected_version() {
  case $1 in
    kubectl) echo "Client Version: $KUBE_VERSION" ;;
    etcd) echo "etcd Version: ${2#v}" ;;
    *) echo "Kubernetes $KUBE_VERSION" ;;
  esac
}

version_of() { # binary-path name -> the first line of what it says its version is
  local out
  if [[ $2 == kubectl ]]; then out=$("$1" version --client 2>&1); else out=$("$1" --version 2>&1); fi
  printf '%s\n' "${out%%$'\n'*}"
}

# The warm path: every binary present and reporting the expected version.
cache_is_complete() {
  [[ -f $INFO ]] || return 1
  local etcd_version b
  etcd_version=$(sed -n 's/^ETCD_VERSION=//p' "$INFO")
  [[ -n $etcd_version ]] || return 1
  [[ -z ${ETCD_VERSION:-} || $ETCD_VERSION == "$etcd_version" ]] || return 1
  for b in "${KUBE_CMDS[@]}" etcd; do
    [[ -x $BIN/$b ]] || return 1
    [[ $(version_of "$BIN/$b" "$b") == "$(expected_version "$b" "$etcd_version")" ]] || return 1
  done
}

if cache_is_complete; then
  log "cache hit: $BIN"
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || die "go is not on PATH; the control plane is built from source with Go"

mkdir -p "$ROOT"
# One builder per version at a time.
. "$(dirname "${BASH_SOURCE[0]}")/build-lock.sh"
take_build_lock "$ROOT"
STAGE=$ROOT/stage.$$
trap 'rm -rf "$LOCK" "$STAGE"' EXIT

# Another builder may have finished while we waited.
if cache_is_complete; then
  log "cache hit after waiting: $BIN"
  echo "$BIN"
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false
PRIVATE_GO=()
[[ -n ${GOMODCACHE:-} ]] || { export GOMODCACHE=$ROOT/go/mod; PRIVATE_GO+=(-modcache); }
[[ -n ${GOCACHE:-} ]] || { export GOCACHE=$ROOT/go/build; PRIVATE_GO+=(-cache); }
log "$(go version); GOMODCACHE=$GOMODCACHE GOCACHE=$GOCACHE"

START=$SECONDS
phase_start=$SECONDS
times=()
phase_done() { times+=("$1=$((SECONDS - phase_start))s"); log "$1 took $((SECONDS - phase_start))s"; phase_start=$SECONDS; }

# `go mod download -json mod@version` prints a JSON object; pull one string field out of it.
json_field() { sed -n "s/^[[:space:]]*\"$1\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" | head -n1; }

download() { # mod@version -> prints the JSON; fails with go's message
  local out
  out=$(go mod download -json "$1" 2>&1) || die "go mod download $1 failed: $out"
  printf '%s\n' "$out"
}

# Writes a wrapper module in $1 for $2 (mod@version) with siblings at $3, and resolves it for the tools $4...
make_wrapper() {
  local dir=$1 require=$2 sibling=$3; shift 3
  local json gomod
  json=$(download "$require")
  gomod=$(printf '%s\n' "$json" | json_field GoMod)
  [[ -f $gomod ]] || die "go mod download $require gave no go.mod"
  rm -rf "$dir" && mkdir -p "$dir"
  go run "$HERE/genwrapper.go" -gomod "$gomod" -module "modeldeploy.test/${dir##*/}" \
    -require "$require" -sibling-version "$sibling" >"$dir/go.mod" ||
    die "generating the wrapper go.mod for $require failed"
  local tools=() t
  for t in "$@"; do tools+=("$t@${require#*@}"); done
  (cd "$dir" && go get -tool "${tools[@]}") || die "resolving ${tools[*]} in the wrapper module $dir failed"
  # Fails if minimal version selection moved any dependency off the release's pins.
  go run "$HERE/genwrapper.go" -gomod "$gomod" -require "$require" -sibling-version "$sibling" -verify "$dir" ||
    die "the wrapper module for $require does not select the release's dependency versions"
  printf '%s\n' "$json"
}

# --- Kubernetes -----------------------------------------------------------------------------
log "building Kubernetes $KUBE_VERSION (staging modules at $STAGING_VERSION) into $BIN"
KJSON=$(make_wrapper "$ROOT/src/kubebin" "k8s.io/kubernetes@$KUBE_VERSION" "$STAGING_VERSION" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
KDIR=$(printf '%s\n' "$KJSON" | json_field Dir)
KINFO=$(printf '%s\n' "$KJSON" | json_field Info)
# buildDate: the release's own time as the proxy records it, so a rebuild stamps the same date.
BUILD_DATE=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$KINFO")
[[ -n $BUILD_DATE ]] || die "no release time in $KINFO"

if [[ -z ${ETCD_VERSION:-} ]]; then
  ETCD_VERSION=$(sed -n 's/^[[:space:]]*DefaultEtcdVersion = "\([0-9.]*\)-[0-9]*"$/v\1/p' \
    "$KDIR/cmd/kubeadm/app/constants/constants.go")
  [[ -n $ETCD_VERSION ]] || die "could not read kubeadm's DefaultEtcdVersion in $KDIR; set ETCD_VERSION"
fi
phase_done kube-resolve

# hack/lib/version.sh stamps these variables in both packages; kubectl reports the client-go one
# as well, and /version of every server reports the component-base one.
LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$KUBE_MINOR"
  LDFLAGS+=" -X $pkg.gitTreeState=archive -X $pkg.gitCommit= -X $pkg.buildDate=$BUILD_DATE"
done

mkdir -p "$STAGE"
for cmd in "${KUBE_CMDS[@]}"; do
  log "go build $cmd"
  (cd "$ROOT/src/kubebin" && go build -p 2 -trimpath -ldflags "$LDFLAGS" -o "$STAGE/$cmd" "k8s.io/kubernetes/cmd/$cmd") ||
    die "go build k8s.io/kubernetes/cmd/$cmd failed"
  got=$(version_of "$STAGE/$cmd" "$cmd") || die "$STAGE/$cmd does not run: $got"
  [[ $got == "$(expected_version "$cmd")" ]] || die "$cmd reports '$got', expected '$(expected_version "$cmd")'"
  phase_done "build-$cmd"
done

# --- etcd ---------------------------------------------------------------------------------
log "building etcd $ETCD_VERSION"
make_wrapper "$ROOT/src/etcdbin" "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "$ETCD_VERSION" \
  go.etcd.io/etcd/server/v3 >/dev/null
phase_done etcd-resolve
(cd "$ROOT/src/etcdbin" && go build -p 2 -trimpath -ldflags "-s -w" -o "$STAGE/etcd" go.etcd.io/etcd/server/v3) ||
  die "go build go.etcd.io/etcd/server/v3 failed"
got=$(version_of "$STAGE/etcd" etcd) || die "$STAGE/etcd does not run: $got"
[[ $got == "$(expected_version etcd "$ETCD_VERSION")" ]] || die "etcd reports '$got', expected '$(expected_version etcd "$ETCD_VERSION")'"
phase_done build-etcd

# --- publish --------------------------------------------------------------------------------
mkdir -p "$BIN"
for b in "${KUBE_CMDS[@]}" etcd; do mv -f "$STAGE/$b" "$BIN/$b"; done
{
  echo "KUBE_VERSION=$KUBE_VERSION"
  echo "ETCD_VERSION=$ETCD_VERSION"
  echo "GO_VERSION=$(go env GOVERSION)"
  echo "BUILD_DATE=$BUILD_DATE"
  echo "BUILT_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "BUILD_SECONDS=$((SECONDS - START))"
  echo "BUILD_PHASES=\"${times[*]}\""
} >"$INFO"
log "done in $((SECONDS - START))s: ${times[*]}"
log "sizes: $(cd "$BIN" && du -sh -- * | tr '\t\n' ': ')"
log "GOMODCACHE $(du -sh "$GOMODCACHE" | cut -f1), GOCACHE $(du -sh "$GOCACHE" | cut -f1)"
if ((${#PRIVATE_GO[@]})); then
  go clean "${PRIVATE_GO[@]}" && rm -rf "$ROOT/go" && log "removed this build's Go caches ($ROOT/go)"
fi
echo "$BIN"
