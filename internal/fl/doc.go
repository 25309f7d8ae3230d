// Package fl is Spry's federated-learning aggregation (after LIFL): the
// vector kernels that fold a client's float32 update into a running
// weighted sum where the update lies, FedAvg's round rules (goal by count
// or deadline; stragglers, duplicates and malformed updates refused with
// the reason), and the aggregation app that ships with Spry.
//
// The kernels:
//
//	u, ok := fl.Floats(payload)         // the update's bytes viewed as float32s: no copy
//	bad, ok := fl.Fold(acc, u, samples)  // acc += samples·u, each result checked
//	fl.CombineParallel(model, partials, 1/totalSamples, 0)
//
// Round is the per-round state machine every aggregator here runs (Spry's
// app, and the benchmark's serverful and Knative-style baselines): it takes
// the time as an argument and does no I/O. Aggregator is one process's
// FedAvg for a job on top of it, with its partial sums in its own memory;
// Reference computes FedAvg the plain way in float64, to check against.
package fl
