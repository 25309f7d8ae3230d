package bpf

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// Capability numbers (include/uapi/linux/capability.h).
const (
	capNetAdmin = 12
	capSysAdmin = 21
	capBPF      = 39
)

// effectiveCaps returns the calling thread's effective capability set.
// Capabilities are per thread in Linux; the bpf(2) calls that failed ran
// on this goroutine's thread.
func effectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, err
	}
	return uint64(data[1].Effective)<<32 | uint64(data[0].Effective), nil
}

// missingCaps names the capabilities loading the program needs and the
// thread lacks: CAP_BPF for maps and programs, CAP_NET_ADMIN for a
// sockmap and an SK_MSG program; CAP_SYS_ADMIN stands in for both.
func missingCaps() []string {
	caps, err := effectiveCaps()
	if err != nil {
		return nil
	}
	has := func(c int) bool { return caps&(1<<c) != 0 }
	if has(capSysAdmin) {
		return nil
	}
	var miss []string
	if !has(capBPF) {
		miss = append(miss, "CAP_BPF")
	}
	if !has(capNetAdmin) {
		miss = append(miss, "CAP_NET_ADMIN")
	}
	return miss
}

// diagnose turns an error from loading into one that says why, in terms
// an operator can act on.
func diagnose(err error) error {
	switch {
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return err // the verifier refused the program: a bug here, not a permission
		}
		if miss := missingCaps(); len(miss) > 0 {
			return fmt.Errorf("%w: missing %s (run the daemon as root, or grant it: setcap cap_bpf,cap_net_admin+ep spry): %v",
				ErrPermission, strings.Join(miss, " and "), err)
		}
		return fmt.Errorf("%w: capabilities present, yet refused; check RLIMIT_MEMLOCK (kernels before 5.11), "+
			"a seccomp or LSM policy, or kernel lockdown: %v", ErrPermission, err)
	case errors.Is(err, unix.ENOMEM):
		return fmt.Errorf("%w: out of memory for BPF maps (RLIMIT_MEMLOCK on kernels before 5.11, or the memory cgroup): %v",
			ErrPermission, err)
	case errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS):
		if features.HaveMapType(ebpf.SockMap) != nil || features.HaveProgramType(ebpf.SkMsg) != nil {
			return fmt.Errorf("%w: kernel lacks sockmap or SK_MSG programs (needs CONFIG_BPF_SYSCALL and CONFIG_NET_SOCK_MSG): %v",
				ErrNotSupported, err)
		}
	}
	return err
}
