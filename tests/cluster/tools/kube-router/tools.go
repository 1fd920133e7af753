//go:build tools

// Package tools pins kube-router, whose firewall controller (alone: no routing, no service
// proxy) enforces NetworkPolicy in the test cluster. Its own Go module, so that its older
// Kubernetes libraries never move the cluster's or Helm's.
package tools

import (
	_ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
)
