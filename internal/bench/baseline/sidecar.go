package baseline

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The sidecar is the Knative queue-proxy's job, in a process of its own in
// front of every function instance: a reverse proxy with a concurrency
// breaker (at most Concurrency requests in the function, QueueDepth more
// waiting, the rest refused with 503), a per-request timeout, and
// per-request metrics (count, latency histogram, in-flight gauge) that a
// stats loop aggregates every second, as the autoscaler's scrape target.
type sidecar struct {
	target   string
	client   *http.Client
	slots    chan struct{} // nil: unlimited
	waiting  atomic.Int64
	maxQueue int64
	timeout  time.Duration

	inflight atomic.Int64
	requests *prometheus.CounterVec
	latency  prometheus.Histogram
	gauge    prometheus.Gauge
	avgConc  prometheus.Gauge
	concSum  atomic.Int64 // in-flight × ms, for the stats loop
}

func runSidecar(ctx context.Context, c *Config) error {
	target, err := url.Parse("http://" + c.Target)
	if err != nil {
		return err
	}
	s := &sidecar{timeout: c.Timeout, maxQueue: int64(c.QueueDepth)}
	if s.timeout <= 0 {
		s.timeout = 5 * time.Minute // Knative's default revision timeout
	}
	if c.Concurrency > 0 {
		s.slots = make(chan struct{}, c.Concurrency)
		if s.maxQueue <= 0 {
			s.maxQueue = int64(10 * c.Concurrency) // queue-proxy's breaker queue depth
		}
	}
	s.target = target.Host
	s.client = &http.Client{Transport: transport()}
	reg := prometheus.NewRegistry()
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "revision_request_count", Help: "requests served, by response code class"}, []string{"response_code_class"})
	s.latency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "revision_request_latencies", Help: "request latency in ms", Buckets: prometheus.ExponentialBuckets(0.05, 2, 20)})
	s.gauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "queue_requests_in_flight", Help: "requests in the function now"})
	s.avgConc = prometheus.NewGauge(prometheus.GaugeOpts{Name: "queue_average_concurrent_requests", Help: "average concurrency over the last second"})
	reg.MustRegister(s.requests, s.latency, s.gauge, s.avgConc)
	mux := http.NewServeMux()
	mux.Handle("/_qp/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", s)
	go s.stats(ctx)
	return serveHTTP(ctx, c.Listen, mux)
}

// stats is the queue-proxy's reporting loop: once a second it turns the
// in-flight samples into an average concurrency for the autoscaler.
func (s *sidecar) stats(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			sum := s.concSum.Swap(0)
			s.avgConc.Set(float64(sum) / float64(max(now.Sub(last).Milliseconds(), 1)))
			last = now
		}
	}
}

func (s *sidecar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if s.slots != nil {
		if s.waiting.Add(1) > s.maxQueue+int64(cap(s.slots)) {
			s.waiting.Add(-1)
			s.requests.WithLabelValues("5xx").Inc()
			http.Error(w, "pending request queue full", http.StatusServiceUnavailable)
			return
		}
		select {
		case s.slots <- struct{}{}:
		case <-r.Context().Done():
			s.waiting.Add(-1)
			return
		}
		defer func() { <-s.slots; s.waiting.Add(-1) }()
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	s.gauge.Set(float64(s.inflight.Add(1)))
	status := s.proxy(ctx, w, r)
	n := s.inflight.Add(-1)
	s.gauge.Set(float64(n))
	el := time.Since(start)
	s.concSum.Add(el.Milliseconds())
	s.latency.Observe(float64(el) / float64(time.Millisecond))
	s.requests.WithLabelValues(codeClass(status)).Inc()
}

// limitBody is r's body as the outbound request's: limited to its
// Content-Length, so the client never reads the server's body past its end
// (the server may close it as soon as the answer is being written, and the
// client would then drop the connection the answer is still arriving on).
func limitBody(r *http.Request) io.ReadCloser {
	switch {
	case r.ContentLength < 0:
		return r.Body // chunked: read to its end
	case r.ContentLength == 0:
		return http.NoBody
	}
	return io.NopCloser(io.LimitReader(r.Body, r.ContentLength))
}

// hopHeaders are not forwarded (RFC 9110 §7.6.1).
var hopHeaders = map[string]bool{"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true}

// proxy forwards r to the function and copies its answer back: a reverse
// proxy's work (header copy, body streaming both ways, X-Forwarded-For).
func (s *sidecar) proxy(ctx context.Context, w http.ResponseWriter, r *http.Request) int {
	out, err := http.NewRequestWithContext(ctx, r.Method, "http://"+s.target+r.URL.RequestURI(), limitBody(r))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return http.StatusBadGateway
	}
	out.ContentLength = r.ContentLength
	for k, v := range r.Header {
		if !hopHeaders[k] {
			out.Header[k] = v
		}
	}
	out.Header["X-Forwarded-For"] = []string{r.RemoteAddr}
	resp, err := s.client.Do(out)
	if err != nil {
		http.Error(w, "sidecar: "+err.Error(), http.StatusBadGateway)
		return http.StatusBadGateway
	}
	defer resp.Body.Close()
	h := w.Header()
	for k, v := range resp.Header {
		if !hopHeaders[k] {
			h[k] = v
		}
	}
	w.WriteHeader(resp.StatusCode)
	buf := proxyBuffers{}.Get()
	if _, err := io.CopyBuffer(w, resp.Body, buf); err != nil {
		fmt.Fprintf(os.Stderr, "sidecar: copying the answer: %v (content-length %d)\n", err, resp.ContentLength)
	}
	proxyBuffers{}.Put(buf)
	return resp.StatusCode
}

var codeClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

func codeClass(status int) string {
	if status >= 100 && status < 600 {
		return codeClasses[status/100-1]
	}
	return "5xx"
}

// proxyBuffers lends the reverse proxies their copy buffers from bufPool.
type proxyBuffers struct{}

func (proxyBuffers) Get() []byte {
	bp := bufPool.Get().(*[]byte)
	return (*bp)[:cap(*bp)]
}

func (proxyBuffers) Put(b []byte) {
	b = b[:0]
	bufPool.Put(&b)
}
