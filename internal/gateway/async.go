package gateway

// runAsync serves a request that asked for respond-async: admitted up to
// its body like any request (the same route, method, size, in-flight and
// pool checks), its body read into its pool buffer, then handed to
// Events.Async, which stores it durably and dispatches the same buffer.
// The client gets 202 with the activation's id only once it is stored.
func (c *conn) runAsync() bool {
	x, n, keep, ok := c.admitBody()
	if !ok {
		return keep
	}
	ch := x.Chain()
	res := c.g.events.Async(&x, &c.gr, n)
	if res.Err != nil {
		ch.count(res.Err.Status, c.gr.Began)
		var extra []byte
		if res.Err.Retry {
			extra = retryAfter
		}
		c.msg = c.gr.AppendMessage(c.msg[:0], res.Err)
		c.writeResponse(res.Err.Status, textPlain, c.msg, false, extra)
		return true
	}
	ch.count(202, c.gr.Began)
	c.writeAccepted(res)
	return true
}

// admitBody admits the current request (Begin) and reads its body into
// its pool buffer. When ok is false the request has been answered and
// ended: refused, or its body could not be read (the admission cancelled,
// the connection to close); keep says whether it may serve another.
func (c *conn) admitBody() (x Admission, n int, keep, ok bool) {
	x, err := c.g.Begin(&c.gr)
	if err != nil {
		return x, 0, c.refuse(err), false
	}
	n, err = c.ReadBody(x.Body())
	if err != nil {
		ch := x.Chain()
		x.Cancel()
		ch.count(err.Status, c.gr.Began)
		if err != ErrSilent {
			c.msg = c.gr.AppendMessage(c.msg[:0], err)
			c.writeResponse(err.Status, textPlain, c.msg, true, nil)
		}
		return x, 0, false, false
	}
	return x, n, true, true
}

var (
	appJSON      = []byte("application/json")
	asyncApplied = "Preference-Applied: respond-async\r\n"
)

// writeAccepted answers 202 for activation res: its id in the body and in
// X-Spry-Activation-Id, its record's address in Location.
func (c *conn) writeAccepted(res AsyncResult) {
	e := append(c.ext[:0], asyncApplied...)
	e = append(append(append(e, "X-Spry-Activation-Id: "...), res.ID...), "\r\n"...)
	e = append(append(append(e, "Location: "...), c.g.activationURL...), res.ID...)
	e = append(e, "\r\n"...)
	c.ext = e
	m := append(append(c.msg[:0], `{"id":"`...), res.ID...)
	m = append(append(append(m, `","location":"`...), c.g.activationURL...), res.ID...)
	if res.Duplicate {
		m = append(m, `","duplicate":true}`...)
	} else {
		m = append(m, `"}`...)
	}
	c.msg = append(m, '\n')
	c.writeResponse(202, appJSON, c.msg, false, c.ext)
}
