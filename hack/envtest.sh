#!/usr/bin/env bash
# Builds kube-apiserver, etcd and kubectl from the Go module proxy, at the versions
# go.mod pins, into bin/k8s/<versions>/. envtest and every later test run these
# real binaries. A build is reused until go.mod's versions change.
# Prints the folder on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

k8s=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
etcd=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
dir="bin/k8s/${k8s}-etcd-${etcd}"

if [[ -x "$dir/kube-apiserver" && -x "$dir/etcd" && -x "$dir/kubectl" ]]; then
  echo "$PWD/$dir"
  exit 0
fi

echo "envtest: building kube-apiserver and kubectl ${k8s}, etcd ${etcd} from the Go module proxy into ${dir} (several minutes the first time)..." >&2
tmp="$dir.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
start=$SECONDS
go build -o "$tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
# etcd's main package is the module root, so its binary is called "server".
go build -o "$tmp/etcd" go.etcd.io/etcd/server/v3
rm -rf "$dir"
mv "$tmp" "$dir"
ln -sfn "$(basename "$dir")" bin/k8s/current
echo "envtest: built in $((SECONDS - start))s" >&2
echo "$PWD/$dir"
