package pool

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Create makes a new pool: an anonymous memfd named after the app, sized
// for l, sealed against resizing (a shrink by any process holding the fd
// would turn every access beyond the new end into SIGBUS), mapped
// read-write, and initialised with every buffer free.
//
// The memfd has close-on-exec set; the daemon hands it to an app's
// instances explicitly. Close unmaps and closes it.
func Create(name string, l Layout) (*Pool, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	r := l.regions()
	fd, err := unix.MemfdCreate("spry-pool-"+name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("pool: memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(r.total)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pool: size memfd to %d bytes: %w", r.total, err)
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pool: seal memfd: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, int(r.total), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pool: map %d bytes: %w", r.total, err)
	}
	p := &Pool{mem: mem, fd: fd, l: l, r: r, daemon: true}
	p.bind()
	p.init()
	return p, nil
}

// Attach maps the pool behind fd, as an instance does with the fd it
// inherited. The routing region is mapped read-only: only the daemon
// writes it. Attach takes ownership of fd.
func Attach(fd int) (*Pool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("pool: stat fd %d: %w", fd, err)
	}
	if st.Size < PageSize {
		return nil, fmt.Errorf("%w: fd %d is %d bytes", ErrCorrupt, fd, st.Size)
	}
	mem, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("pool: map fd %d: %w", fd, err)
	}
	l, r, err := validate(mem)
	if err != nil {
		unix.Munmap(mem)
		return nil, err
	}
	if err := unix.Mprotect(mem[r.route:r.stats], unix.PROT_READ); err != nil {
		unix.Munmap(mem)
		return nil, fmt.Errorf("pool: protect routing table: %w", err)
	}
	p := &Pool{mem: mem, fd: fd, l: l, r: r}
	p.bind()
	return p, nil
}

// Close unmaps the pool and closes its fd. The pool must not be used after.
func (p *Pool) Close() error {
	if p.mem == nil {
		return nil
	}
	err := unix.Munmap(p.mem)
	p.mem = nil
	if cerr := unix.Close(p.fd); err == nil {
		err = cerr
	}
	return err
}
