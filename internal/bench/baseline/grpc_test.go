package baseline

import (
	"bytes"
	"testing"

	"github.com/spry-dev/spry/sdk"
)

// A hop message survives the codec, and decoding copies the body straight
// into a runner call's input.
func TestCodecRoundTrip(t *testing.T) {
	in := &hopMsg{chain: "home", hop: 3, method: "POST", path: "/cart/add", query: "a=1",
		headers: [][2]string{{"X-Session", "alice"}, {"X-Cart", ""}}, ctype: "text/plain", body: []byte("product_id=X"), status: 201}
	released := false
	in.release = func() { released = true }
	b, err := codec{}.Marshal(in)
	if err != nil || !released {
		t.Fatalf("marshal: %v, released %v", err, released)
	}
	var out hopMsg
	if err := (codec{}).Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.chain != in.chain || out.hop != 3 || out.method != "POST" || out.path != in.path || out.query != in.query ||
		len(out.headers) != 2 || out.headers[0] != in.headers[0] || out.ctype != in.ctype || out.status != 201 || !bytes.Equal(out.body, in.body) {
		t.Fatalf("got %+v", out)
	}
	r, err := sdk.NewRunner(sdk.RunnerOptions{BufferSize: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	call := r.Begin()
	defer call.End()
	into := hopMsg{into: call}
	if err := (codec{}).Unmarshal(b, &into); err != nil {
		t.Fatal(err)
	}
	if into.n != len(in.body) || !bytes.Equal(call.Input()[:into.n], in.body) {
		t.Fatalf("body in the call: %q", call.Input()[:into.n])
	}
	if err := (codec{}).Unmarshal([]byte{0xff}, &out); err == nil {
		t.Fatal("garbage decoded")
	}
}
