package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// buildInfo is what `ebb version` reports.
type buildInfo struct {
	Version   string `json:"version"`            // module version, "(devel)" for a local build
	Revision  string `json:"revision,omitempty"` // VCS revision the binary was built from
	Time      string `json:"time,omitempty"`     // commit time of Revision
	Modified  bool   `json:"modified"`           // built from a work tree with uncommitted changes
	GoVersion string `json:"go"`
	Platform  string `json:"platform"`
}

// Set by a release build that cannot rely on the toolchain's VCS stamping
// (built outside a checkout, or with -buildvcs=false):
//
//	go build -ldflags "-X main.linkVersion=v1.2.3 -X main.linkRevision=$(git rev-parse HEAD)" ./cmd/ebb
//
// They win over what debug.ReadBuildInfo reports.
var linkVersion, linkRevision string

// readBuildInfo reads the build information the Go toolchain embedded in
// the binary; a binary without it (unusual) reports version "unknown".
func readBuildInfo() (bi buildInfo) {
	bi = buildInfo{Version: "unknown", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	defer func() {
		if linkVersion != "" {
			bi.Version = linkVersion
		}
		if linkRevision != "" {
			bi.Revision = linkRevision
		}
	}()
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return bi
	}
	if info.Main.Version != "" {
		bi.Version = info.Main.Version
	}
	bi.GoVersion = info.GoVersion
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			bi.Revision = s.Value
		case "vcs.time":
			bi.Time = s.Value
		case "vcs.modified":
			bi.Modified = s.Value == "true"
		}
	}
	return bi
}

func runVersion(ctx context.Context, m *Main, args []string) error {
	var asJSON bool
	fs := m.newFlagSet("version")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := m.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("version takes no arguments, got %q", fs.Args())
	}
	bi := readBuildInfo()
	if asJSON {
		return printJSON(m.Stdout, bi)
	}
	rev := bi.Revision
	switch {
	case rev == "":
		rev = "unknown revision"
	case bi.Modified:
		rev += " (modified)"
	}
	if bi.Time != "" {
		rev += ", " + bi.Time
	}
	fmt.Fprintf(m.Stdout, "ebb %s (%s) %s %s\n", bi.Version, rev, bi.GoVersion, bi.Platform)
	return nil
}
