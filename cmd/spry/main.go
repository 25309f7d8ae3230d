// Command spry runs zero-copy serverless function chains: `spry up` starts
// a node; `spry status`, `spry invoke` and the other verbs talk to it. See
// README.md.
package main

import (
	"os"

	"github.com/spry-dev/spry/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
