package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Version, Commit and Date are set at link time by release builds
// (make release):
//
//	go build -ldflags "-X github.com/provstick/provstick/cmd/provstick/cli.Version=v1.2.3
//	  -X github.com/provstick/provstick/cmd/provstick/cli.Commit=0123abcd...
//	  -X github.com/provstick/provstick/cmd/provstick/cli.Date=2026-11-23T16:00:00Z"
//
// When they are empty, provstick version falls back to the build
// information Go records: the module version and the vcs.revision,
// vcs.time and vcs.modified settings (absent with -buildvcs=false).
var (
	Version = ""
	Commit  = ""
	Date    = ""
)

func init() { register(newVersionCmd) }

func newVersionCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the provstick version, commit and build date",
		Long: `Print the provstick version, the commit it was built from and the build date.

The first line is "provstick VERSION GOVERSION OS/ARCH"; the commit and date
lines say "unknown" when the build recorded neither (for example a plain
go build with -buildvcs=false).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi := readBuildInfo()
			_, err := fmt.Fprintf(e.stdout, "provstick %s %s %s/%s\ncommit: %s\ndate:   %s\n",
				bi.version, runtime.Version(), runtime.GOOS, runtime.GOARCH, bi.commit, bi.date)
			return err
		},
	}
}

// buildInfo is what provstick version prints.
type buildInfo struct {
	version, commit, date string
}

// readBuildInfo combines the link-time variables with debug.ReadBuildInfo.
func readBuildInfo() buildInfo {
	bi, _ := debug.ReadBuildInfo()
	return resolveBuildInfo(Version, Commit, Date, bi)
}

// resolveBuildInfo prefers the link-time values and fills the gaps from bi
// (nil when the binary carries no build information).
func resolveBuildInfo(version, commit, date string, bi *debug.BuildInfo) buildInfo {
	var rev, vcsTime string
	dirty := false
	if bi != nil {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				vcsTime = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if commit == "" && rev != "" {
		commit = rev
		if dirty {
			commit += " (modified)"
		}
	}
	if date == "" {
		date = vcsTime
	}
	if version == "" {
		version = fallbackVersion(bi, rev, dirty)
	}
	if commit == "" {
		commit = "unknown"
	}
	if date == "" {
		date = "unknown"
	}
	return buildInfo{version: version, commit: commit, date: date}
}

func fallbackVersion(bi *debug.BuildInfo, rev string, dirty bool) string {
	if bi == nil {
		return "(unknown)"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "devel-" + rev
}
