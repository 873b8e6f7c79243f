// Command nexmark generates Nexmark events and runs Nexmark queries on
// Meshflow; see package github.com/meshflow/meshflow/examples/nexmark/queries
// and README.md.
package main

import (
	"context"
	"os"

	"github.com/meshflow/meshflow/examples/nexmark/queries"
)

func main() {
	os.Exit(queries.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
