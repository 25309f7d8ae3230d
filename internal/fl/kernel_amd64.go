package fl

import "golang.org/x/sys/cpu"

// useAVX2: the AVX2 + FMA kernels of kernel_amd64.s run on this CPU.
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func foldAVX2(acc, u *float32, n int, w float32) int

//go:noescape
func storeAVX2(dst, u *float32, n int, w float32) int

//go:noescape
func add2ScaleAVX2(dst, a, b *float32, n int, s float32)

// fold32 runs acc[:n] += w·u[:n] on the vector unit for the largest
// multiple of 32 that fits, and returns how many floats it did and the
// start of the group of 32 it stopped at (-1: none).
func fold32(acc, u []float32, w float32) (done, bad int) {
	n := len(acc) &^ 31
	if !useAVX2 || n == 0 {
		return 0, -1
	}
	return n, foldAVX2(&acc[0], &u[0], n, w)
}

func store32(dst, u []float32, w float32) (done, bad int) {
	n := len(dst) &^ 31
	if !useAVX2 || n == 0 {
		return 0, -1
	}
	return n, storeAVX2(&dst[0], &u[0], n, w)
}

func add2Scale32(dst, a, b []float32, s float32) int {
	n := len(dst) &^ 31
	if !useAVX2 || n == 0 {
		return 0
	}
	add2ScaleAVX2(&dst[0], &a[0], &b[0], n, s)
	return n
}
