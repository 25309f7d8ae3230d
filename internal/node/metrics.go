package node

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spry-dev/spry/internal/hist"
	"github.com/spry-dev/spry/internal/pool"
)

// collector exposes the node's state in Prometheus format. Nothing is
// counted for it on the data path beyond what the data path keeps anyway:
// at scrape time it reads the gateway's per-chain counters and the
// per-instance counters the SDK keeps in each app's pool.
type collector struct{ n *Node }

var (
	descChainRequests = prometheus.NewDesc("spry_chain_requests_total",
		"Requests answered on a chain's route, by HTTP status code.", []string{"app", "chain", "code"}, nil)
	descChainLatency = prometheus.NewDesc("spry_chain_request_duration_seconds",
		"Time from the gateway's receipt of a request head to the response written.", []string{"app", "chain"}, nil)
	descRefused = prometheus.NewDesc("spry_gateway_refused_total",
		"Requests answered without reaching a chain (malformed, unknown route), by HTTP status code.", []string{"code"}, nil)
	descInflight = prometheus.NewDesc("spry_app_inflight_requests",
		"Requests of the app in flight (including timed-out ones whose buffer is not back).", []string{"app"}, nil)
	descInflightLimit = prometheus.NewDesc("spry_app_inflight_limit",
		"The app's bound on requests in flight.", []string{"app"}, nil)
	descPoolBuffers = prometheus.NewDesc("spry_pool_buffers",
		"Buffers in the app's shared-memory pool.", []string{"app"}, nil)
	descPoolFree = prometheus.NewDesc("spry_pool_free_buffers",
		"Free buffers in the app's pool.", []string{"app"}, nil)
	descPoolAllocFails = prometheus.NewDesc("spry_pool_alloc_failures_total",
		"Allocations that found the app's pool empty.", []string{"app"}, nil)
	descPoolReclaimed = prometheus.NewDesc("spry_pool_reclaimed_total",
		"Buffers taken back from failed instances.", []string{"app"}, nil)
	descPoolExtent = prometheus.NewDesc("spry_pool_extent_bytes",
		"The app's large-extent region (payloads larger than a buffer): its size (pool.memory less the buffers).", []string{"app"}, nil)
	descPoolExtentUsed = prometheus.NewDesc("spry_pool_extent_used_bytes",
		"Bytes of the large-extent region payloads take now.", []string{"app"}, nil)
	descPoolExtentFails = prometheus.NewDesc("spry_pool_extent_failures_total",
		"Payloads larger than a buffer the large-extent region had no room for.", []string{"app"}, nil)
	descJoinLate = prometheus.NewDesc("spry_app_join_inputs_dropped_total",
		"Inputs of joins dropped: late (the join had run, e.g. on its quorum or wait), duplicate, or of a request already answered.", []string{"app"}, nil)
	descTransits = prometheus.NewDesc("spry_app_hop_transits_total",
		"Hops from one step to the next inside answered requests' chains (steps in a line), measured from the buffers' hop stamps.", []string{"app"}, nil)
	descTransitSecs = prometheus.NewDesc("spry_app_hop_transit_seconds_total",
		"Time of those hops in all: from a step's end to the next step's start (the descriptor's way, and any wait for the next instance).", []string{"app"}, nil)
	descFnServed = prometheus.NewDesc("spry_function_requests_total",
		"Requests a function's instances finished (since each instance started).", []string{"app", "function"}, nil)
	descFnErrors = prometheus.NewDesc("spry_function_errors_total",
		"Requests a function answered with an error, by class: client (it answered 4xx: the request's fault) or server (an error, a panic, a 5xx).",
		[]string{"app", "function", "class"}, nil)
	descFnStale = prometheus.NewDesc("spry_function_stale_descriptors_total",
		"Stale or foreign descriptors a function's instances dropped.", []string{"app", "function"}, nil)
	descFnBusy = prometheus.NewDesc("spry_function_busy_seconds_total",
		"Total handler run time of a function.", []string{"app", "function"}, nil)
	descFnInflight = prometheus.NewDesc("spry_function_inflight_requests",
		"Handlers of a function running now.", []string{"app", "function"}, nil)
	descFnQueue = prometheus.NewDesc("spry_function_queued_requests",
		"Descriptors sent to a function's instances and not yet started.", []string{"app", "function"}, nil)
	descFnInstances = prometheus.NewDesc("spry_function_instances",
		"A function's instances, by state.", []string{"app", "function", "state"}, nil)
	descFnRestarts = prometheus.NewDesc("spry_function_restarts_total",
		"Times a function's instances were restarted after exiting.", []string{"app", "function"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descChainRequests, descChainLatency, descRefused, descInflight, descInflightLimit,
		descPoolBuffers, descPoolFree, descPoolAllocFails, descPoolReclaimed,
		descPoolExtent, descPoolExtentUsed, descPoolExtentFails, descJoinLate, descTransits, descTransitSecs,
		descFnServed, descFnErrors, descFnStale, descFnBusy, descFnInflight, descFnQueue,
		descFnInstances, descFnRestarts,
	} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	for _, gc := range n.gw.Chains() {
		app := gc.App.Name()
		gc.Codes(func(code int, v uint64) { counter(descChainRequests, float64(v), app, gc.Name, strconv.Itoa(code)) })
		ch <- promHistogram(descChainLatency, gc.Latency(), app, gc.Name)
	}
	n.gw.Refused(func(code int, v uint64) { counter(descRefused, float64(v), strconv.Itoa(code)) })
	for _, a := range n.serving() {
		name := a.cfg.Name
		p := a.pool
		gauge(descInflight, float64(a.gw.Inflight()), name)
		gauge(descInflightLimit, float64(a.cfg.Limits.Inflight), name)
		gauge(descPoolBuffers, float64(p.Buffers()), name)
		gauge(descPoolFree, float64(p.FreeBuffers()), name)
		counter(descPoolAllocFails, float64(p.AllocFails()), name)
		counter(descPoolReclaimed, float64(p.Reclaimed()), name)
		gauge(descPoolExtent, float64(p.ExtentBytes()), name)
		gauge(descPoolExtentUsed, float64(p.ExtentUsed()), name)
		counter(descPoolExtentFails, float64(p.ExtentFails()), name)
		counter(descJoinLate, float64(a.gw.Stats().LateInputs.Load()), name)
		counter(descTransits, float64(a.gw.Stats().Transits.Load()), name)
		counter(descTransitSecs, float64(a.gw.Stats().TransitNs.Load())/1e9, name)
		for _, f := range a.fns {
			fn := f.cfg.Name
			var served, errs, clientErrs, stale, busy uint64
			var inflight, queue int64
			states := map[string]int{}
			restarts := 0
			for _, in := range f.insts {
				s := in.status()
				states[s.State]++
				restarts += s.Restarts
				st := p.Stats(in.slot)
				served += st.Served.Load()
				errs += st.Errors.Load()
				clientErrs += st.ClientErrors.Load()
				stale += st.Stale.Load()
				busy += st.BusyNanos.Load()
				if p.SlotState(in.slot) != pool.SlotEmpty {
					inflight += int64(max(st.InFlight.Load(), 0))
					queue += int64(max(st.Queue.Load(), 0))
				}
			}
			counter(descFnServed, float64(served), name, fn)
			counter(descFnErrors, float64(clientErrs), name, fn, "client")
			counter(descFnErrors, float64(errs), name, fn, "server")
			counter(descFnStale, float64(stale), name, fn)
			counter(descFnBusy, time.Duration(busy).Seconds(), name, fn)
			gauge(descFnInflight, float64(inflight), name, fn)
			gauge(descFnQueue, float64(queue), name, fn)
			for _, state := range []string{"starting", "ready", "restarting", "stopping", "stopped"} {
				gauge(descFnInstances, float64(states[state]), name, fn, state)
			}
			counter(descFnRestarts, float64(restarts), name, fn)
		}
	}
}

// promHistogram turns a hist snapshot into a Prometheus histogram.
func promHistogram(d *prometheus.Desc, s hist.Snapshot, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(hist.Bounds))
	var cum uint64
	for i, b := range hist.Bounds {
		cum += s.Counts[i]
		buckets[time.Duration(b).Seconds()] = cum
	}
	return prometheus.MustNewConstHistogram(d, s.Count(), time.Duration(s.Sum).Seconds(), buckets, labels...)
}
