//go:build linux

package transport

import (
	"encoding/binary"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/spry-dev/spry/internal/bpf/bpftest"
	"github.com/spry-dev/spry/internal/bpf/loopback"
	"github.com/spry-dev/spry/internal/desc"
	"golang.org/x/sys/unix"
)

// BenchmarkHop measures one descriptor round trip between two endpoints,
// each on a locked OS thread: the cost of two hops of a chain. The raw
// floors below do the same with nothing but the mechanism underneath.
func BenchmarkHop(b *testing.B) {
	for _, m := range makers() {
		b.Run(m.name, func(b *testing.B) {
			f := fabric(b, m.mk, "bench")
			a, e := open(b, f, 1), open(b, f, 2)
			go func() {
				runtime.LockOSThread()
				var ds [MaxBatch]desc.Desc
				for {
					n, err := e.Recv(ds[:])
					if err != nil {
						return
					}
					for _, d := range ds[:n] {
						d.Dst, d.Src = d.Src, d.Dst
						for e.Send(d) == ErrFull {
						}
					}
				}
			}()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var ds [MaxBatch]desc.Desc
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := a.Send(desc.Desc{Dst: 2, Src: 1, Buf: uint32(i)}); err != nil {
					b.Fatal(err)
				}
				if _, err := a.Recv(ds[:]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStream measures one-way throughput under load: a producer on
// its own locked thread sends as fast as the destination takes
// descriptors, the receiver takes them in batches. ns/op is per
// descriptor.
func BenchmarkStream(b *testing.B) {
	for _, m := range makers() {
		b.Run(m.name, func(b *testing.B) {
			f := fabric(b, m.mk, "bench")
			a, e := open(b, f, 1), open(b, f, 2)
			n := b.N
			go func() {
				runtime.LockOSThread()
				for i := 0; i < n; i++ {
					for {
						err := a.Send(desc.Desc{Dst: 2, Src: 1, Buf: uint32(i)})
						if err == nil {
							break
						}
						if err != ErrFull {
							return
						}
						runtime.Gosched()
					}
				}
			}()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var ds [MaxBatch]desc.Desc
			b.ReportAllocs()
			b.ResetTimer()
			for got := 0; got < n; {
				k, err := e.Recv(ds[:])
				if err != nil {
					b.Fatal(err)
				}
				got += k
			}
		})
	}
}

// BenchmarkRawSockmap is skmsg's floor: a bare 16-byte ping-pong between
// two sockets in a sockmap whose program only redirects by the first two
// bytes; raw read and write system calls on locked threads.
func BenchmarkRawSockmap(b *testing.B) {
	sm, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.SockMap, KeySize: 4, ValueSize: 4, MaxEntries: 4})
	if err != nil {
		bpftest.Unavailable(b, err)
	}
	defer sm.Close()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SkMsg, License: "Dual BSD/GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R3, asm.R1, 8, asm.DWord),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 2),
			asm.JGT.Reg(asm.R4, asm.R3, "drop"),
			asm.LoadMem(asm.R3, asm.R2, 0, asm.Half),
			asm.LoadMapPtr(asm.R2, sm.FD()),
			asm.Mov.Imm(asm.R4, 1), // BPF_F_INGRESS
			asm.FnMsgRedirectMap.Call(),
			asm.Return(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("drop"),
			asm.Return(),
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer prog.Close()
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{Target: sm.FD(), Program: prog, Attach: ebpf.AttachSkMsgVerdict}); err != nil {
		b.Fatal(err)
	}
	var fds [3]int
	for k := 1; k <= 2; k++ {
		x, y, err := loopback.Pair()
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(y)
		defer unix.Close(x)
		if err := sm.Update(uint32(k), uint32(x), ebpf.UpdateAny); err != nil {
			b.Fatal(err)
		}
		fds[k] = x
	}
	defer sm.Delete(uint32(1))
	defer sm.Delete(uint32(2))
	rw := func(fd int, buf *[16]byte, write bool) bool {
		nr := uintptr(unix.SYS_READ)
		if write {
			nr = unix.SYS_WRITE
		}
		for {
			n, _, errno := unix.Syscall(nr, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), 16)
			// tcp_bpf's blocking read can wake without data and say EAGAIN.
			if errno == unix.EAGAIN || errno == unix.EINTR {
				continue
			}
			return errno == 0 && n == 16
		}
	}
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer close(done)
		var buf [16]byte
		for !stop.Load() && rw(fds[2], &buf, false) {
			binary.LittleEndian.PutUint16(buf[0:], 1)
			if !rw(fds[2], &buf, true) {
				return
			}
		}
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var buf [16]byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.LittleEndian.PutUint16(buf[0:], 2)
		if !rw(fds[1], &buf, true) || !rw(fds[1], &buf, false) {
			b.Fatal("ping-pong failed")
		}
	}
	b.StopTimer()
	stop.Store(true)
	unix.Shutdown(fds[2], unix.SHUT_RDWR)
	<-done
}

// spsc is the floor of the ring transports: a single-producer,
// single-consumer ring of 16-byte cells in shared memory, nothing else.
type spsc struct {
	head  atomic.Uint64
	_     [56]byte
	tail  atomic.Uint64
	_     [56]byte
	cells [1024][16]byte
}

func (r *spsc) push(v *[16]byte) {
	t := r.tail.Load()
	for t-r.head.Load() == uint64(len(r.cells)) {
	}
	r.cells[t%uint64(len(r.cells))] = *v
	r.tail.Store(t + 1)
}

func (r *spsc) pop(v *[16]byte, stop *atomic.Bool) bool {
	h := r.head.Load()
	for r.tail.Load() == h {
		if stop.Load() {
			return false
		}
	}
	*v = r.cells[h%uint64(len(r.cells))]
	r.head.Store(h + 1)
	return true
}

// BenchmarkRawRing is a bare 16-byte ping-pong over two such rings in a
// MAP_SHARED mapping, both sides busy-polling on locked threads.
func BenchmarkRawRing(b *testing.B) {
	size := 2 * int(unsafe.Sizeof(spsc{}))
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(mem)
	ping := (*spsc)(unsafe.Pointer(&mem[0]))
	pong := (*spsc)(unsafe.Pointer(&mem[unsafe.Sizeof(spsc{})]))
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer close(done)
		var v [16]byte
		for ping.pop(&v, &stop) {
			pong.push(&v)
		}
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var v [16]byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v[4] = byte(i)
		ping.push(&v)
		pong.pop(&v, &stop)
	}
	b.StopTimer()
	stop.Store(true)
	<-done
}

// BenchmarkIdleCPU reports what idle receivers cost: the CPU time of the
// receiving threads themselves (their per-thread CPU clocks) while two
// endpoints wait in Recv and nothing is sent, as a percentage of one core
// per receiver; and the whole process's (getrusage), which adds the
// benchmark's own timer wake-ups. It reports; it asserts nothing.
func BenchmarkIdleCPU(b *testing.B) {
	const receivers = 2
	for _, m := range makers() {
		b.Run(m.name, func(b *testing.B) {
			f := fabric(b, m.mk, "idle")
			tids := make(chan int, receivers)
			for i := range receivers {
				c := open(b, f, uint16(i+1))
				go func() {
					runtime.LockOSThread()
					tids <- unix.Gettid()
					var ds [MaxBatch]desc.Desc
					for {
						if _, err := c.Recv(ds[:]); err != nil {
							return
						}
					}
				}()
			}
			var clocks []int32
			for range receivers {
				clocks = append(clocks, threadClock(<-tids))
			}
			time.Sleep(20 * time.Millisecond) // past adaptive's spin
			threads := func() (d time.Duration) {
				for _, c := range clocks {
					var ts unix.Timespec
					unix.ClockGettime(c, &ts)
					d += time.Duration(ts.Nano())
				}
				return d
			}
			th0, u0, t0 := threads(), cpuTime(), time.Now()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				time.Sleep(10 * time.Millisecond)
			}
			b.StopTimer()
			th, cpu, wall := threads()-th0, cpuTime()-u0, time.Since(t0)
			b.ReportMetric(100*th.Seconds()/wall.Seconds()/receivers, "%cpu/receiver")
			b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "%cpu/process")
		})
	}
}

// threadClock returns the CPU-time clock of thread tid of this process
// (what pthread_getcpuclockid returns: MAKE_THREAD_CPUCLOCK(tid,
// CPUCLOCK_SCHED) in the kernel's posix-timers.h).
func threadClock(tid int) int32 { return int32(^uint32(tid)<<3 | 6) }

// cpuTime returns the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
