// Command meshflow is the Meshflow command line; see package
// github.com/meshflow/meshflow/internal/cli for its commands.
package main

import (
	"context"
	"os"

	"github.com/meshflow/meshflow/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
