//go:build tools

// Package tools pins CoreDNS, the cluster DNS of the dev cluster (kubernetes + forward plugins built in).
package tools

import _ "github.com/coredns/coredns"
