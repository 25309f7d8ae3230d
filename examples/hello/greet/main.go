// Command greet is a Spry function that answers with a greeting for the name
// in its input. The output is longer than the input, so it goes into a fresh
// pool buffer (Response.WriteString). The greeting comes from the request's
// X-Greeting header, which the chain forwards (headers: in spry.yaml); the
// gateway parsed it once, and the function reads it from the buffer header.
package main

import (
	"bytes"

	"github.com/spry-dev/spry/sdk"
)

func main() {
	sdk.Serve(greet)
}

func greet(req *sdk.Request, res *sdk.Response) error {
	name := bytes.TrimSpace(req.Payload())
	if len(name) == 0 {
		return sdk.Errorf(400, "greet: send a name in the request body")
	}
	greeting := req.Header("X-Greeting")
	if greeting == "" {
		greeting = "Hello"
	}
	res.SetContentType("text/plain; charset=utf-8")
	res.WriteString(greeting)
	res.WriteString(", ")
	res.Write(name)
	_, err := res.WriteString("!\n")
	return err
}
