//go:build tools

// Package tools pins the CNCF Distribution registry that build-tools.sh builds (its own Go
// module), which tests/cache_registry.rs starts on 127.0.0.1 for the shared action cache.
package tools

import (
	_ "github.com/distribution/distribution/v3/cmd/registry"
)
