package main

import (
	"testing"

	"github.com/spry-dev/spry/sdk"
)

// A function is tested on its own with sdk.Invoke: a real pool, no node.
func TestGreet(t *testing.T) {
	r, err := sdk.Invoke(greet, "POST", "/hello", []byte("SPRY\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != 200 || string(r.Body) != "Hello, SPRY!\n" {
		t.Fatalf("got %d %q", r.Status, r.Body)
	}
	r, err = sdk.Invoke(greet, "POST", "/hello", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != 400 || !r.Stop {
		t.Fatalf("empty name: got %d stop=%v, want 400 and the chain stopped", r.Status, r.Stop)
	}
}
