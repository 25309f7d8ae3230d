// Package control holds the deterministic parts of Spry's control plane.
//
// The [Predictor] forecasts a function's request rate from one sample per
// control tick: a bank of online linear-regression models (one per window
// and learning rate), every one updated and scored on every sample, and a
// discounted Hedge draw choosing whose forecast to use.
package control
