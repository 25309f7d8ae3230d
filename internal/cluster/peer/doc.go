// Package peer carries requests between the nodes of a cluster: a chain
// whose next step runs only on another node continues there, and its
// answer comes back to the node that holds the client's connection.
//
// # The sending side
//
// Each app of a node has an endpoint (App) that stands, in the app's
// routing table, for the instances other nodes run: the node puts it in a
// function's remote slot when it has no ready instance of the function and
// another node does (co-location first: a chain's steps stay in shared
// memory whenever this node can run them). A step, or the gateway for a
// first step, then hands the request to it with a descriptor like to any
// instance, under the ownership protocol of internal/pool: the endpoint
// accepts the buffer and holds it while the request is out. It picks the
// node with the least load per ready instance (from the load reports that
// node sends, and the requests out there) and writes one frame on its
// persistent link to that node: the request's metadata, hop times and body
// straight from the pool buffer. The reply is written back into the same
// buffer, which goes to the gateway as the chain's answer.
//
// # The receiving side
//
// A link's reader admits a request from another node through the
// gateway's one admission path (gateway.Gateway.Admit) with the chain
// preset (no route, no auth: the first node checked both), the step to
// start at (Request.Hop), the metadata and times it carries
// (Request.Continue), what is left of its deadline, its body read from the
// socket straight into the app's pool (the one copy the socket forces),
// and the link as its Replier. It runs on this node's own instances
// (Request.Local): a request is never handed on to a third node at the
// step it arrived for. Later steps may go on to other nodes again.
//
// # Graphs and calls
//
// Any step crosses wherever it is in its chain's graph. A request that is
// a branch of a fan-out (or a step inside one), a join, or a call carries
// its place in the graph (frame.go, the graph part): the join frames of
// the fan-outs it is a branch of, a join's inputs, a call's depth. The
// receiving node admits it with those frames (Request.Continue), the
// inputs read into its pool (Request.Inputs), or as a call whose caller
// is its gateway (Request.Call); its gateway answers it where the origin
// waits — when the branch reaches the origin's join, when the callee
// returns, when the chain ends. The origin writes the answer into the
// request's buffer and hands it to its gateway, which routes it by the
// graph like any step's output: into the join as that branch's input,
// back to the caller, or to the client.
//
// # Failure
//
// A link that breaks (the other node died) or on which nothing arrives for
// three keepalives (it was cut off) goes down: every request waiting on it
// is answered 502 at once, naming the node; replies queued on it are
// dropped and their buffers freed. A request whose reply has not come by
// its deadline is answered 504 by the gateway's timer as on one node, and
// its buffer comes back when the reply does, the link goes down, or
// App.Sweep gives up on it. A node that refuses a request before running
// anything (its admission said no) lets the sender try another node.
//
// # Driving it
//
//	h, _ := peer.NewHub(peer.HubConfig{Name: "node-a", Gateway: gw, Token: token})
//	go h.Serve(ln)                              // links other nodes dial
//	h.SetPeers([]peer.Peer{{Name: "node-b", Address: "10.0.0.2:7946"}})
//	a, _ := h.Add(peer.AppConfig{Name: "shop", Pool: p, Conn: conn, …})
//	go a.Run()                                  // requests leaving for other nodes
//	a.SetPlacement(map[string][]peer.NodeCount{"back": {{Node: "node-b", Instances: 2}}})
//	… a.Remote(fn) says whether to make the remote slot of fn ready …
//	conn.Close(); a.Close()                     // app gone
//	h.Close()                                   // node gone
//
// The wire is described in frame.go, the handshake in handshake.go.
package peer
