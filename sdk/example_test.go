package sdk_test

import (
	"bytes"
	"fmt"

	"github.com/spry-dev/spry/sdk"
)

// A step that upper-cases its input in place, and one that wraps it in
// JSON in a fresh buffer. In a program, pass the handler to sdk.Serve; here
// sdk.Invoke runs it the same way, without a node.
func Example() {
	upper := func(req *sdk.Request, res *sdk.Response) error {
		p := req.Payload()
		copy(p, bytes.ToUpper(p)) // in place: no copy of the payload leaves the pool
		return nil
	}
	wrap := func(req *sdk.Request, res *sdk.Response) error {
		res.SetContentType("application/json")
		fmt.Fprintf(res, `{"path":%q,"text":%q}`, req.Path(), req.Payload())
		return nil
	}

	r, _ := sdk.Invoke(upper, "POST", "/hello", []byte("spry"))
	fmt.Println(r.Status, string(r.Body))
	r, _ = sdk.Invoke(wrap, "POST", "/hello", r.Body)
	fmt.Println(r.Status, r.ContentType, string(r.Body))
	// Output:
	// 200 SPRY
	// 200 application/json {"path":"/hello","text":"SPRY"}
}

// Errors end the chain with a status.
func ExampleErrorf() {
	h := func(req *sdk.Request, res *sdk.Response) error {
		if len(req.Payload()) == 0 {
			return sdk.Errorf(400, "empty body")
		}
		return nil
	}
	r, _ := sdk.Invoke(h, "POST", "/x", nil)
	fmt.Println(r.Status, r.Stop, string(r.Body))
	// Output: 400 true empty body
}
