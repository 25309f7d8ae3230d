package fl

// Reference computes FedAvg the plain way, in float64: the mean of the
// updates weighted by their sample counts, Σ nᵢ·uᵢ / Σ nᵢ. It also
// returns, per parameter, Σ nᵢ·|uᵢ| / Σ nᵢ, the scale that float32
// rounding errors of a sum of these terms are proportional to (see
// Tolerance).
func Reference(updates [][]float32, samples []float64) (mean, scale []float64) {
	if len(updates) == 0 {
		return nil, nil
	}
	n := len(updates[0])
	mean, scale = make([]float64, n), make([]float64, n)
	var total float64
	for k, u := range updates {
		w := samples[k]
		total += w
		for i, f := range u {
			mean[i] += w * float64(f)
			if f < 0 {
				f = -f
			}
			scale[i] += w * float64(f)
		}
	}
	for i := range mean {
		mean[i] /= total
		scale[i] /= total
	}
	return mean, scale
}

// Tolerance is how far a float32 FedAvg of k updates may be from the
// float64 Reference at a parameter whose scale is s: each of the k folds
// (and the combination of partial sums and the final scaling) rounds once,
// by at most half an ulp of the running sum, so the error is bounded by
// (k+2)·ε₃₂·s, with ε₃₂ = 2⁻²³, plus the smallest normal float for values
// near zero.
func Tolerance(k int, s float64) float64 {
	const eps32 = 1.0 / (1 << 23)
	return float64(k+2)*eps32*s + 1.2e-38
}
