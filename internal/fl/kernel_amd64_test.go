package fl

import "testing"

// TestKernelsWithoutAVX2 runs the kernel tests on the Go loops alone (what
// a CPU without AVX2 and FMA, or another architecture, runs).
func TestKernelsWithoutAVX2(t *testing.T) {
	was := useAVX2
	useAVX2 = false
	defer func() { useAVX2 = was }()
	t.Run("fold", TestFold)
	t.Run("refuses", TestFoldRefuses)
	t.Run("combine", TestCombine)
}
