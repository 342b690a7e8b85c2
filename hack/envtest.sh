#!/usr/bin/env bash
# Builds kube-apiserver, etcd, kubectl and kube-controller-manager (which
# `novacron dev` runs: namespace deletion, garbage collection, node lifecycle)
# from the Go module proxy, at the versions
# go.mod pins, into bin/k8s/<versions>/. envtest and every later test run these
# real binaries. A build is reused until go.mod's versions change. The
# Kubernetes binaries get their version stamped in with -ldflags -X, as
# Kubernetes' release builds do: `kubectl version` and the API server's
# /version need it.
# Prints the folder on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

k8s=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
etcd=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
dir="bin/k8s/${k8s}-etcd-${etcd}"

stamped() { "$dir/kubectl" version --client -o json 2>/dev/null | grep -q "\"gitVersion\": \"$k8s\""; }
if [[ -x "$dir/kube-apiserver" && -x "$dir/etcd" && -x "$dir/kubectl" && -x "$dir/kube-controller-manager" ]] && stamped; then
  echo "$PWD/$dir"
  exit 0
fi

echo "envtest: building kube-apiserver, kubectl and kube-controller-manager ${k8s}, etcd ${etcd} from the Go module proxy into ${dir} (several minutes the first time)..." >&2
tmp="$dir.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
start=$SECONDS
minor=${k8s#v*.}; minor=${minor%%.*}
major=${k8s#v}; major=${major%%.*}
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
go build -ldflags "$ldflags" -o "$tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kube-controller-manager
# etcd's main package is the module root, so its binary is called "server".
go build -o "$tmp/etcd" go.etcd.io/etcd/server/v3
rm -rf "$dir"
mv "$tmp" "$dir"
ln -sfn "$(basename "$dir")" bin/k8s/current
echo "envtest: built in $((SECONDS - start))s" >&2
echo "$PWD/$dir"
