package baseline

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spry-dev/spry/internal/fl"
	"github.com/spry-dev/spry/internal/mono"
)

// RoleFLServer is the serverful FL aggregator: one long-running process
// that receives every client's update over gRPC and folds it, eagerly,
// into partial sums in its own memory (one per CPU, so folds run side by
// side), as Flower's and Flame's servers work. It runs the same round rules
// (fl.Round) and kernels as Spry's app.
const RoleFLServer = "fl-server"

// flServer is the process's state: its jobs.
type flServer struct {
	mu    sync.Mutex
	jobs  map[string]*flServerJob
	slots int
}

type flServerJob struct {
	agg   *fl.Aggregator
	timer *time.Timer
}

// FLMaxMessage bounds a message (the largest model, and then some).
const FLMaxMessage = fl.MaxParams*4 + 1<<20

// FLWindow is the HTTP/2 flow-control window of the serverful baseline's
// streams and connections, both sides.
const FLWindow = 16 << 20

func runFLServer(ctx context.Context, c *Config) error {
	ln, err := net.Listen("tcp", c.GRPC)
	if err != nil {
		return err
	}
	s := &flServer{jobs: map[string]*flServerJob{}, slots: c.Calls}
	// Tuned as an operator of an FL server would: messages as large as
	// the model, and HTTP/2 flow-control windows of 16 MiB so a 47 MB update
	// is not held up by window updates.
	g := grpc.NewServer(grpc.ForceServerCodecV2(FLCodec{}), grpc.MaxRecvMsgSize(FLMaxMessage), grpc.MaxSendMsgSize(FLMaxMessage),
		grpc.InitialWindowSize(FLWindow), grpc.InitialConnWindowSize(FLWindow))
	method := func(name string, h func(ctx context.Context, dec func(any) error) (any, error)) grpc.MethodDesc {
		return grpc.MethodDesc{MethodName: name, Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			return h(ctx, dec)
		}}
	}
	g.RegisterService(&grpc.ServiceDesc{
		ServiceName: FLService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			method("Create", s.create), method("Update", s.update), method("Model", s.model),
			method("Status", s.status), method("Delete", s.delete),
		},
	}, struct{}{})
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		g.Stop()
		return nil
	}
}

// grpcErr turns an aggregator's refusal into a gRPC status: the HTTP
// status maps as gRPC's own gateway maps it.
func grpcErr(e *fl.Error) error {
	code := codes.Unknown
	switch e.Status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		code = codes.InvalidArgument
	case http.StatusNotFound:
		code = codes.NotFound
	case http.StatusConflict:
		code = codes.AlreadyExists
	case http.StatusGone:
		code = codes.FailedPrecondition
	}
	return status.Error(code, e.Msg)
}

// FLHTTPStatus maps a gRPC code back to the HTTP status the other modes
// answer with (what the bench compares).
func FLHTTPStatus(err error) int {
	switch status.Code(err) {
	case codes.OK:
		return http.StatusOK
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists:
		return http.StatusConflict
	case codes.FailedPrecondition:
		return http.StatusGone
	}
	return http.StatusBadGateway
}

func jsonMsg(v any) (*FLJSON, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &FLJSON{JSON: b}, nil
}

func (s *flServer) job(id string) (*flServerJob, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		return nil, status.Errorf(codes.NotFound, "no job %s", id)
	}
	return j, nil
}

// decodeJob decodes a request that names a job: its JSON, and the job's
// id from the JSON's "id" ("" when it has none).
func decodeJob(dec func(any) error) (m FLJSON, id string, err error) {
	if err := dec(&m); err != nil {
		return m, "", err
	}
	var v struct {
		ID string `json:"id"`
	}
	json.Unmarshal(m.JSON, &v)
	return m, v.ID, nil
}

func (s *flServer) create(_ context.Context, dec func(any) error) (any, error) {
	m, id, err := decodeJob(dec)
	if err != nil {
		return nil, err
	}
	job, err := fl.ParseJob(id, m.JSON)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	agg, err := fl.NewAggregator(job, fl.Eager, s.slots, nil, mono.Now)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.mu.Lock()
	if s.jobs[job.ID] != nil {
		s.mu.Unlock()
		return nil, status.Errorf(codes.AlreadyExists, "job %s exists", job.ID)
	}
	j := &flServerJob{agg: agg}
	s.jobs[job.ID] = j
	s.mu.Unlock()
	s.arm(j)
	return jsonMsg(agg.Status())
}

// arm sets the job's timer for its round's deadline.
func (s *flServer) arm(j *flServerJob) {
	next := j.agg.NextEvent()
	if next == 0 {
		return
	}
	d := time.Duration(next - mono.Now())
	s.mu.Lock()
	defer s.mu.Unlock()
	if j.timer != nil {
		j.timer.Stop()
	}
	j.timer = time.AfterFunc(max(d, 0), func() {
		j.agg.Tick()
		s.arm(j)
	})
}

func (s *flServer) update(_ context.Context, dec func(any) error) (any, error) {
	var u FLUpdate
	defer u.Release()
	if err := dec(&u); err != nil {
		return nil, err
	}
	j, err := s.job(u.Job)
	if err != nil {
		return nil, err
	}
	job := j.agg.Job()
	if e := fl.CheckLength(&job, int64(len(u.Weights))); e != nil {
		return nil, grpcErr(e)
	}
	w, _ := fl.Floats(u.Weights)
	before := j.agg.NextEvent()
	ack, e := j.agg.Update(u.Client, int(u.Round), u.Samples, w)
	if e != nil {
		return nil, grpcErr(e)
	}
	if j.agg.NextEvent() != before {
		s.arm(j) // a new round opened
	}
	return jsonMsg(ack)
}

func (s *flServer) model(_ context.Context, dec func(any) error) (any, error) {
	var m FLModelRequest
	if err := dec(&m); err != nil {
		return nil, err
	}
	j, err := s.job(m.Job)
	if err != nil {
		return nil, err
	}
	round := int(m.Round)
	if !m.Has {
		_, round = j.agg.Model()
	}
	w, e := j.agg.ModelOf(round)
	if e != nil {
		return nil, grpcErr(e)
	}
	return &FLModel{Round: uint32(round), Weights: fl.Bytes(w)}, nil
}

func (s *flServer) status(_ context.Context, dec func(any) error) (any, error) {
	_, id, err := decodeJob(dec)
	if err != nil {
		return nil, err
	}
	j, err := s.job(id)
	if err != nil {
		return nil, err
	}
	return jsonMsg(j.agg.Status())
}

func (s *flServer) delete(_ context.Context, dec func(any) error) (any, error) {
	_, id, err := decodeJob(dec)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	j := s.jobs[id]
	delete(s.jobs, id)
	if j != nil && j.timer != nil {
		j.timer.Stop()
	}
	s.mu.Unlock()
	if j == nil {
		return nil, status.Errorf(codes.NotFound, "no job %s", id)
	}
	return &FLJSON{JSON: []byte(`{}`)}, nil
}
