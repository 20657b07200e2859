#!/usr/bin/env bash
# Builds the sandbox's real parts from upstream Go modules into a cache outside the repo:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, AEMM.
# Each part lives in its own folder keyed by its version; a warm cache makes this a no-op.
# Usage: sandbox/build-binaries.sh            (prints the bin directory on its last line)
# Env:   SPOTGUARD_CACHE  cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/spotguard)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${SPOTGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spotguard}"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
command -v go >/dev/null || { echo "build-binaries: Go is not installed; install Go 1.24 or newer first" >&2; exit 1; }

step=0
total=4
progress() { step=$((step + 1)); echo "[sandbox build $step/$total] $*" >&2; }

# $1 part dir, rest: binary names; true when every binary is already there.
have() { local dir="$1"; shift; for b in "$@"; do [ -x "$dir/$b" ] || return 1; done; }

build_kubernetes() {
  local out="$cache/kubernetes-$KUBERNETES_VERSION"
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  if have "$out" "${bins[@]}"; then progress "kubernetes $KUBERNETES_VERSION: cached"; return; fi
  progress "kubernetes $KUBERNETES_VERSION: building ${bins[*]} (cold: 10-25 min on 2 cores)"
  local work; work="$(mktemp -d)"; trap 'rm -rf "$work"' RETURN
  local staging="v0${KUBERNETES_VERSION#v1}"   # v1.34.4 -> v0.34.4
  (
    cd "$work"
    go mod init spotguard.local/k8sbuild >/dev/null 2>&1
    go mod edit -require="k8s.io/kubernetes@$KUBERNETES_VERSION"
    modfile="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    # Every staging module is required at v0.0.0 and replaced into ./staging upstream.
    for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$modfile" | sort -u); do
      go mod edit -replace="$m=$m@$staging"
    done
    local ver="${KUBERNETES_VERSION#v}"
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
      -X k8s.io/component-base/version.gitMajor=${ver%%.*} \
      -X k8s.io/component-base/version.gitMinor=$(echo "$ver" | cut -d. -f2) \
      -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
    mkdir -p "$out.tmp"
    go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_wrapped() {  # $1 name, $2 version, $3 module, $4 package, $5 binary name
  local out="$cache/$1-$2"
  if have "$out" "$5"; then progress "$1 $2: cached"; return; fi
  progress "$1 $2: building"
  local work; work="$(mktemp -d)"; trap 'rm -rf "$work"' RETURN
  (
    cd "$work"
    go mod init "spotguard.local/$1build" >/dev/null 2>&1
    go mod edit -require="$3@$2"
    mkdir -p "$out.tmp"
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/$5" "$4"
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

mkdir -p "$cache"
build_wrapped etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3 etcd
build_wrapped kwok "$KWOK_VERSION" sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok kwok
build_wrapped aemm "$AEMM_VERSION" github.com/aws/amazon-ec2-metadata-mock \
  github.com/aws/amazon-ec2-metadata-mock/cmd amazon-ec2-metadata-mock
build_kubernetes
echo "$cache"
