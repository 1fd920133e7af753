//go:build tools

// Package tools pins the Kubernetes and etcd commands that up.sh builds.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl" // built only where no kubectl is installed
	_ "k8s.io/kubernetes/cmd/kubelet"
)
