package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/spry-dev/spry/internal/auth"
)

// h2cClient is an HTTP/2 client that speaks h2c with prior knowledge.
func h2cClient() *http.Client {
	return &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}, Timeout: 10 * time.Second}
}

func TestH2CPriorKnowledge(t *testing.T) {
	r := newRig(t, 32, 32, 5*time.Second, false)
	cl := h2cClient()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := strings.Repeat("x", i*100)
			resp, err := cl.Post("http://"+r.addr+"/c", "text/plain", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(b) != body {
				t.Errorf("HTTP/%d %d %d bytes, want HTTP/2 200 %d bytes", resp.ProtoMajor, resp.StatusCode, len(b), len(body))
			}
		}()
	}
	wg.Wait()
	// The same semantics as HTTP/1.1: 404, 405 with Allow, 413.
	resp, err := cl.Get("http://" + r.addr + "/c")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" || string(b) != "spry: GET is not allowed on /c\n" {
		t.Fatalf("GET: %d %q Allow %q", resp.StatusCode, b, resp.Header.Get("Allow"))
	}
	resp, err = cl.Post("http://"+r.addr+"/nope", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unknown route: %d", resp.StatusCode)
	}
	resp, err = cl.Post("http://"+r.addr+"/c", "text/plain", strings.NewReader(strings.Repeat("y", 5000)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("too large: %d", resp.StatusCode)
	}
	r.waitFree(t, 32)
}

// rawH2 is a hand-driven HTTP/2 client connection for conformance cases.
type rawH2 struct {
	t    *testing.T
	c    net.Conn
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer
}

func dialH2(t *testing.T, addr string) *rawH2 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	h := &rawH2{t: t, c: c, fr: http2.NewFramer(c, c)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.henc = hpack.NewEncoder(&h.hbuf)
	io.WriteString(c, http2.ClientPreface)
	h.fr.WriteSettings()
	// The server's SETTINGS, then ours acknowledged.
	for acked, got := false, false; !acked || !got; {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok {
			if s.IsAck() {
				acked = true
			} else {
				got = true
				h.fr.WriteSettingsAck()
			}
		}
	}
	return h
}

func (h *rawH2) headers(id uint32, end bool, fields ...string) {
	h.hbuf.Reset()
	for i := 0; i < len(fields); i += 2 {
		h.henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hbuf.Bytes(), EndStream: end, EndHeaders: true})
}

func (h *rawH2) post(id uint32, end bool) {
	h.headers(id, end, ":method", "POST", ":scheme", "http", ":path", "/c", ":authority", "x")
}

// next returns the next frame that is not SETTINGS, PING or WINDOW_UPDATE.
func (h *rawH2) next() http2.Frame {
	h.t.Helper()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("reading a frame: %v", err)
		}
		switch f.(type) {
		case *http2.SettingsFrame, *http2.PingFrame, *http2.WindowUpdateFrame:
			continue
		}
		return f
	}
}

// The conformance cases that matter for a server (after h2spec's).
func TestH2Conformance(t *testing.T) {
	r := newRig(t, 16, 8, 5*time.Second, false)

	t.Run("a request and its answer", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.post(1, false)
		h.fr.WriteData(1, false, []byte("hel"))
		h.fr.WriteData(1, true, []byte("lo"))
		f := h.next().(*http2.MetaHeadersFrame)
		if f.PseudoValue("status") != "200" || f.StreamID != 1 {
			t.Fatalf("headers %v", f.Fields)
		}
		d := h.next().(*http2.DataFrame)
		if string(d.Data()) != "hello" || !d.StreamEnded() {
			t.Fatalf("data %q end %v", d.Data(), d.StreamEnded())
		}
	})
	t.Run("even stream id is a connection error", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.post(2, true)
		if g, ok := h.next().(*http2.GoAwayFrame); !ok || g.ErrCode != http2.ErrCodeProtocol {
			t.Fatalf("want GOAWAY PROTOCOL_ERROR")
		}
	})
	t.Run("DATA on a half-closed stream is STREAM_CLOSED", func(t *testing.T) {
		r := newRig(t, 16, 8, 5*time.Second, true)
		h := dialH2(t, r.addr)
		h.post(1, true)
		r.take(t) // the request is in its chain
		h.fr.WriteData(1, true, []byte("late"))
		if rst, ok := h.next().(*http2.RSTStreamFrame); !ok || rst.ErrCode != http2.ErrCodeStreamClosed {
			t.Fatalf("want RST_STREAM STREAM_CLOSED")
		}
	})
	t.Run("frame larger than SETTINGS_MAX_FRAME_SIZE", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.post(1, false)
		h.fr.WriteData(1, false, make([]byte, h2MaxFrame+1))
		if g, ok := h.next().(*http2.GoAwayFrame); !ok || g.ErrCode != http2.ErrCodeFrameSize {
			t.Fatalf("want GOAWAY FRAME_SIZE_ERROR")
		}
	})
	t.Run("RST_STREAM on an idle stream", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.fr.WriteRSTStream(5, http2.ErrCodeCancel)
		if g, ok := h.next().(*http2.GoAwayFrame); !ok || g.ErrCode != http2.ErrCodeProtocol {
			t.Fatalf("want GOAWAY PROTOCOL_ERROR")
		}
	})
	t.Run("window overflow", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.fr.WriteWindowUpdate(0, 1<<31-1)
		if g, ok := h.next().(*http2.GoAwayFrame); !ok || g.ErrCode != http2.ErrCodeFlowControl {
			t.Fatalf("want GOAWAY FLOW_CONTROL_ERROR")
		}
	})
	t.Run("missing pseudo-header", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.headers(1, true, ":method", "POST", ":path", "/c")
		if rst, ok := h.next().(*http2.RSTStreamFrame); !ok || rst.ErrCode != http2.ErrCodeProtocol {
			t.Fatalf("want RST_STREAM PROTOCOL_ERROR")
		}
	})
	t.Run("the answer waits for the client's window", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
		h.post(1, false)
		h.fr.WriteData(1, true, []byte(strings.Repeat("z", 25)))
		h.next() // HEADERS
		d := h.next().(*http2.DataFrame)
		if len(d.Data()) != 10 || d.StreamEnded() {
			t.Fatalf("first DATA %d bytes end %v, want 10 and more to come", len(d.Data()), d.StreamEnded())
		}
		h.fr.WriteWindowUpdate(1, 100)
		d = h.next().(*http2.DataFrame)
		if len(d.Data()) != 15 || !d.StreamEnded() {
			t.Fatalf("second DATA %d bytes end %v", len(d.Data()), d.StreamEnded())
		}
	})
	t.Run("GOAWAY from the client", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		h.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := h.fr.ReadFrame(); err != io.EOF {
			if _, err := h.fr.ReadFrame(); err != io.EOF {
				t.Fatalf("want the connection closed, got %v", err)
			}
		}
	})
	r.waitFree(t, 16)
}

// A client that opens and resets thousands of streams keeps the node's
// buffers bounded and is told to calm down (GOAWAY ENHANCE_YOUR_CALM),
// while a good client is served.
func TestH2RapidReset(t *testing.T) {
	r := newRig(t, 64, 32, 5*time.Second, false)
	calmed := make(chan error, 1)
	go func() {
		h := dialH2(t, r.addr)
		go func() {
			for id := uint32(1); id < 2*5000; id += 2 {
				h.post(id, true)
				if h.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					return
				}
			}
		}()
		for {
			f, err := h.fr.ReadFrame()
			if err != nil {
				calmed <- err
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				if g.ErrCode == http2.ErrCodeEnhanceYourCalm {
					calmed <- nil
				} else {
					calmed <- http2.ConnectionError(g.ErrCode)
				}
				return
			}
		}
	}()
	cl := h2cClient()
	for range 50 {
		resp, err := cl.Post("http://"+r.addr+"/c", "text/plain", strings.NewReader("good"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 && resp.StatusCode != 429 || resp.StatusCode == 200 && string(b) != "good" {
			t.Fatalf("good client: %d %q", resp.StatusCode, b)
		}
		if used := 64 - r.p.FreeBuffers(); used > 32 {
			t.Fatalf("%d buffers out", used)
		}
	}
	if err := <-calmed; err != nil {
		t.Fatalf("the resetting client was not told to calm down: %v", err)
	}
	r.waitFree(t, 64)
}

// A step's response headers (res.SetHeader) reach an HTTP/2 client, named
// in lower case.
func TestH2ResponseHeaders(t *testing.T) {
	r := newRig(t, 16, 8, 5*time.Second, true)
	got := make(chan *http.Response, 1)
	go func() {
		resp, err := h2cClient().Post("http://"+r.addr+"/c", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Error(err)
			got <- nil
			return
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- resp
	}()
	d := r.take(t)
	if err := r.p.Header(d.Buf).SetRespHeader("X-Step", "upper"); err != nil {
		t.Fatal(err)
	}
	r.reply(d)
	resp := <-got
	if resp == nil || resp.Header.Get("X-Step") != "upper" {
		t.Fatalf("response headers: %v", resp)
	}
	r.waitFree(t, 16)
}

// More of h2spec's cases for a server (RFC 9113), each driven frame by
// frame with x/net/http2's framer: the error a peer must see, as a
// connection error (GOAWAY) or a stream error (RST_STREAM), and the
// frames a server must answer or ignore.
func TestH2ConformanceMore(t *testing.T) {
	r := newRig(t, 16, 8, 5*time.Second, false)
	goaway := func(t *testing.T, h *rawH2, code http2.ErrCode) {
		t.Helper()
		if g, ok := h.next().(*http2.GoAwayFrame); !ok || g.ErrCode != code {
			t.Fatalf("want GOAWAY %v", code)
		}
	}
	rst := func(t *testing.T, h *rawH2, id uint32, code http2.ErrCode) {
		t.Helper()
		if f, ok := h.next().(*http2.RSTStreamFrame); !ok || f.StreamID != id || f.ErrCode != code {
			t.Fatalf("want RST_STREAM %d %v, got %v", id, code, f)
		}
	}
	answered := func(t *testing.T, h *rawH2, id uint32, status, body string) {
		t.Helper()
		f, ok := h.next().(*http2.MetaHeadersFrame)
		if !ok || f.StreamID != id || f.PseudoValue("status") != status {
			t.Fatalf("want HEADERS :status %s on stream %d, got %v", status, id, f)
		}
		if body == "" {
			for end := f.StreamEnded(); !end; {
				d, ok := h.next().(*http2.DataFrame)
				if !ok || d.StreamID != id {
					t.Fatalf("want the rest of stream %d's answer", id)
				}
				end = d.StreamEnded()
			}
			return
		}
		d, ok := h.next().(*http2.DataFrame)
		if !ok || string(d.Data()) != body || !d.StreamEnded() {
			t.Fatalf("want DATA %q ending stream %d", body, id)
		}
	}

	t.Run("PING is answered with an ACK carrying the same data", func(t *testing.T) {
		h := dialH2(t, r.addr)
		data := [8]byte{'s', 'p', 'r', 'y', 1, 2, 3, 4}
		h.fr.WritePing(false, data)
		h.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			f, err := h.fr.ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			if p, ok := f.(*http2.PingFrame); ok {
				if !p.IsAck() || p.Data != data {
					t.Fatalf("PING answered with ack %v data %v", p.IsAck(), p.Data)
				}
				return
			}
		}
	})
	t.Run("a header block split over CONTINUATION frames", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.hbuf.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/c"}, {":authority", "x"}, {"x-long", strings.Repeat("v", 300)}} {
			h.henc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		block := h.hbuf.Bytes()
		h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:100], EndStream: false})
		h.fr.WriteContinuation(1, false, block[100:200])
		h.fr.WriteContinuation(1, true, block[200:])
		h.fr.WriteData(1, true, []byte("split"))
		answered(t, h, 1, "200", "split")
	})
	t.Run("a frame other than CONTINUATION inside a header block", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.hbuf.Reset()
		h.henc.WriteField(hpack.HeaderField{Name: ":method", Value: "POST"})
		h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.hbuf.Bytes(), EndStream: true})
		h.fr.WriteData(1, true, []byte("x"))
		goaway(t, h, http2.ErrCodeProtocol)
	})
	t.Run("SETTINGS_ENABLE_PUSH other than 0 or 1", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 2})
		goaway(t, h, http2.ErrCodeProtocol)
	})
	t.Run("SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		goaway(t, h, http2.ErrCodeFlowControl)
	})
	t.Run("SETTINGS_MAX_FRAME_SIZE below 16384", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1000})
		goaway(t, h, http2.ErrCodeProtocol)
	})
	t.Run("SETTINGS ACK with a payload", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.fr.WriteRawFrame(http2.FrameSettings, http2.FlagSettingsAck, 0, make([]byte, 6))
		goaway(t, h, http2.ErrCodeFrameSize)
	})
	t.Run("PING of the wrong length", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.fr.WriteRawFrame(http2.FramePing, 0, 0, make([]byte, 6))
		goaway(t, h, http2.ErrCodeFrameSize)
	})
	t.Run("DATA on stream 0", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.fr.WriteRawFrame(http2.FrameData, 0, 0, []byte("x"))
		goaway(t, h, http2.ErrCodeProtocol)
	})
	t.Run("WINDOW_UPDATE of 0 on the connection", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 0, []byte{0, 0, 0, 0})
		goaway(t, h, http2.ErrCodeProtocol)
	})
	t.Run("unknown frame types are ignored", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.fr.WriteRawFrame(0x42, 0xff, 0, []byte("whatever"))
		h.post(1, false)
		h.fr.WriteRawFrame(0x42, 0, 1, []byte("inside a stream"))
		h.fr.WriteData(1, true, []byte("ok"))
		answered(t, h, 1, "200", "ok")
	})
	t.Run("a stream id lower than one used before", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.post(5, false)
		h.fr.WriteData(5, true, []byte("five"))
		answered(t, h, 5, "200", "five")
		h.post(3, true)
		goaway(t, h, http2.ErrCodeProtocol)
	})
	t.Run("upper-case header name", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.headers(1, true, ":method", "POST", ":scheme", "http", ":path", "/c", ":authority", "x", "X-Upper", "1")
		rst(t, h, 1, http2.ErrCodeProtocol)
	})
	t.Run("connection-specific header field", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.headers(1, true, ":method", "POST", ":scheme", "http", ":path", "/c", ":authority", "x", "connection", "keep-alive")
		rst(t, h, 1, http2.ErrCodeProtocol)
	})
	// A malformed request may be answered before the stream is reset
	// (RFC 9113 8.1.1): a 400, or RST_STREAM PROTOCOL_ERROR.
	refused := func(t *testing.T, h *rawH2, id uint32) {
		t.Helper()
		switch f := h.next().(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID != id || f.ErrCode != http2.ErrCodeProtocol {
				t.Fatalf("RST_STREAM %d %v", f.StreamID, f.ErrCode)
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != id || f.PseudoValue("status") != "400" {
				t.Fatalf("HEADERS on %d :status %s, want 400", f.StreamID, f.PseudoValue("status"))
			}
		default:
			t.Fatalf("want RST_STREAM or a 400, got %T", f)
		}
	}
	t.Run("DATA shorter than content-length", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/c", ":authority", "x", "content-length", "10")
		h.fr.WriteData(1, true, []byte("short"))
		refused(t, h, 1)
	})
	t.Run("DATA longer than content-length", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/c", ":authority", "x", "content-length", "3")
		h.fr.WriteData(1, true, []byte("too long"))
		refused(t, h, 1)
	})
	t.Run("unknown route and method are answered like HTTP/1.1", func(t *testing.T) {
		h := dialH2(t, r.addr)
		h.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/nope", ":authority", "x")
		answered(t, h, 1, "404", "")
		h.headers(3, true, ":method", "DELETE", ":scheme", "http", ":path", "/c", ":authority", "x")
		answered(t, h, 3, "405", "")
	})
	r.waitFree(t, 16)
}

// A 401 over HTTP/2 tells the client how to authenticate, as over
// HTTP/1.1.
func TestH2Unauthorized(t *testing.T) {
	keys, err := auth.New(auth.Config{APIKeys: []string{"k1"}})
	if err != nil {
		t.Fatal(err)
	}
	r := newRigWith(t, rigOpts{buffers: 8, inflight: 4, timeout: 5 * time.Second, auth: keys})
	resp, err := h2cClient().Post("http://"+r.addr+"/c", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != keys.Challenge {
		t.Fatalf("HTTP/%d %d, WWW-Authenticate %q (want %q)", resp.ProtoMajor, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), keys.Challenge)
	}
	req, _ := http.NewRequest("POST", "http://"+r.addr+"/c", strings.NewReader("in"))
	req.Header.Set("X-API-Key", "k1")
	resp, err = h2cClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "in" {
		t.Fatalf("with the key: %d %q", resp.StatusCode, b)
	}
	r.waitFree(t, 8)
}
