package transport

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"github.com/spry-dev/spry/internal/desc"
	"golang.org/x/sys/unix"
)

// The uds transport: every endpoint is a Unix datagram socket bound at
// DIR/<id>, where DIR is the app's directory (mode 0700, owned by the
// app's uid), so only the app's instances and the daemon can reach them.
// A descriptor is one 16-byte datagram sent with sendto(2).

// udsPath is the socket path of endpoint id.
func udsPath(dir string, id uint16) string {
	return filepath.Join(dir, strconv.Itoa(int(id)))
}

// maxSockPath is the longest socket path the kernel accepts (sun_path).
const maxSockPath = len(unix.RawSockaddrUnix{}.Path) - 1

type udsFabric struct {
	o    Options
	mu   sync.Mutex
	ends map[uint16]bool
}

func newUDSFabric(o Options) (*udsFabric, error) {
	if o.Dir == "" {
		return nil, errors.New("transport: uds needs a directory")
	}
	if p := udsPath(o.Dir, 65535); len(p) > maxSockPath {
		return nil, fmt.Errorf("transport: uds directory %q too long for socket paths (max %d bytes)", o.Dir, maxSockPath)
	}
	return &udsFabric{o: o, ends: map[uint16]bool{}}, nil
}

func (f *udsFabric) Name() string { return "uds" }

// bind makes endpoint id's socket, bound and owned by the app.
func (f *udsFabric) bind(id uint16) (int, error) {
	path := udsPath(f.o.Dir, id)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("transport: uds socket: %w", err)
	}
	os.Remove(path) // a leftover of an endpoint that had this id
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("transport: uds bind %s: %w", path, err)
	}
	if f.o.UID >= 0 {
		if err := os.Lchown(path, f.o.UID, f.o.GID); err != nil {
			unix.Close(fd)
			os.Remove(path)
			return -1, fmt.Errorf("transport: uds chown %s: %w", path, err)
		}
	}
	// Room for bursts: the queue length limit (net.unix.max_dgram_qlen)
	// usually binds first; a larger buffer keeps memory from binding.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	f.mu.Lock()
	f.ends[id] = true
	f.mu.Unlock()
	return fd, nil
}

func (f *udsFabric) Add(id uint16) (Handoff, error) {
	fd, err := f.bind(id)
	if err != nil {
		return Handoff{}, err
	}
	return Handoff{
		Files: []*os.File{os.NewFile(uintptr(fd), "uds-"+strconv.Itoa(int(id)))},
		Env:   []string{EnvTransport + "=uds", EnvUDSDir + "=" + f.o.Dir},
	}, nil
}

func (f *udsFabric) Open(id uint16) (Conn, error) {
	fd, err := f.bind(id)
	if err != nil {
		return nil, err
	}
	return newUDSConn(id, fd, f.o.Dir), nil
}

func (f *udsFabric) Remove(id uint16) error {
	f.mu.Lock()
	delete(f.ends, id)
	f.mu.Unlock()
	if err := os.Remove(udsPath(f.o.Dir, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("transport: uds remove endpoint %d: %w", id, err)
	}
	return nil
}

func (f *udsFabric) Close() error { return removeAll(&f.mu, f.ends, f.Remove) }

// udsConn is one endpoint. Sends go out with sendto(2) from the endpoint's
// own socket to the destination's path; addresses are built once per
// destination and cached.
type udsConn struct {
	s     sockFD
	id    uint16
	dir   string
	mu    sync.RWMutex
	addrs map[uint16]*udsAddr
	r     batchReader
	bad   uint64
}

type udsAddr struct {
	sa  unix.RawSockaddrUnix
	len uint32
}

func newUDSConn(id uint16, fd int, dir string) *udsConn {
	c := &udsConn{s: sockFD{fd: fd}, id: id, dir: dir, addrs: map[uint16]*udsAddr{}}
	c.r.init()
	return c
}

func attachUDS(id uint16, fd int, dir string) (Conn, error) {
	if dir == "" {
		return nil, fmt.Errorf("transport: %s not set", EnvUDSDir)
	}
	t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || t != unix.SOCK_DGRAM {
		return nil, fmt.Errorf("transport: fd %d is not a datagram socket", fd)
	}
	unix.CloseOnExec(fd)
	return newUDSConn(id, fd, dir), nil
}

func (c *udsConn) ID() uint16 { return c.id }

func (c *udsConn) addr(id uint16) *udsAddr {
	c.mu.RLock()
	a := c.addrs[id]
	c.mu.RUnlock()
	if a != nil {
		return a
	}
	a = &udsAddr{}
	a.sa.Family = unix.AF_UNIX
	p := udsPath(c.dir, id)
	for i := 0; i < len(p); i++ {
		a.sa.Path[i] = int8(p[i])
	}
	a.len = uint32(unsafe.Offsetof(a.sa.Path)) + uint32(len(p)) + 1
	c.mu.Lock()
	c.addrs[id] = a
	c.mu.Unlock()
	return a
}

// SendBatch sends ds one by one (see Conn).
func (c *udsConn) SendBatch(ds []desc.Desc) (int, error) { return sendEach(c, ds) }

func (c *udsConn) Send(d desc.Desc) error {
	if !c.s.acquire() {
		return ErrClosed
	}
	defer c.s.release()
	a := c.addr(d.Dst)
	b := d.Array()
	for {
		_, _, errno := syscall.Syscall6(unix.SYS_SENDTO, uintptr(c.s.fd),
			uintptr(unsafe.Pointer(&b[0])), desc.Size, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL,
			uintptr(unsafe.Pointer(&a.sa)), uintptr(a.len))
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return ErrFull
		case unix.ECONNREFUSED, unix.ENOENT, unix.ENOTDIR:
			return ErrGone
		}
		return fmt.Errorf("transport: uds send to %d: %w", d.Dst, errno)
	}
}

func (c *udsConn) Recv(ds []desc.Desc) (int, error) { return c.recv(ds, true) }

// TryRecv takes the descriptors queued now (see Poller).
func (c *udsConn) TryRecv(ds []desc.Desc) (int, error) { return c.recv(ds, false) }

// FD returns the endpoint's socket (see Poller).
func (c *udsConn) FD() int { return c.s.fd }

func (c *udsConn) recv(ds []desc.Desc, wait bool) (int, error) {
	n, bad, err := c.r.recv(&c.s, ds, wait)
	c.bad += uint64(bad)
	return n, err
}

func (c *udsConn) Close() error {
	c.s.close()
	return nil
}
