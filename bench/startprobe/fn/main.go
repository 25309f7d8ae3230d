// Command fn is the cold-start probe as a stand-alone Spry function (a go:
// or, prebuilt, an exec: function). See package startprobe.
package main

import (
	"github.com/spry-dev/spry/bench/startprobe"
	"github.com/spry-dev/spry/sdk"
)

func main() { sdk.Serve(startprobe.Handler) }
