//go:build tools

// Package tools pins local-path-provisioner, the dev cluster's dynamic hostPath provisioner (kind's
// default StorageClass does the same).
package tools

import _ "github.com/rancher/local-path-provisioner"
