package bench

// The demo: the /hello chain `spry up` serves with no config file, upper →
// reverse → wrap, on the built-in handlers themselves, so that `spry bench
// hello` measures exactly what a newcomer's curl gets. Wrap's answer ends in
// the hops' measured durations, which differ on every request, so the
// answer is checked up to them (Workload.Varies).

func hello(o Options) (*Workload, error) {
	w := &Workload{
		Name:       "hello",
		Doc:        "the demo: /hello, upper → reverse → wrap",
		BufferSize: 1 << 10,
		Functions: []Function{
			{Name: "upper", Builtin: "upper"},
			{Name: "reverse", Builtin: "reverse"},
			{Name: "wrap", Builtin: "wrap"},
		},
		Chains: []Chain{{Name: "hello", Route: "/hello", Steps: []string{"upper", "reverse", "wrap"}, Methods: []string{"POST"}}},
		Varies: []byte(`"hop_us":[`),
	}
	for _, body := range []string{"spry", "hello, world", "zero copies between steps", "ünïcödé stays whole"} {
		w.Requests = append(w.Requests, Request{Chain: "hello", Method: "POST", Target: "/hello", Body: []byte(body)})
	}
	return w, nil
}
