package trace

import (
	"embed"
	"slices"
	"strings"
)

// The Azure Functions traces ship with Spry (azure/README.md: their source
// and licence), so that `spry bench autoscale --trace azure_workload_1`
// works from any directory, not only from a clone of the repository.
//
//go:embed azure/*.json
var azure embed.FS

// Builtin returns a trace that ships with Spry, by name (the file name
// without .json: azure_workload_1, azure_workload_2).
func Builtin(name string) (Trace, bool) {
	if strings.ContainsAny(name, "/.") {
		return Trace{}, false
	}
	b, err := azure.ReadFile("azure/" + name + ".json")
	if err != nil {
		return Trace{}, false
	}
	t, err := Parse(b)
	return t, err == nil
}

// BuiltinNames lists the traces Builtin knows, sorted.
func BuiltinNames() []string {
	es, _ := azure.ReadDir("azure")
	var names []string
	for _, e := range es {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}
