//go:build tools

// Package tools pins crictl, the CRI client used to inspect and debug the node's runtime.
package tools

import _ "sigs.k8s.io/cri-tools/cmd/crictl"
