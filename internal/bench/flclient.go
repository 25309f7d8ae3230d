package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/spry-dev/spry/internal/bench/baseline"
	"github.com/spry-dev/spry/internal/fl"
)

// flClient is how a simulated FL client talks to a system under test:
// HTTP to Spry's gateway and to the Knative-style broker, gRPC to the
// serverful aggregator.
type flClient interface {
	Create(ctx context.Context, job fl.Job) error
	// Update sends an update and returns the status (200, or the 4xx/5xx
	// the system answered) and its message.
	Update(ctx context.Context, job string, round int, client string, samples float64, body []byte) (status int, msg string, err error)
	// Model fetches, for client, the model of round (-1: the latest) into
	// into (nil: read and dropped) and returns its round and size.
	Model(ctx context.Context, client, job string, round int, into []byte) (got, n int, err error)
	Status(ctx context.Context, job string) (fl.Status, error)
	Delete(ctx context.Context, job string) error
	Close()
}

// httpFL speaks fl's HTTP interface; updates may go to another address
// than the rest (a Knative service of their own).
type httpFL struct {
	control, update string // base URLs
	hc              *http.Client
}

func newHTTPFL(control, update string) *httpFL {
	tr := &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true, IdleConnTimeout: time.Minute,
		WriteBufferSize: 256 << 10, ReadBufferSize: 256 << 10}
	return &httpFL{control: control, update: update, hc: &http.Client{Transport: tr, Timeout: 10 * time.Minute}}
}

func (c *httpFL) Close() { c.hc.CloseIdleConnections() }

func (c *httpFL) do(ctx context.Context, method, url string, body io.Reader, n int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = n
	}
	return c.hc.Do(req)
}

func answer(resp *http.Response) (int, string) {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func (c *httpFL) Create(ctx context.Context, job fl.Job) error {
	b, _ := json.Marshal(job)
	resp, err := c.do(ctx, http.MethodPut, c.control+"/fl/"+job.ID, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return err
	}
	st, msg := answer(resp)
	if st != http.StatusCreated {
		return fmt.Errorf("create job %s: %d %s", job.ID, st, msg)
	}
	return nil
}

func (c *httpFL) Update(ctx context.Context, job string, round int, client string, samples float64, body []byte) (int, string, error) {
	url := c.update + "/fl/" + job + "/update?round=" + strconv.Itoa(round) + "&client=" + client + "&samples=" + strconv.FormatFloat(samples, 'g', -1, 64)
	resp, err := c.do(ctx, http.MethodPost, url, bytes.NewReader(body), int64(len(body)))
	if err != nil {
		return 0, "", err
	}
	st, msg := answer(resp)
	return st, msg, nil
}

func (c *httpFL) Model(ctx context.Context, _, job string, round int, into []byte) (int, int, error) {
	url := c.control + "/fl/" + job + "/model"
	if round >= 0 {
		url += "?round=" + strconv.Itoa(round)
	}
	resp, err := c.do(ctx, http.MethodGet, url, nil, 0)
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		st, msg := answer(resp)
		return 0, 0, fmt.Errorf("model: %d %s", st, msg)
	}
	defer resp.Body.Close()
	got, _ := strconv.Atoi(resp.Header.Get(fl.RoundHeader))
	var n int64
	if into != nil {
		k, err := io.ReadFull(resp.Body, into)
		if err != nil && err != io.ErrUnexpectedEOF {
			return got, k, err
		}
		n = int64(k)
		m, _ := io.Copy(io.Discard, resp.Body)
		n += m
	} else {
		n, err = io.Copy(io.Discard, resp.Body)
	}
	return got, int(n), err
}

func (c *httpFL) Status(ctx context.Context, job string) (fl.Status, error) {
	var st fl.Status
	resp, err := c.do(ctx, http.MethodGet, c.control+"/fl/"+job, nil, 0)
	if err != nil {
		return st, err
	}
	code, msg := answer(resp)
	if code != http.StatusOK {
		return st, fmt.Errorf("status: %d %s", code, msg)
	}
	return st, json.Unmarshal([]byte(msg), &st)
}

func (c *httpFL) Delete(ctx context.Context, job string) error {
	resp, err := c.do(ctx, http.MethodDelete, c.control+"/fl/"+job, nil, 0)
	if err != nil {
		return err
	}
	if st, msg := answer(resp); st != http.StatusOK {
		return fmt.Errorf("delete: %d %s", st, msg)
	}
	return nil
}

// grpcFL speaks the serverful baseline's gRPC service: a connection per
// client, as clients on their own machines would have.
type grpcFL struct {
	addr  string
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newGRPCFL(addr string) *grpcFL { return &grpcFL{addr: addr, conns: map[string]*grpc.ClientConn{}} }

func (c *grpcFL) conn(client string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc := c.conns[client]; cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(baseline.FLWindow), grpc.WithInitialConnWindowSize(baseline.FLWindow),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(baseline.FLCodec{}),
			grpc.MaxCallRecvMsgSize(baseline.FLMaxMessage), grpc.MaxCallSendMsgSize(baseline.FLMaxMessage)))
	if err != nil {
		return nil, err
	}
	c.conns[client] = cc
	return cc, nil
}

func (c *grpcFL) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cc := range c.conns {
		cc.Close()
	}
	clear(c.conns)
}

func (c *grpcFL) call(ctx context.Context, client, method string, in, out any) error {
	cc, err := c.conn(client)
	if err != nil {
		return err
	}
	return cc.Invoke(ctx, "/"+baseline.FLService+"/"+method, in, out)
}

func (c *grpcFL) Create(ctx context.Context, job fl.Job) error {
	b, _ := json.Marshal(job)
	return c.call(ctx, "", "Create", &baseline.FLJSON{JSON: b}, &baseline.FLJSON{})
}

func (c *grpcFL) Update(ctx context.Context, job string, round int, client string, samples float64, body []byte) (int, string, error) {
	var out baseline.FLJSON
	err := c.call(ctx, client, "Update", &baseline.FLUpdate{Job: job, Round: uint32(round), Client: client, Samples: samples, Weights: body}, &out)
	if err != nil {
		st := baseline.FLHTTPStatus(err)
		if st == http.StatusBadGateway {
			return 0, "", err
		}
		return st, err.Error(), nil
	}
	return http.StatusOK, string(out.JSON), nil
}

func (c *grpcFL) Model(ctx context.Context, client, job string, round int, into []byte) (int, int, error) {
	req := &baseline.FLModelRequest{Job: job}
	if round >= 0 {
		req.Round, req.Has = uint32(round), true
	}
	m := &baseline.FLModel{Into: into}
	if err := c.call(ctx, client, "Model", req, m); err != nil {
		return 0, 0, err
	}
	return int(m.Round), m.N, nil
}

func (c *grpcFL) Status(ctx context.Context, job string) (fl.Status, error) {
	var st fl.Status
	b, _ := json.Marshal(map[string]string{"id": job})
	var out baseline.FLJSON
	if err := c.call(ctx, "", "Status", &baseline.FLJSON{JSON: b}, &out); err != nil {
		return st, err
	}
	return st, json.Unmarshal(out.JSON, &st)
}

func (c *grpcFL) Delete(ctx context.Context, job string) error {
	b, _ := json.Marshal(map[string]string{"id": job})
	return c.call(ctx, "", "Delete", &baseline.FLJSON{JSON: b}, &baseline.FLJSON{})
}
