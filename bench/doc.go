// Package bench holds Spry's benchmark workloads: real functions written
// against the SDK, the chains that connect them, the requests a load
// generator sends and the traffic pattern it sends them in.
//
//	boutique  Online Boutique: ten services and the six request chains of
//	          Google's microservices demo (home, product, view cart, add to
//	          cart, set currency, checkout)
//	motion    motion detection: sensor → actuator, ~1 ms each, in bursts
//	parking   parking: plate detection → search → index → persist → charging,
//	          1 ms to 435 ms per step (scaled), in periodic bursts
//	chain     a synthetic chain of 1..10 steps over a payload of any size
//	hello     the demo `spry up` serves: /hello, upper → reverse → wrap
//
// The handlers are registered as spry builtins (from this package's init), so
// the spry binary runs them as `spry fn NAME` without a build step, and the
// benchmark's baselines run the very same handlers over HTTP and gRPC.
//
// Handlers are deterministic: the same request always gets the same answer,
// whichever platform runs the chain, so a load generator can check every
// response against one computed in-process (see internal/bench). The one
// exception, the demo's wrap, ends its answer in measured hop durations;
// Workload.Varies says where, and answers are checked up to there.
//
// CPU cost is real work (a mixing loop over a small state), measured in
// calibrated work units so that it is the same amount of computation in
// every process: the benchmark calibrates once and hands the rate to every
// function in BENCH_WORK_RATE.
package bench
