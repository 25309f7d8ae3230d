// Package config loads and validates spry.yaml, the file that describes
// one app: its pool, its functions and the chains that run them.
//
// Loading happens in two phases. decode walks the YAML node tree (so that
// file order and line numbers survive) into specs that record every
// setting with its line, and reports the problems of shape: syntax,
// unknown and duplicate keys, wrong types. validate then checks every
// value, fills the defaults and builds the App. Neither stops at the first
// problem: the *Error that comes back lists all of them, one per line, each
// with file, line and field path:
//
//	spry.yaml:14: chains.hello.steps[2]: unknown function "cnt" (functions: upper, reverse, wrap)
//
// # Driving it
//
// The daemon, for spry up -f a.yaml -f b.yaml (and --check):
//
//	apps, err := config.LoadAll(paths, config.Options{
//		Builtins:     func(name string) bool { _, ok := builtins[name]; return ok },
//		BuiltinNames: slices.Sorted(maps.Keys(builtins)),
//	})
//	if err != nil {
//		fmt.Fprintln(os.Stderr, err) // every problem, one per line
//		os.Exit(1)
//	}
//	for _, a := range apps {
//		layout := pool.Layout{Buffers: a.Pool.Buffers, BufferSize: a.Pool.BufferSize,
//			Functions: uint32(len(a.Functions)), Chains: uint32(len(a.Chains))}
//		for _, c := range a.Chains {
//			// c.Route, c.Steps (indexes into a.Functions), c.Timeout …
//		}
//	}
//
// An app deployed into a running daemon is checked against the others with
// Conflicts; a config held in memory (the built-in demo) goes through Parse.
package config
