package agent

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var ourCSI = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z\]]`)

func addSeeds(f *testing.F, pattern string) {
	names, err := filepath.Glob(filepath.Join("testdata", "seeds", pattern))
	if err != nil || len(names) == 0 {
		f.Fatalf("no seeds %s: %v", pattern, err)
	}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
}

// FuzzParseCmdline: any command line gives a valid Boot.
func FuzzParseCmdline(f *testing.F) {
	addSeeds(f, "cmdline-*.txt")
	f.Fuzz(func(t *testing.T, s string) {
		b := ParseCmdline(s)
		if b.After != "poweroff" && b.After != "reboot" && b.After != "wait" {
			t.Errorf("After %q", b.After)
		}
		if b.Countdown < -1 || b.Countdown > 3600 {
			t.Errorf("Countdown %d", b.Countdown)
		}
	})
}

// FuzzScreen: any message renders within the screen, and nothing from
// the message can start an escape sequence of its own.
func FuzzScreen(f *testing.F) {
	addSeeds(f, "message-*.txt")
	f.Fuzz(func(t *testing.T, msg string) {
		lines := strings.Split(msg, "\n")
		s := Screen{Kind: ScreenKind(len(msg) % 4), Title: "T", Lead: lines[0], Lines: lines[1:], Footer: msg}
		const cols, rows = 80, 25
		out := string(s.Render(cols, rows))
		// Only our own sequences: CSI with digits, ';' or '?', ending in a
		// letter or ']' (the blanking codes).
		rest := ourCSI.ReplaceAllString(strings.ReplaceAll(out, "\r\n", ""), "")
		for _, r := range rest {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
				t.Fatalf("control character %U from the message reached the console: %q", r, out)
			}
		}
		if strings.Count(out, "\r\n") > rows-1 {
			t.Errorf("%d lines on a %d-row screen", strings.Count(out, "\r\n"), rows)
		}
		for _, l := range strings.Split(ourCSI.ReplaceAllString(out, ""), "\r\n") {
			if n := utf8.RuneCountInString(l); n > cols {
				t.Errorf("line of %d columns: %q", n, l)
			}
		}
	})
}

// FuzzParseConf: any agent.json is a Conf within the documented bounds
// or an ErrConf; the error never quotes the secret.
func FuzzParseConf(f *testing.F) {
	addSeeds(f, "conf-*.json")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConf([]byte(s))
		if err != nil {
			if !errors.Is(err, ErrConf) {
				t.Fatalf("error not ErrConf: %v", err)
			}
			return
		}
		if n := c.CountdownSeconds(); n < 0 || n > 3600 {
			t.Errorf("countdown %d", n)
		}
		if d := c.MEWaitDuration(); d < time.Second || d > 600*time.Second {
			t.Errorf("me_wait %v", d)
		}
		if k := c.CheckKiosk; k != nil {
			if d := k.TimeoutDuration(); d < time.Second || d > 300*time.Second {
				t.Errorf("check_kiosk.timeout %v", d)
			}
			if p := k.PortNumber(); p < 1 || p > 65535 {
				t.Errorf("check_kiosk.port %d", p)
			}
			if k.Domain != "" && !ValidDomain(k.Domain) {
				t.Errorf("check_kiosk.domain %q", k.Domain)
			}
		}
		if a := c.Activation(); a != nil {
			if a.Mode != ModeClientControl || a.Password == nil {
				t.Errorf("activation %+v", a)
			}
			if _, err := a.Password("8a4f2b1c-0000-4000-8000-00163e000001"); err != nil {
				t.Errorf("password for a valid UUID: %v", err)
			}
		}
	})
}
