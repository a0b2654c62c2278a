//go:build tools

// Package tools pins Prometheus, the real server the e2e tests scrape the chart's targets with.
// Debian's package is built without Kubernetes service discovery, which is what the chart configures;
// build.sh compiles cmd/prometheus with only the Kubernetes, file and HTTP discovery plugins.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
