package gateway

import (
	"strings"
	"testing"
)

// hdrs is a Headers of literal fields.
type hdrs [][2]string

func (h hdrs) Header(name string) []byte {
	for _, f := range h {
		if strings.EqualFold(f[0], name) {
			return []byte(f[1])
		}
	}
	return nil
}
func (h hdrs) NumHeaders() int                     { return len(h) }
func (h hdrs) HeaderAt(i int) (name, value []byte) { return []byte(h[i][0]), []byte(h[i][1]) }

func TestParseCloudEvents(t *testing.T) {
	t.Parallel()
	bin := hdrs{{"Ce-Specversion", "1.0"}, {"Ce-Id", "e1"}, {"Ce-Source", "/cam/7"}, {"Ce-Type", "com.example.motion"}, {"Ce-Zone", "hall"}}
	evs, err := ParseCloudEvents(bin, []byte("text/plain"), []byte("frame"))
	if err != nil {
		t.Fatal(err)
	}
	e := evs[0]
	if len(evs) != 1 || string(e.Data) != "frame" || e.Attr("id") != "e1" || e.Attr("source") != "/cam/7" ||
		e.Attr("type") != "com.example.motion" || e.Attr("zone") != "hall" || e.ContentType != "text/plain" || e.Attr("specversion") != "1.0" {
		t.Fatalf("binary: %+v", e)
	}
	st := `{"specversion":"1.0","id":"e2","source":"/shop","type":"com.example.order.created","subject":"o-9",` +
		`"time":"2024-05-01T10:00:00Z","datacontenttype":"application/json","data":{"n":1},"region":"eu"}`
	evs, err = ParseCloudEvents(hdrs{}, []byte("application/cloudevents+json; charset=utf-8"), []byte(st))
	if err != nil {
		t.Fatal(err)
	}
	e = evs[0]
	if string(e.Data) != `{"n":1}` || e.Attr("subject") != "o-9" || e.Attr("time") != "2024-05-01T10:00:00Z" || e.Attr("region") != "eu" ||
		e.ContentType != "application/json" {
		t.Fatalf("structured: %+v %q", e, e.Data)
	}
	b64 := `{"specversion":"1.0","id":"e3","source":"/s","type":"t","data_base64":"aGk="}`
	if evs, err = ParseCloudEvents(hdrs{}, []byte(ceStructured), []byte(b64)); err != nil || string(evs[0].Data) != "hi" {
		t.Fatalf("data_base64: %v %v", evs, err)
	}
	batch := `[{"specversion":"1.0","id":"a","source":"/s","type":"t","data":"x"},{"specversion":"1.0","id":"b","source":"/s","type":"t"}]`
	if evs, err = ParseCloudEvents(hdrs{}, []byte(ceBatch), []byte(batch)); err != nil || len(evs) != 2 || evs[1].Attr("id") != "b" {
		t.Fatalf("batch: %v %v", evs, err)
	}
}

// Each malformed event gets its exact error.
func TestParseCloudEventsMalformed(t *testing.T) {
	t.Parallel()
	st := []byte(ceStructured)
	for _, c := range []struct {
		name  string
		h     hdrs
		ctype []byte
		body  string
		want  string
	}{
		{"binary without id", hdrs{{"Ce-Specversion", "1.0"}, {"Ce-Source", "/s"}, {"Ce-Type", "t"}}, nil, "x",
			"malformed CloudEvent: attribute id: MUST be a non-empty string"},
		{"binary without source", hdrs{{"Ce-Specversion", "1.0"}, {"Ce-Id", "1"}, {"Ce-Type", "t"}}, nil, "x",
			"malformed CloudEvent: attribute source: REQUIRED"},
		{"binary without type", hdrs{{"Ce-Specversion", "1.0"}, {"Ce-Id", "1"}, {"Ce-Source", "/s"}}, nil, "x",
			"malformed CloudEvent: attribute type: MUST be a non-empty string"},
		{"unknown spec version", hdrs{{"Ce-Specversion", "9.9"}, {"Ce-Id", "1"}, {"Ce-Source", "/s"}, {"Ce-Type", "t"}}, nil, "x",
			"malformed CloudEvent: not a CloudEvent (no ce-specversion, and Content-Type is not application/cloudevents+json)"},
		{"structured, not JSON", nil, st, "{", "malformed CloudEvent: "},
		{"structured without type", nil, st, `{"specversion":"1.0","id":"1","source":"/s"}`,
			"malformed CloudEvent: attribute type: MUST be a non-empty string"},
		{"structured, id not a string", nil, st, `{"specversion":"1.0","id":1,"source":"/s","type":"t"}`, "malformed CloudEvent: "},
		{"structured, bad time", nil, st, `{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"yesterday"}`, "malformed CloudEvent: "},
		{"structured, bad datacontenttype", nil, st, `{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"@@"}`,
			"malformed CloudEvent: attribute datacontenttype: "},
		{"empty batch", nil, []byte(ceBatch), `[]`, "malformed CloudEvent: batch: no event"},
		{"batch, one bad", nil, []byte(ceBatch), `[{"specversion":"1.0","id":"a","source":"/s","type":"t"},{"specversion":"1.0","id":"b","source":"/s"}]`,
			"malformed CloudEvent: attribute type: MUST be a non-empty string (event 1 of the batch)"},
		{"batch, not a list", nil, []byte(ceBatch), `{"id":"x"}`, "malformed CloudEvent: batch: "},
	} {
		_, err := ParseCloudEvents(c.h, c.ctype, []byte(c.body))
		if err == nil || err.Status != 400 || !strings.HasPrefix(err.Msg, c.want) {
			t.Errorf("%s: got %v, want 400 %q…", c.name, err, c.want)
		}
	}
}

// The structured-mode parser takes outside input: it must never panic.
func FuzzCloudEventStructured(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":[1,2]}}`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AAEC","x":true,"y":1.5}`))
	f.Add([]byte(`{"specversion":"0.3","id":"1","source":"/s","type":"t","datacontentencoding":"base64","data":"aGk="}`))
	f.Add([]byte(`[{"specversion":"1.0"}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, ct := range []string{ceStructured, ceBatch} {
			evs, err := ParseCloudEvents(hdrs{}, []byte(ct), body)
			if err == nil && len(evs) == 0 {
				t.Fatal("no error and no event")
			}
			for _, e := range evs {
				if e.Attr("id") == "" || e.Attr("source") == "" || e.Attr("type") == "" {
					t.Fatalf("an event without a required attribute passed: %+v", e)
				}
			}
		}
	})
}
