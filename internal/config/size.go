package config

import (
	"errors"
	"math"
	"strconv"
	"strings"
)

var (
	errSizeSyntax = errors.New("not a size")
	errSizeRange  = errors.New("size too large")
)

// sizeUnits are the suffixes of a size, longest first so that "B" is tried
// after the suffixes that end in it.
var sizeUnits = []struct {
	suffix string
	mult   uint64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
	{"B", 1},
}

// parseSize parses a byte count: decimal digits and an optional suffix
// (B, KiB, MiB, GiB, KB, MB, GB), nothing else: no sign, no space.
func parseSize(s string) (uint64, error) {
	num, mult := s, uint64(1)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	if num == "" || strings.TrimLeft(num, "0123456789") != "" {
		return 0, errSizeSyntax
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil || n > math.MaxUint64/mult {
		return 0, errSizeRange
	}
	return n * mult, nil
}

// formatSize writes n with the largest binary suffix that divides it.
func formatSize(n uint64) string {
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatUint(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}

// FormatSize prints a byte count the way the config writes sizes (64KiB).
func FormatSize(n uint64) string { return formatSize(n) }

// ParseSize reads a size like 64KiB, 8GiB (what spry.yaml's sizes accept).
func ParseSize(s string) (uint64, error) { return parseSize(s) }
