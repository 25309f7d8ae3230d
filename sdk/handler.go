package sdk

import (
	"errors"
	"fmt"
)

// Handler runs one step of a chain. It reads the request from req and
// writes its output to res. Returning an error ends the chain: the client
// gets the error's message with status 502, or the status of an *Error.
type Handler func(req *Request, res *Response) error

// Errors a Response reports.
var (
	// ErrTooLarge: the output does not fit in one pool buffer, and the
	// pool has no large-extent region (pool.memory) to grow into.
	ErrTooLarge = errors.New("sdk: output larger than a pool buffer")
	// ErrPoolExhausted: no free buffer, or no room for the output, in the
	// app's pool.
	ErrPoolExhausted = errors.New("sdk: pool exhausted")
)

// Error is an error with the HTTP status the client should get.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// Errorf returns an *Error with status and a formatted message.
func Errorf(status int, format string, args ...any) error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}
