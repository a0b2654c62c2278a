// Command etcd is the upstream etcd server main, built from the module proxy
// because the server module's own replace directives forbid `go install`.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
