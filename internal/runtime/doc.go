// Package runtime is how the node starts an instance of each kind of
// function, and the shared parts of the runners that are not plain
// programs.
//
// Every instance, whatever its kind, is one process that speaks the
// function contract (docs/contract.md): it inherits the app's pool as fd 3
// and its descriptor endpoint after it, reads the SPRY_* environment that
// Instance.Env writes, announces itself ready, and then receives
// descriptors. Kinds differ only in which process that is:
//
//	builtin  spry fn NAME                        (the Go SDK, compiled into spry)
//	go       the package spry built              (the Go SDK)
//	exec     the program as given                (any SDK)
//	python   python3 -m spry HANDLER.py          (the Python SDK, sdk/python)
//	http     spry runtime http [flags] -- PROGRAM  (internal/runtime/http)
//	lambda   spry runtime lambda [flags] -- PROGRAM (internal/runtime/lambda)
//
// The last two are adapters: spry itself is the instance (a Go SDK
// handler), and the user's program runs as its child, spoken to in the
// protocol it already knows (HTTP; the Lambda Runtime API). An adapter
// pays one copy in and one out per hop; everything else — routing,
// scaling, timeouts, crash handling, metrics — is the instance's, as for
// any other kind.
//
// # The seam
//
// The node's supervisor asks Launch for a function's Command once (at
// start, after builds) and starts every instance of it as that command
// with Instance.Env added. Adding a kind:
//
//  1. its key and options in internal/config (a Kind, kinds.go);
//  2. a case in Launch below (and, for an adapter, AdapterArgv);
//  3. for an adapter, a package internal/runtime/KIND with
//     Main(args []string) error, listed in internal/cli's `spry runtime`;
//     Start starts the user's program as a child that dies with the
//     instance, and Ready waits for it.
package runtime
