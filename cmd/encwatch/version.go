package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// buildInfo returns the module version, VCS revision and Go version the
// binary was built with.
func buildInfo() (version, revision, goVersion string) {
	version, revision = "(devel)", "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version, revision, "unknown"
	}
	if bi.Main.Version != "" {
		version = bi.Main.Version
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty {
		revision += "-dirty"
	}
	return version, revision, bi.GoVersion
}

func versionCmd(stdout io.Writer) int {
	v, r, g := buildInfo()
	fmt.Fprintf(stdout, "encwatch %s (commit %s, %s)\n", v, r, g)
	return exitOK
}
