package fl

import (
	"regexp"
	"strings"
	"testing"
)

// ValidJobID is checked by hand (no regexp at start-up): it accepts what
// the documented pattern accepts.
func TestValidJobIDMatchesPattern(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	ids := []string{"", "a", "Z9", "0", "job-1", "job_1.v2", "-a", ".a", "_a", "a b", "a/b", "ü", "a\n",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 65), "a" + strings.Repeat("-", 63)}
	for c := 0; c < 256; c++ {
		ids = append(ids, string([]byte{byte(c)}), "a"+string([]byte{byte(c)}))
	}
	for _, id := range ids {
		if got, want := ValidJobID(id), re.MatchString(id); got != want {
			t.Errorf("ValidJobID(%q) = %v, the pattern says %v", id, got, want)
		}
	}
}
