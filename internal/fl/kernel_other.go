//go:build !amd64

package fl

// Without the amd64 vector kernels every float goes through the Go loops.

func fold32(acc, u []float32, w float32) (done, bad int)  { return 0, -1 }
func store32(dst, u []float32, w float32) (done, bad int) { return 0, -1 }
func add2Scale32(dst, a, b []float32, s float32) int      { return 0 }
