// Command fl trains a logistic regression by federated learning, with Spry
// as the aggregation server: simulated clients, each with its own skewed
// share of a synthetic dataset, fetch the global model of each round from
// Spry's FL app, train on their own data, and upload their model; the app
// makes the next global model by FedAvg. It prints the accuracy of each
// round's global model on held-out data: proof that the aggregation is
// right, not just fast.
//
//	spry fl config --params small > /tmp/fl.yaml
//	spry up -f /tmp/fl.yaml &
//	go run ./examples/fl --server http://127.0.0.1:8080
package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

const features = 20 // the model: 20 weights and a bias

func main() {
	server := flag.String("server", "http://127.0.0.1:8080", "the Spry node running the FL app")
	job := flag.String("job", "logreg", "the job's name")
	clients := flag.Int("clients", 10, "simulated clients")
	rounds := flag.Int("rounds", 10, "rounds of training")
	epochs := flag.Int("epochs", 2, "local epochs a round")
	minAcc := flag.Float64("min-accuracy", 0, "exit 1 when the last round's accuracy is below this")
	flag.Parse()
	if err := run(*server, *job, *clients, *rounds, *epochs, *minAcc); err != nil {
		fmt.Fprintln(os.Stderr, "fl:", err)
		os.Exit(1)
	}
}

type example struct {
	x [features]float64
	y float64 // 0 or 1
}

// dataset draws n examples of a fixed linear concept with label noise;
// shift moves the features' means, so clients see different parts of
// the input space (non-IID, as federated data is).
func dataset(rng *rand.Rand, truth []float64, n int, shift float64) []example {
	out := make([]example, n)
	for i := range out {
		e := &out[i]
		z := truth[features]
		for k := range features {
			e.x[k] = rng.NormFloat64() + shift*float64(k%3-1)
			z += truth[k] * e.x[k]
		}
		if rng.Float64() < 1/(1+math.Exp(-3*z)) {
			e.y = 1
		}
	}
	return out
}

func predict(w []float32, x *[features]float64) float64 {
	z := float64(w[features])
	for k := range features {
		z += float64(w[k]) * x[k]
	}
	return 1 / (1 + math.Exp(-z))
}

// train runs local SGD from the global model w over data.
func train(w []float32, data []example, epochs int, rng *rand.Rand) []float32 {
	m := make([]float64, len(w))
	for i, v := range w {
		m[i] = float64(v)
	}
	const lr = 0.05
	for range epochs {
		for _, i := range rng.Perm(len(data)) {
			e := &data[i]
			z := m[features]
			for k := range features {
				z += m[k] * e.x[k]
			}
			g := 1/(1+math.Exp(-z)) - e.y
			for k := range features {
				m[k] -= lr * g * e.x[k]
			}
			m[features] -= lr * g
		}
	}
	out := make([]float32, len(w))
	for i, v := range m {
		out[i] = float32(v)
	}
	return out
}

func accuracy(w []float32, data []example) float64 {
	ok := 0
	for i := range data {
		if (predict(w, &data[i].x) >= 0.5) == (data[i].y == 1) {
			ok++
		}
	}
	return float64(ok) / float64(len(data))
}

func run(server, job string, clients, rounds, epochs int, minAcc float64) error {
	rng := rand.New(rand.NewPCG(1, 2))
	truth := make([]float64, features+1)
	for i := range truth {
		truth[i] = rng.NormFloat64()
	}
	shards := make([][]example, clients)
	for c := range shards {
		shards[c] = dataset(rng, truth, 50+rng.IntN(350), float64(c%5-2)*0.5)
	}
	test := dataset(rng, truth, 5000, 0)

	hc := &http.Client{Timeout: time.Minute}
	do := func(method, path string, body []byte) (int, []byte, http.Header, error) {
		req, err := http.NewRequest(method, server+path, bytes.NewReader(body))
		if err != nil {
			return 0, nil, nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, resp.Header, err
	}
	do("DELETE", "/fl/"+job, nil) // a job left from an earlier run
	spec, _ := json.Marshal(map[string]any{"params": features + 1, "updates": clients, "rounds": rounds})
	if st, b, _, err := do("PUT", "/fl/"+job, spec); err != nil || st != http.StatusCreated {
		return fmt.Errorf("create job %s: %d %s %v", job, st, b, err)
	}
	defer do("DELETE", "/fl/"+job, nil)

	fmt.Printf("%d clients, %d to %d examples each; logistic regression, %d parameters\n", clients, 50, 400, features+1)
	var last float64
	for r := 1; r <= rounds; r++ {
		st, b, h, err := do("GET", "/fl/"+job+"/model", nil)
		if err != nil || st != http.StatusOK {
			return fmt.Errorf("fetch the model: %d %s %v", st, b, err)
		}
		if got := h.Get("Spry-Round"); got != strconv.Itoa(r-1) {
			return fmt.Errorf("fetched the model of round %s, want %d", got, r-1)
		}
		global := floats(b)
		if r == 1 {
			fmt.Printf("round  0  accuracy %.3f  (the initial model: zeros)\n", accuracy(global, test))
		}
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				local := train(global, shards[c], epochs, rand.New(rand.NewPCG(uint64(r), uint64(c))))
				path := fmt.Sprintf("/fl/%s/update?round=%d&client=client-%d&samples=%d", job, r, c, len(shards[c]))
				for try := 0; ; try++ {
					st, b, _, err := do("POST", path, bytesOf(local))
					if err == nil && st == http.StatusOK {
						return
					}
					if try == 20 || err == nil && st < 500 {
						errs <- fmt.Errorf("client %d, round %d: %d %s %v", c, r, st, b, err)
						return
					}
					time.Sleep(50 * time.Millisecond) // 503: the pool is full for now
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return err
		}
		st, b, _, err = do("GET", "/fl/"+job+"/model?round="+strconv.Itoa(r), nil)
		if err != nil || st != http.StatusOK {
			return fmt.Errorf("model of round %d: %d %s %v", r, st, b, err)
		}
		last = accuracy(floats(b), test)
		fmt.Printf("round %2d  accuracy %.3f\n", r, last)
	}
	if last < minAcc {
		return fmt.Errorf("accuracy %.3f after %d rounds, want at least %.3f", last, rounds, minAcc)
	}
	return nil
}

func floats(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func bytesOf(f []float32) []byte {
	b := make([]byte, 4*len(f))
	for i, v := range f {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}
