// Package python holds the sources of the Python SDK (the spry package in
// this directory, pip-installable from it), so that the spry binary can
// hand the SDK that matches its pool layout to python: functions without
// any install step. Python users import spry; Go code has no use for this
// package other than the node's.
package python

import "embed"

// Files are the spry package's sources, under spry/.
//
//go:embed spry/*.py
var Files embed.FS
