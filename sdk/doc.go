// Package sdk is how you write a Spry function in Go.
//
// A function is a Handler. Its program calls Serve, and spry runs it as one
// or more instances of a step in a chain:
//
//	package main
//
//	import (
//		"bytes"
//
//		"github.com/spry-dev/spry/sdk"
//	)
//
//	func main() {
//		sdk.Serve(func(req *sdk.Request, res *sdk.Response) error {
//			p := req.Payload() // the request body, in shared memory
//			copy(p, bytes.ToUpper(p))
//			return nil // pass the (changed) payload to the next step
//		})
//	}
//
// and its spry.yaml names it:
//
//	app: hello
//	functions:
//	  upper: {go: ./upper}
//	chains:
//	  hello: {route: /hello, steps: [upper]}
//
// # Zero copy
//
// The gateway writes the client's body once into a buffer of the app's
// shared-memory pool. Request.Payload is that buffer, not a copy, and so is
// the payload every later step sees. A step that changes its input in place
// (Payload, Buffer, SetLen) passes the same buffer on; a step that builds a
// new output with Write gets a fresh buffer from the pool. Either way, the
// next step receives a 16-byte descriptor, never the data.
//
// # Routing
//
// After the handler returns, the SDK itself sends the descriptor to the
// least-loaded ready instance of the next step — the one with the smallest
// (queued + running + 1) / capacity, read from counters in the pool — or, after
// the last step, back to the gateway. The gateway is not on the path between
// steps.
//
// # Graphs, calls and large payloads
//
// A chain may be a graph (spry.yaml's steps: as a mapping): a step's output
// can go to several steps at once (a fan-out: each branch reads the same
// buffer, so read your input and write your output with Write), to the
// step the handler picks (Response.Next), or to a join, whose handler reads
// its inputs with Request.Input. A handler can call another function of
// its app and wait for its answer (Request.Call, or Request.Go and
// Future.Wait for several at once). A payload may be far larger than a
// buffer: Request.Payload is still one slice of the pool (Segments reads a
// payload the pool holds in pieces without gathering it), and Write, Alloc
// build large outputs.
//
// # Errors and status
//
// Returning an error ends the chain: the client gets the message with status
// 502, or with the status of an *Error (see Errorf). SetStatus with 400 or
// more also ends the chain, with the output as the body; Stop ends it with
// any status. A panic in a handler is an error, not a crash.
//
// # Requests, routes and responses
//
// Method, Path, Query and Header read the request's metadata, which the
// gateway parsed once. Param reads a parameter of the chain's route
// (route: "/users/{id}" gives Param("id")); on a route ending in /* Path is
// the rest of the path and FullPath the whole. SetContentType sets the
// answer's content type (without it the client gets
// application/octet-stream, never the request's own), SetHeader and
// AddHeader set response headers (Location, Cache-Control, Set-Cookie,
// CORS), which travel in the buffer's metadata and reach the client from
// any step.
//
// # Configuration and secrets
//
// An instance runs in its function's directory (workDir: in spry.yaml), with
// the env: and envFrom: of its function. Secret reads one of the app's
// secrets: (files readable by this app's instances only).
//
// # Concurrency
//
// An instance runs up to `concurrency:` handlers at once (spry.yaml, default
// 1). With concurrency 1 the handler runs on the thread that receives the
// descriptor, the fastest path.
//
// A function whose handlers wait on calls (Request.Call, Future.Wait) wants
// a concurrency of the requests it should have in flight at once: a waiting
// handler holds no CPU and leaves its instance to the others. With
// concurrency 1 the instance still serves while it waits (so calls in a
// cycle do not deadlock), but what arrives meanwhile runs nested on top of
// the waiting handler, which can return only after it: under load a caller
// with concurrency 1 serves its requests one after another. (The Online
// Boutique call/return benchmark runs its callers at 16.)
//
// # Testing
//
// Invoke runs a handler once on a real pool, outside any node, with the
// same semantics: see the example.
package sdk
