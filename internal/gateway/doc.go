// Package gateway is a node's ingress. It does all protocol processing
// once: it parses a request, admits it against the app's in-flight bound and
// pool, writes the body into a buffer of the app's shared-memory pool (the
// one copy the socket forces), records the request metadata in the buffer's
// header so functions never re-parse HTTP, and sends the chain's first step a
// 16-byte descriptor. Steps then route the buffer among themselves; the last
// one sends it back, and the gateway writes the response straight from it.
//
// # One admission path, protocols as adapters
//
// Every protocol ends in the same path (admit.go): Gateway.Admit takes a
// Request (the route or the chain, method, path, query, a Headers lookup
// for the forwarded fields, a Body that writes the body into the pool
// buffer it is given, and a Replier), and either refuses it with an *Error
// (404, 405, 413, 429, 503, 431; Request.AppendMessage renders the text)
// or sends it into its chain and later calls the Replier exactly once: with
// the chain's reply on the app's receive thread, or with the gateway's 504
// (503 when no instance ever took it) from the deadline timer. The Replier
// writes what it can without blocking and calls Reply.Done when the reply
// is out, which frees the buffer and the in-flight entry. An adapter whose
// body arrives in pieces it pushes (HTTP/2 DATA frames) calls Begin, fills
// Admission.Body, then Send (or Cancel). HTTP/1.1 (conn.go, reply.go) is
// such an adapter: conn implements Headers, Body and Replier. HTTP/2
// (h2.go: h2c by prior knowledge or upgrade, h2 over TLS by ALPN) and gRPC
// unary calls (grpc.go) are another: a stream's HEADERS Begin, its DATA
// frames go straight into the pool buffer, END_STREAM Sends, and the
// connection is the Replier (the stream id is the tag). Config.TLS makes
// the listener serve TLS; its GetCertificate lets the node swap
// certificates without dropping connections.
//
// Status codes the gateway itself answers with: 400 malformed request, 404
// no chain on the path, 405 method not allowed (with Allow), 413 body larger
// than a pool buffer, 417 unsupported Expect, 429 the app is at its in-flight
// bound, 431 head too large, 501 unsupported Transfer-Encoding, 502 a step
// failed or its instance died, 503 the pool is exhausted or no instance of
// the first step could take the request (both with Retry-After), 504 the
// chain missed its deadline, 505 HTTP version other than 1.0/1.1.
//
// # Driving it
//
// The daemon, per app, after creating the pool and the transport fabric:
//
//	a, err := gateway.NewApp(gateway.AppConfig{Name: "shop", Pool: p, Conn: gwConn,
//		Inflight: 512, Control: onControl})
//	go a.Run() // receives replies and control messages on a locked thread
//
// and once for the node:
//
//	g, err := gateway.New(gateway.Config{Chains: []*gateway.Chain{{Name: "hello",
//		Route: "/hello", App: a, Index: 0, First: 0, FirstName: "upper",
//		Methods: []string{"GET", "POST"}, Timeout: 30 * time.Second}}})
//	go g.Serve(ln)
//	…
//	g.Shutdown(ctx) // stop accepting, finish what is in flight
//
// When an instance dies, the daemon reclaims its buffers and answers each
// request with App.Fail (502).
package gateway
