package activation

import (
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkCreate: durable creates from many goroutines at once (the
// accept path of asynchronous invocations), one group commit per batch.
func BenchmarkCreate(b *testing.B) {
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body := make([]byte, 64)
	var n atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := newRec("bench", "work", time.Now())
			if _, err := s.Create(r, body); err != nil {
				b.Error(err)
				return
			}
			n.Add(1)
		}
	})
	st := s.Stats()
	b.ReportMetric(st.Batch, "writes/commit")
	b.ReportMetric(st.FlushMs, "ms/commit")
}
