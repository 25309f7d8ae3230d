// Package abi is the contract between the sandbox host and a wasm guest:
// the functions each side gives the other and the layout of the call frame
// they share in the guest's memory. The Go guest SDK (sdk, built for
// GOOS=wasip1) and the host (internal/runtime/wasm) both use it; a guest in
// another language follows docs/wasm.md, which describes the same thing.
//
// The guest exports:
//
//	spry_init(window u32) -> u32    once, after the module's own
//	                                initialisation: allocate the frame and two
//	                                windows of window bytes, register the
//	                                handler, return the frame's address (0:
//	                                no handler was registered)
//	spry_handle() -> u32            run the handler on the request in the
//	                                frame; 0 when the frame's response is set
//
// The host gives the guest nothing else unless the function's config grants
// it: WASI with no files, no network, a clock frozen at its start unless
// `clock` is granted, deterministic random bytes unless `random` is, and an
// environment of the function's `env:` only. Its standard output and error
// go to the node's log.
//
// The frame, at the address spry_init returned (little-endian; the guest
// writes the first block once, the host the request block before each call,
// the guest the response block before it returns):
//
//	offset size  field
//	0      4     Magic
//	4      4     frame size (FrameSize)
//	8      4     input window: guest address, page-aligned
//	12     4     output window: guest address, page-aligned
//	16     4     window size in bytes
//	--- request (host) ---
//	24     4     payload offset in the input window
//	28     4     payload length
//	32     2     hop (step of the chain, from 0)
//	34     2     steps in the chain
//	36     2     status set by earlier steps (0: none)
//	38     1     flags (FlagStop: an earlier step ended the chain)
//	39     1     content type length
//	40     8     request id
//	48     8     time left before the chain's deadline, ns (MaxInt64: none)
//	64     128   content type
//	192    256   per hop: start and end, ns since the gateway received the request
//	448    2     metadata length
//	452    1600  metadata (method, path, query, forwarded headers; see pool.Meta)
//	--- response (guest) ---
//	2056   4     result: ResFresh | ResStop | ResError
//	2060   4     output offset (in the input window; ignored when fresh)
//	2064   4     output length
//	2068   2     status (0: unchanged)
//	2070   1     content type length (NoContentType: unchanged)
//	2072   128   content type
//
// The payload is in the input window at its offset; a handler that changes
// it in place reports its new offset and length, one that writes a fresh
// output puts it at the start of the output window and sets ResFresh. An
// error's message is in the input window, as in-place output.
package abi

// Frame layout.
const (
	Magic     = 0x31575053 // "SPW1"
	FrameSize = 4096
	PageSize  = 4096

	OffMagic     = 0
	OffFrameSize = 4
	OffIn        = 8
	OffOut       = 12
	OffWindow    = 16

	OffPayloadOff = 24
	OffPayloadLen = 28
	OffHop        = 32
	OffSteps      = 34
	OffStatus     = 36
	OffFlags      = 38
	OffCtypeLen   = 39
	OffReqID      = 40
	OffRemaining  = 48
	OffCtype      = 64
	OffHopTimes   = 192
	OffMetaLen    = 448
	OffMeta       = 452

	OffResult      = 2056
	OffOutOff      = 2060
	OffOutLen      = 2064
	OffOutStatus   = 2068
	OffOutCtypeLen = 2070
	OffOutCtype    = 2072

	MaxContentType = 127
	MaxHops        = 16
	MaxMeta        = 1600
)

// Request flags.
const FlagStop = 1

// Result bits.
const (
	ResFresh = 1 << iota // the output is at the start of the output window
	ResStop              // the chain ends after this step
	ResError             // the output is an error message
)

// NoContentType in the response's content type length leaves the content
// type unchanged.
const NoContentType = 0xff

// Export names.
const (
	ExportInit   = "spry_init"
	ExportHandle = "spry_handle"
)
