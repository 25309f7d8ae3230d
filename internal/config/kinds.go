package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The kinds of function that run through a runtime of spry's own
// (internal/runtime) rather than as a program that speaks the contract
// itself: python:, http: and lambda:, with the options each takes.

// Event shapes of a lambda: function.
const (
	EventPayload = "payload" // the chain's payload, as is
	EventHTTP    = "http"    // an API Gateway HTTP API (v2) request event
)

// MaxPort is the largest port an http: function may name.
const MaxPort = 65535

// kindKeys are the function keys of this file, in the order the docs list
// them.
var kindKeys = []string{"python", "http", "lambda", "virtualenv", "requirements", "port", "health", "event", "handler"}

// kindList names every kind, for messages.
const kindList = "builtin:, go:, exec:, python:, http:, lambda: or wasm:"

// kindSpec is what a function's mapping says about these kinds.
type kindSpec struct {
	python       value[string]
	http         value[[]item]
	lambda       value[[]item]
	virtualenv   value[string]
	requirements value[string]
	port         value[int64]
	health       value[string]
	event        value[string]
	handler      value[string]
}

// kindField decodes key into k, reporting whether it is one of kindKeys.
func (d *decoder) kindField(k *kindSpec, key, path string, kn, v *yaml.Node) bool {
	switch key {
	case "python":
		k.python = d.str(v, path)
	case "http":
		k.http = d.strs(kn, v, path)
	case "lambda":
		k.lambda = d.strs(kn, v, path)
	case "virtualenv":
		k.virtualenv = d.str(v, path)
	case "requirements":
		k.requirements = d.str(v, path)
	case "port":
		k.port = d.int(v, path)
	case "health":
		k.health = d.str(v, path)
	case "event":
		k.event = d.str(v, path)
	case "handler":
		k.handler = d.str(v, path)
	default:
		return false
	}
	return true
}

// lines lists the kind keys the function sets, for the one-kind check.
func (k *kindSpec) lines() []struct {
	key  string
	line int
} {
	return []struct {
		key  string
		line int
	}{{"python:", k.python.line}, {"http:", k.http.line}, {"lambda:", k.lambda.line}}
}

// validate fills f from the one kind key of this file that the function
// sets.
func (k *kindSpec) validate(f *Function, dir, path string, ps *problems) {
	switch {
	case k.python.ok():
		f.Kind = Python
		f.Python = pythonFile(k.python.v, dir, k.python.line, path+".python", ps)
	case k.http.ok():
		f.Kind = HTTP
		f.HTTP = program(k.http.v, dir, k.http.line, path+".http", ps)
	case k.lambda.ok():
		f.Kind = Lambda
		f.Lambda = program(k.lambda.v, dir, k.lambda.line, path+".lambda", ps)
	}
	if v := k.virtualenv; v.ok() && f.Kind == Python {
		p, err := resolve(v.v, dir)
		if err == nil {
			err = isFile(filepath.Join(p, "bin", "python"))
		}
		if err != nil {
			ps.add(v.line, path+".virtualenv", "%s is not a virtualenv: bin/python: %s", p, reason(err))
		}
		f.Virtualenv = p
	}
	if v := k.requirements; v.ok() && f.Kind == Python {
		p, err := resolve(v.v, dir)
		if err == nil {
			err = isFile(p)
		}
		if err != nil {
			ps.add(v.line, path+".requirements", "%s: %s", p, reason(err))
		}
		f.Requirements = p
	}
	if v := k.port; v.ok() && f.Kind == HTTP {
		if v.v < 1 || v.v > MaxPort {
			ps.add(v.line, path+".port", "want 1..%d, got %d", MaxPort, v.v)
		} else {
			f.Port = int(v.v)
		}
	}
	if v := k.health; v.ok() && f.Kind == HTTP {
		if why := checkRoute(v.v); why != "" && v.v != "/" {
			ps.add(v.line, path+".health", "%q is not a path: %s", v.v, why)
		} else {
			f.Health = v.v
		}
	}
	if f.Kind == Lambda {
		f.Event = EventPayload
		if v := k.event; v.ok() {
			switch v.v {
			case EventPayload, EventHTTP:
				f.Event = v.v
			default:
				ps.add(v.line, path+".event", "unknown event shape %q (known: %s, %s)", v.v, EventPayload, EventHTTP)
			}
		}
		if v := k.handler; v.ok() {
			f.Handler = v.v
		}
	}
}

// check reports the options of these kinds given to a function of another
// kind, and what a kind cannot do with the function's other settings. It
// runs once instances, scale and concurrency are known.
func (k *kindSpec) check(f *Function, sp *fnSpec, path string, ps *problems) {
	for _, o := range []struct {
		key  string
		line int
		kind Kind
	}{
		{"virtualenv", k.virtualenv.line, Python}, {"requirements", k.requirements.line, Python},
		{"port", k.port.line, HTTP}, {"health", k.health.line, HTTP},
		{"event", k.event.line, Lambda}, {"handler", k.handler.line, Lambda},
	} {
		if o.line != 0 && f.Kind != 0 && f.Kind != o.kind {
			ps.add(o.line, path+"."+o.key, "only for %s: functions (this one is %s:)", o.kind, f.Kind)
		}
	}
	if f.Kind == Python && f.Virtualenv != "" && f.Requirements != "" {
		ps.add(k.requirements.line, path+".requirements", "give virtualenv: or requirements:, not both (spry makes the virtualenv for requirements:)")
	}
	if f.Kind == HTTP && f.Port != 0 && f.Scale.Max > 1 {
		ps.add(k.port.line, path+".port", "a fixed port allows one instance, and this function may run %d; leave port: out and listen on $PORT", f.Scale.Max)
	}
	if f.Kind == Lambda && f.Concurrency > 1 {
		ps.add(sp.concurrency.line, path+".concurrency", "a Lambda runtime takes one invocation at a time: want 1, got %d (scale with instances: or scale:)", f.Concurrency)
	}
}

// Transports returns the transports a function of kind k can run on:
// every one, except for Python, which has no shared-memory rings.
func (k Kind) Transports() []string {
	if k == Python {
		return []string{TransportSKMsg, TransportUDS}
	}
	return []string{TransportSKMsg, TransportUDS, TransportPoll, TransportAdaptive}
}

// CheckTransport reports whether f can run on transport t, and if not why.
func (f *Function) CheckTransport(t string) error {
	if t == TransportAuto || t == "" || slices.Contains(f.Kind.Transports(), t) {
		return nil
	}
	return fmt.Errorf("function %s is a %s: function, which runs on %s, not %s", f.Name, f.Kind, strings.Join(f.Kind.Transports(), " or "), t)
}

// checkTransports reports functions that cannot run on the app's transport.
func (s *appSpec) checkTransports(a *App, ps *problems) {
	for _, f := range a.Functions {
		if err := f.CheckTransport(a.Transport); err != nil {
			ps.add(s.transport.line, "transport", "%v (functions.%s at line %d)", err, f.Name, f.Line)
		}
	}
}

// pythonFile resolves python: to an absolute path of an existing file.
func pythonFile(v, dir string, line int, path string, ps *problems) string {
	p, err := resolve(v, dir)
	if err == nil {
		err = isFile(p)
	}
	if err == nil && !strings.HasSuffix(p, ".py") {
		err = errors.New("want a Python file (.py) that defines handler(req, res)")
	}
	if err != nil {
		ps.add(line, path, "%s: %s", p, reason(err))
	}
	return p
}

// isFile returns an error unless p is an existing regular file.
func isFile(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return &fs.PathError{Op: "stat", Path: p, Err: errors.New("not a regular file")}
	}
	return nil
}
