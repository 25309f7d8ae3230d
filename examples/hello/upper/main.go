// Command upper is a Spry function that upper-cases its input in place: the
// payload is a slice of the app's shared-memory pool, so changing it costs no
// copy and no new buffer, and the next step gets the same buffer.
package main

import "github.com/spry-dev/spry/sdk"

func main() {
	sdk.Serve(func(req *sdk.Request, res *sdk.Response) error {
		p := req.Payload()
		for i, c := range p {
			if 'a' <= c && c <= 'z' {
				p[i] = c - 'a' + 'A'
			}
		}
		return nil
	})
}
