#!/usr/bin/env bash
# Builds the sandbox's real parts from upstream Go modules into a cache outside the repo:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, AEMM, helm.
# Each part lives in its own folder keyed by its version; a warm cache makes this a no-op.
# Usage: sandbox/build-binaries.sh            (prints the cache directory on its last line)
# Env:   SPOTGUARD_CACHE  cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/spotguard)
#
# Progress goes to stderr, one line per part: what, version, and how long it took. The Go tool's own output
# (module downloads, compiler messages) goes to <part>.log in a scratch directory and is printed in full only
# when that part's build fails.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${SPOTGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spotguard}"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
command -v go >/dev/null || { echo "build-binaries: Go is not installed; install Go 1.26 or newer first" >&2; exit 1; }

step=0
total=5
# Opens a part's progress line; finish_part closes it with the elapsed time.
start_part() { step=$((step + 1)); part_started=$SECONDS; printf '[sandbox build %d/%d] %s' "$step" "$total" "$*" >&2; }
finish_part() { printf ': %s (%ds)\n' "$1" "$((SECONDS - part_started))" >&2; }

# $1 part dir, rest: binary names; true when every binary is already there.
have() { local dir="$1"; shift; for b in "$@"; do [ -x "$dir/$b" ] || return 1; done; }

# $1 part name, $2 its log, rest: the command. Runs it with all output in the log; on failure prints the log and
# exits, so that the Go tool's words are seen only when they matter.
quietly() {
  local name="$1" log="$2" status; shift 2
  # A subshell outside any condition, so that `set -e` holds inside it and its `cd` stays inside it.
  set +e; ( set -e; "$@" ) >"$log" 2>&1; status=$?; set -e
  if [ "$status" -ne 0 ]; then
    finish_part "FAILED"
    echo "---- go output for $name (the last lines say what failed) ----" >&2
    cat "$log" >&2
    echo "---- end of go output for $name; nothing was installed into $cache ----" >&2
    exit 1
  fi
}

kubernetes_build() {  # $1 work dir, $2 output dir
  local work="$1" out="$2"
  local staging="v0${KUBERNETES_VERSION#v1}"   # v1.34.4 -> v0.34.4
  cd "$work"
  go mod init spotguard.local/k8sbuild
  go mod edit -require="k8s.io/kubernetes@$KUBERNETES_VERSION"
  local modfile
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
  mkdir -p "$out"
  go build -trimpath -ldflags "$ldflags" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
}

build_kubernetes() {
  local out="$cache/kubernetes-$KUBERNETES_VERSION"
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  start_part "kubernetes $KUBERNETES_VERSION (${bins[*]})"
  if have "$out" "${bins[@]}"; then finish_part "cached"; return; fi
  printf ': building (cold: 10-25 min on 2 cores)' >&2
  local work; work="$(mktemp -d)"; trap 'rm -rf "$work"' RETURN
  rm -rf "$out.tmp"
  quietly kubernetes "$work.log" kubernetes_build "$work" "$out.tmp"
  rm -f "$work.log"
  rm -rf "$out" && mv "$out.tmp" "$out"
  finish_part "built"
}

wrapped_build() {  # $1 work dir, $2 name, $3 version, $4 module, $5 package, $6 output file, $7 extra ldflags
  local work="$1"
  cd "$work"
  go mod init "spotguard.local/$2build"
  go mod edit -require="$4@$3"
  mkdir -p "$(dirname "$6")"
  go build -trimpath -ldflags "-s -w $7" -o "$6" "$5"
}

build_wrapped() {  # $1 name, $2 version, $3 module, $4 package, $5 binary name, $6 extra ldflags (optional)
  local out="$cache/$1-$2"
  start_part "$1 $2"
  if have "$out" "$5"; then finish_part "cached"; return; fi
  local work; work="$(mktemp -d)"; trap 'rm -rf "$work"' RETURN
  rm -rf "$out.tmp"
  quietly "$1" "$work.log" wrapped_build "$work" "$1" "$2" "$3" "$4" "$out.tmp/$5" "${6:-}"
  rm -f "$work.log"
  rm -rf "$out" && mv "$out.tmp" "$out"
  finish_part "built"
}

mkdir -p "$cache"
build_wrapped etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3 etcd
build_wrapped kwok "$KWOK_VERSION" sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok kwok
build_wrapped aemm "$AEMM_VERSION" github.com/aws/amazon-ec2-metadata-mock \
  github.com/aws/amazon-ec2-metadata-mock/cmd amazon-ec2-metadata-mock
# helm stamps its version at link time (`helm version` otherwise says only the minor release).
build_wrapped helm "$HELM_VERSION" helm.sh/helm/v4 helm.sh/helm/v4/cmd/helm helm \
  "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
build_kubernetes
echo "$cache"
