package config

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrInvalid is matched (errors.Is) by every error Load, LoadAll, Parse and
// Conflicts return for a config with problems.
var ErrInvalid = errors.New("config: invalid")

// Problem is one thing wrong with a config file.
type Problem struct {
	File string // the file as named to Load or Parse
	Line int    // 1-based; 0 when the problem is not at one line
	Path string // field path, e.g. "chains.hello.steps[2]"; "" for the file as a whole
	Msg  string
	Err  error // the underlying error, if any (reading the file)
}

// String formats p as "file:line: path: msg", leaving out the parts that
// are empty.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(p.Line))
		}
		b.WriteString(": ")
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error is every problem found in one or more config files.
type Error struct {
	Problems []Problem
}

// Error prints the problems one per line.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Is reports whether target is ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// Unwrap returns the underlying errors of the problems, so that
// errors.Is(err, fs.ErrNotExist) finds a missing file.
func (e *Error) Unwrap() []error {
	var errs []error
	for _, p := range e.Problems {
		if p.Err != nil {
			errs = append(errs, p.Err)
		}
	}
	return errs
}

// problems collects the problems of one file.
type problems struct {
	file string
	list []Problem
}

func (ps *problems) add(line int, path, format string, args ...any) {
	ps.list = append(ps.list, Problem{File: ps.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// asError returns nil for no problems, else an *Error holding them sorted
// by file (in the order of files) and line. Problems on one line keep the
// order they were found in.
func asError(ps []Problem, files []string) error {
	if len(ps) == 0 {
		return nil
	}
	order := func(f string) int {
		if i := slices.Index(files, f); i >= 0 {
			return i
		}
		return len(files)
	}
	ps = slices.Clone(ps)
	slices.SortStableFunc(ps, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(order(a.File), order(b.File)), cmp.Compare(a.Line, b.Line))
	})
	return &Error{Problems: ps}
}
