//go:build tools

// Package tools pins the Helm command that build-tools.sh builds (its own Go module, so that
// Helm's Kubernetes libraries never move the cluster's).
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
