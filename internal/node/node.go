package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spry-dev/spry/internal/bpf"
	"github.com/spry-dev/spry/internal/cluster/peer"
	"github.com/spry-dev/spry/internal/config"
	"github.com/spry-dev/spry/internal/gateway"
)

// Config configures a node.
type Config struct {
	Apps []*config.App
	// AdminToken, when set, is the bearer token every admin API request
	// but GET /healthz must present.
	AdminToken string
	// Load reads the config again, for Reload (spry reload, SIGHUP,
	// --watch). nil: the node cannot reload.
	Load   func() ([]*config.App, error)
	Listen string // gateway address (default ":8080")
	// TLS, when set, makes the gateway serve TLS on Listen with this
	// certificate and key (else the apps' tls: files, if any name one).
	TLS       config.TLS
	Admin     string // admin API address (default "127.0.0.1:8081")
	Transport string // when set, overrides every app's transport
	// AppUIDs is the range of uids (and gids) the apps' instances run
	// under when the node runs as root: app i gets First+i. The zero value
	// means DefaultUIDs; First < 0 disables switching.
	AppUIDs    UIDRange
	RuntimeDir string // sockets and staged executables (default /run/spry as root, else under $XDG_RUNTIME_DIR or /tmp)
	CacheDir   string // builds of go: functions (default /var/cache/spry as root, else the user cache dir)
	Exe        string // the spry executable; builtins run as `Exe fn NAME` (default os.Executable)
	Log        *slog.Logger
	Output     io.Writer // where instances' stdout and stderr go (default os.Stderr)
	// DataDir holds the activation store (spry up's --data-dir, by
	// default DefaultDataDir). "" keeps it in the node's runtime
	// directory, gone when the node stops (tests).
	DataDir string
	// MQTT is the address of the embedded MQTT broker ("" runs none).
	MQTT string
	// ReadyTimeout bounds how long a new instance may take to announce
	// itself (default 30 s); StopGrace how long a stopping one may take to
	// finish what it holds before it is killed (default 5 s).
	ReadyTimeout, StopGrace time.Duration
	// Cluster puts the node under a cluster controller (spry up --cluster):
	// it may run no app, and how many instances of each function run here
	// comes from SetInstances, not from this node's autoscalers (which
	// still measure, and balance load by measured speed).
	Cluster bool
	// Peers is a cluster node's side of the hops between nodes (Cluster
	// only): a step with no ready instance here goes to another node.
	Peers PeerConfig
	// Options validate apps deployed to the node (spry deploy; builtins).
	Options config.Options
}

// UIDRange is an inclusive range of uids.
type UIDRange struct{ First, Last int }

// DefaultUIDs are the uids apps run under when the node runs as root.
var DefaultUIDs = UIDRange{61000, 61183}

func (c *Config) fill() error {
	if len(c.Apps) == 0 && !c.Cluster {
		return errors.New("node: no apps to run")
	}
	if c.Listen == "" {
		c.Listen = ":8080"
	}
	if c.Admin == "" {
		c.Admin = "127.0.0.1:8081"
	}
	if c.AppUIDs == (UIDRange{}) {
		c.AppUIDs = DefaultUIDs
	}
	if c.AppUIDs.First >= 0 && c.AppUIDs.Last-c.AppUIDs.First+1 < len(c.Apps) {
		return fmt.Errorf("node: uid range %d-%d is too small for %d apps", c.AppUIDs.First, c.AppUIDs.Last, len(c.Apps))
	}
	root := os.Geteuid() == 0
	if c.RuntimeDir == "" {
		switch {
		case root:
			c.RuntimeDir = "/run/spry"
		case os.Getenv("XDG_RUNTIME_DIR") != "":
			c.RuntimeDir = filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "spry")
		default:
			c.RuntimeDir = filepath.Join(os.TempDir(), "spry-"+strconv.Itoa(os.Getuid()))
		}
	}
	if c.CacheDir == "" {
		c.CacheDir = defaultCacheDir()
	}
	if c.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("node: find the spry executable: %w", err)
		}
		c.Exe = exe
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Output == nil {
		c.Output = os.Stderr
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 30 * time.Second
	}
	if c.StopGrace <= 0 {
		c.StopGrace = 5 * time.Second
	}
	return nil
}

// Node is one running spry node: its apps, their instances, the gateway
// and the admin API.
type Node struct {
	cfg       Config
	log       *slog.Logger
	ids       ids
	appsMu    sync.Mutex
	apps      []*app // the apps serving now
	retired   []*app // apps a reload replaced or removed, until they drained
	reload    sync.Mutex
	appIDs    uint32 // the last app id handed out (the kernel tells apps apart by it)
	staged    map[string]string
	wasmExe   string // the spry executable sandbox hosts run as (staged)
	uidLeases uidLeases
	gw        *gateway.Gateway
	httpLn    net.Listener
	certs     *certs // the gateway's certificate, when it serves TLS

	runnerOnce sync.Once
	runnerPath string // the builtin runner (spry-fn), when one is beside spry
	adminLn    net.Listener
	peerLn     net.Listener // links from other nodes (a cluster node)
	hub        *peer.Hub    // this node's side of the hops between nodes
	admin      *http.Server
	spawn      *spawner
	bpf        *bpf.Sockmap // the node's sockmap, when eBPF is available and an app wants it
	bpfErr     error        // why eBPF is not available
	bpfOnce    sync.Once
	cg         *cgroups // the node's cgroups, made for the first function with limits
	cgErr      error
	cgOnce     sync.Once
	pollers    int    // busy-polling receivers of all apps
	runDir     string // this node's own directory under RuntimeDir
	binDir     string // executables staged for other uids ("" when not switching)
	uids       bool   // instances run under per-app uids
	started    time.Time
	onWait     atomic.Pointer[func(app, fn string)] // SetOnWait
	outMu      sync.Mutex
	logsMu     sync.Mutex
	logs       map[[2]string]*logBook // app, function → its instances' recent output
	pyOnce     sync.Once              // the Python SDK, staged for python: functions
	pyDir      string
	pyErr      error
	supCtx     context.Context    // the supervisors' context
	stop       context.CancelFunc // stops the supervisors
	sup        sync.WaitGroup     // supervisors
	failed     chan error         // the gateway or admin server stopped on its own
	closed     sync.Once
	events     *events // activations and triggers
	deployMu   sync.Mutex
	deployed   map[string]deployment // apps spry deploy gave the node, by name
}

// Start brings a node up: it takes its listening addresses first (a busy
// port fails at once, before anything is built), builds go: functions,
// creates each app's pool and transport, starts every instance and waits
// until all have announced themselves, then serves HTTP and the admin API.
// On error everything it started is stopped again.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Log, started: time.Now(), failed: make(chan error, 2)}
	defer func() {
		if err != nil {
			n.Shutdown(context.Background())
		}
	}()
	n.cfg.Apps = append(slices.Clone(cfg.Apps), n.loadDeployed()...)
	cfg.Apps = n.cfg.Apps
	if n.httpLn, err = listen("gateway", "--listen", cfg.Listen); err != nil {
		return nil, err
	}
	if n.adminLn, err = listen("admin API", "--admin", cfg.Admin); err != nil {
		return nil, err
	}
	if err := n.listenPeers(); err != nil {
		return nil, err
	}
	// Each app's gateway receive loop is a locked thread that sleeps in a
	// blocking system call, and keeps its processor meanwhile (the runtime
	// takes it back only after up to 10 ms when nothing else seems to
	// wait). One more processor per app keeps the connections' goroutines
	// from queueing behind it: at 32 connections on 2 cores that took the
	// p99 of a 2-step chain from ~14 ms to under 2 ms (spry bench chain).
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(runtime.NumCPU() + len(cfg.Apps))
	}
	n.uids = os.Geteuid() == 0 && cfg.AppUIDs.First >= 0
	if !n.uids && len(cfg.Apps) > 1 {
		n.log.Info("instances of every app run as this user: apps are kept apart by their pool and endpoint directory only (run as root for a uid per app)")
	}
	if err := n.makeRunDir(); err != nil {
		return nil, err
	}
	n.spawn = newSpawner()
	n.supCtx, n.stop = context.WithCancel(context.Background())

	exes, err := n.executables(ctx, cfg.Apps)
	if err != nil {
		return nil, err
	}
	var chains []*gateway.Chain
	for _, ac := range cfg.Apps {
		a, err := newApp(n, ac, exes, nil)
		if err != nil {
			return nil, err
		}
		n.apps = append(n.apps, a)
		chains = append(chains, a.chains()...)
	}
	gc := gateway.Config{Chains: chains, Log: n.log}
	if files := cfg.TLS; files != (config.TLS{}) || config.TLSOf(cfg.Apps) != (config.TLS{}) {
		n.certs = &certs{fromFlags: files != (config.TLS{})}
		if !n.certs.fromFlags {
			files = config.TLSOf(cfg.Apps)
		}
		if err := n.certs.load(files); err != nil {
			return nil, err
		}
		gc.TLS = n.certs.tlsConfig()
	}
	n.gw, err = gateway.New(gc)
	if err != nil {
		return nil, err
	}
	if err := n.startHub(); err != nil {
		return nil, err
	}
	if err := n.launch(ctx, n.apps); err != nil {
		return nil, err
	}
	if err := n.startEvents(); err != nil {
		return nil, err
	}
	n.gw.SetEvents(n.events, "http://"+n.adminLn.Addr().String()+"/v1/activations/")

	go func() {
		if err := n.gw.Serve(n.httpLn); err != nil && !errors.Is(err, gateway.ErrClosed) {
			n.failed <- err
		}
	}()
	n.admin = &http.Server{Handler: n.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := n.admin.Serve(n.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.failed <- fmt.Errorf("node: admin API: %w", err)
		}
	}()
	return n, nil
}

// ErrAddrInUse is returned by Start when an address it must listen on is
// taken (by another spry node, for instance).
var ErrAddrInUse = errors.New("address already in use")

type addrInUse string

func (e addrInUse) Error() string        { return string(e) }
func (e addrInUse) Is(target error) bool { return target == ErrAddrInUse }

// listen listens on addr for what, naming the flag that sets it in the
// error.
func listen(what, flag, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, addrInUse(fmt.Sprintf("node: %s: %s is already in use (another spry up? %s picks another address)", what, addr, flag))
	}
	if err != nil {
		return nil, fmt.Errorf("node: %s: %w", what, err)
	}
	return ln, nil
}

// launch starts every instance of apps, waits until all are ready, then
// starts each app's control loops, told how long the first instances took
// to start.
func (n *Node) launch(ctx context.Context, apps []*app) error {
	// Sandbox hosts first: loading wasm functions (compiling, then
	// initialising each once) belongs to the app's start, not to its
	// first cold start, and a module that cannot run fails the start.
	for _, a := range apps {
		if a.hasWasm() {
			if _, err := a.sandbox.host(ctx); err != nil {
				return err
			}
		}
	}
	var first []chan error
	for _, a := range apps {
		for _, f := range a.fns {
			f.setWant(f.cfg.Instances, func() chan<- error {
				ch := make(chan error, 1)
				first = append(first, ch)
				return ch
			})
		}
	}
	for _, ch := range first {
		select {
		case err := <-ch:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, a := range apps {
		for _, f := range a.fns {
			var coldStart time.Duration
			for _, in := range f.insts {
				coldStart = max(coldStart, in.status().startDuration())
			}
			sc, err := newScaler(f, coldStart)
			if err != nil {
				return fmt.Errorf("app %s: %w", a.cfg.Name, err)
			}
			f.mu.Lock()
			f.sc = sc
			f.mu.Unlock()
		}
		ctx, cancel := context.WithCancel(n.supCtx)
		a.stopWatch = cancel
		a.watching.Add(1)
		go func() {
			defer a.watching.Done()
			a.watch(ctx)
		}()
	}
	return nil
}

// Addr returns the gateway's address.
func (n *Node) Addr() net.Addr { return n.httpLn.Addr() }

// AdminAddr returns the admin API's address.
func (n *Node) AdminAddr() net.Addr { return n.adminLn.Addr() }

// Failed delivers an error when the gateway or the admin API stop serving
// on their own.
func (n *Node) Failed() <-chan error { return n.failed }

// Shutdown stops the node: the gateway stops accepting and answers what is
// in flight (until ctx ends), instances are stopped (SIGTERM, then SIGKILL
// after the grace period), and every socket, pool and directory the node
// made is removed.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	n.closed.Do(func() {
		if n.events != nil {
			n.events.trig.Close() // nothing new from triggers while draining
		}
		if n.gw != nil {
			gctx, cut := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- n.gw.Shutdown(gctx) }()
			select {
			case err = <-done:
			case <-ctx.Done():
				// The time to drain is up: what still waits for a chain
				// (an instance that never came, a step past the drain
				// time) is answered 503 now, before the gateway closes
				// the connections, so that none waits for the chain's
				// deadline.
				n.appsMu.Lock()
				for _, a := range append(n.apps, n.retired...) {
					if a.gw != nil {
						a.gw.Abort()
					}
				}
				n.appsMu.Unlock()
				cut()
				<-done
				err = ctx.Err()
			}
			cut()
		}
		// Other nodes' requests here end (their nodes answer them 502),
		// this node's out there too: nothing is admitted from here on.
		if n.hub != nil {
			n.hub.Close()
		} else if n.peerLn != nil {
			n.peerLn.Close()
		}
		if n.events != nil {
			n.events.close()
		}
		if n.admin != nil {
			n.admin.Close()
		} else if n.adminLn != nil {
			n.adminLn.Close()
		}
		if n.httpLn != nil {
			n.httpLn.Close()
		}
		if n.stop != nil {
			n.stop()
		}
		n.sup.Wait()
		n.appsMu.Lock()
		for _, a := range append(n.apps, n.retired...) {
			a.watching.Wait()
			a.close()
		}
		n.apps, n.retired = nil, nil
		n.appsMu.Unlock()
		n.uidLeases.closeAll()
		if n.cg != nil {
			n.cg.close()
		}
		if n.spawn != nil {
			n.spawn.close()
		}
		if n.bpf != nil {
			n.bpf.Close()
		}
		if n.runDir != "" {
			os.RemoveAll(n.runDir)
		}
	})
	return err
}

// canBPF loads the node's eBPF program and sockmap the first time an app
// asks for skmsg (or auto), and reports whether that worked.
func (n *Node) canBPF() error {
	n.bpfOnce.Do(func() {
		n.bpf, n.bpfErr = bpf.New()
		if n.bpfErr == nil {
			n.log.Info("eBPF data path loaded", "program", "SK_MSG verdict", "map", "sockmap")
		}
	})
	return n.bpfErr
}

// cgroups makes the node's cgroups the first time a function with limits
// asks for them, and reports whether that worked.
func (n *Node) cgroups() (*cgroups, error) {
	n.cgOnce.Do(func() {
		n.cg, n.cgErr = newCgroups()
		if n.cgErr == nil {
			v := "v1"
			if n.cg.v2 {
				v = "v2"
			}
			n.log.Info("cgroups ready for function limits", "version", v, "memory", n.cg.mem, "cpu", n.cg.cpu)
		}
	})
	return n.cg, n.cgErr
}

// makeRunDir creates this node's runtime directory, RuntimeDir/<pid>,
// after removing those of nodes that are no longer running.
func (n *Node) makeRunDir() error {
	base := n.cfg.RuntimeDir
	if err := os.MkdirAll(base, 0o755); err != nil {
		return fmt.Errorf("node: runtime directory: %w", err)
	}
	if ents, err := os.ReadDir(base); err == nil {
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			if syscall.Kill(pid, 0) == syscall.ESRCH {
				os.RemoveAll(filepath.Join(base, e.Name()))
			}
		}
	}
	n.runDir = filepath.Join(base, strconv.Itoa(os.Getpid()))
	os.RemoveAll(n.runDir)
	if err := os.Mkdir(n.runDir, 0o755); err != nil {
		return fmt.Errorf("node: runtime directory: %w", err)
	}
	// Mkdir is subject to the umask; instances of other uids must be able
	// to reach their app's directory below this one.
	if err := os.Chmod(n.runDir, 0o755); err != nil {
		return fmt.Errorf("node: runtime directory: %w", err)
	}
	if n.uids {
		n.binDir = filepath.Join(n.runDir, "bin")
		if err := os.Mkdir(n.binDir, 0o755); err != nil {
			return fmt.Errorf("node: runtime directory: %w", err)
		}
		os.Chmod(n.binDir, 0o755)
	}
	return nil
}

// spawner starts processes from one OS thread that lives as long as the
// node. Linux sends an instance its parent-death signal (SIGKILL: instances
// never outlive the node, even after kill -9 of it) when the *thread* that
// forked it exits, and Go retires threads; a locked thread that never exits
// keeps that promise exact.
type spawner struct {
	reqs chan spawnReq
	done chan struct{}
}

type spawnReq struct {
	start func() error
	err   chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq), done: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		// Never unlocked: when this goroutine returns, its thread exits,
		// and so would any instance still running (it should be none).
		defer close(s.done)
		for r := range s.reqs {
			r.err <- r.start()
		}
	}()
	return s
}

func (s *spawner) run(start func() error) error {
	r := spawnReq{start: start, err: make(chan error, 1)}
	select {
	case s.reqs <- r:
		return <-r.err
	case <-s.done:
		return errors.New("node: shutting down")
	}
}

func (s *spawner) close() {
	close(s.reqs)
	<-s.done
}

// serving returns the apps the node serves now.
func (n *Node) serving() []*app {
	n.appsMu.Lock()
	defer n.appsMu.Unlock()
	return slices.Clone(n.apps)
}

func defaultCacheDir() string {
	if os.Geteuid() == 0 {
		return "/var/cache/spry"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "spry")
	}
	return filepath.Join(os.TempDir(), "spry-cache-"+strconv.Itoa(os.Getuid()))
}
