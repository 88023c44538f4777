package cli

import (
	"bytes"
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretsNeverPrinted runs the whole pool and store CLI at debug level,
// on success and error paths, and then checks that none of the secrets it
// created or was given — PPS values, MEBx passwords, passphrases — appears
// in anything it printed, nor in clear in the database files. The only
// output that may hold them is the file of an explicit "pool export
// --plain", which is read to learn the secrets and not searched.
func TestSecretsNeverPrinted(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, ".config"))
	t.Setenv("PROVSTICK_STORE_DSN", filepath.Join(dir, "pool.db"))
	t.Setenv("PROVSTICK_STORE_KDF_TIME", "1")
	t.Setenv("PROVSTICK_STORE_KDF_MEMORY_KIB", "256")
	t.Setenv("PROVSTICK_STORE_STATION", "secrets-test")
	t.Setenv(envExportPassphrase, "export-passphrase-7731")
	t.Setenv(envStorePassphrase, "")

	// Secrets the test hands to the CLI.
	given := []string{
		"store-passphrase-1289", "rotated-passphrase-5527", "export-passphrase-7731",
		"Fixed#Passw0rd42", "Imp0rt#Secret9",
		"NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ", "0NHI-NDF0-PKWQ-YBJD-V1Z9-Q3RY-D4KF-78RD",
		"VUEO-N8CL-LIK8-MYLQ-6BID-H6JK-EY2S-E7XX", // wrong check character: an error path
		"VUEO-N8CL-LIK8-MYLQ-6BID-H6JK-EY2S-E7XW", "weakpassword99",
	}
	files := map[string]string{
		"pass":      "store-passphrase-1289\n",
		"newpass":   "rotated-passphrase-5527\n",
		"wrongpass": "Fixed#Passw0rd42\n",
		"fixed":     "Fixed#Passw0rd42\n",
		"good.csv":  "0000-037M,NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ,Imp0rt#Secret9\nIOI7-0XCF,0NHI-NDF0-PKWQ-YBJD-V1Z9-Q3RY-D4KF-78RD\n",
		"dup.csv":   "0000-037M,NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ,Imp0rt#Secret9\n",
		"bad.csv":   "GMW1-L1D9,VUEO-N8CL-LIK8-MYLQ-6BID-H6JK-EY2S-E7XX,Imp0rt#Secret9\n",
		"weak.csv":  "GMW1-L1D9,VUEO-N8CL-LIK8-MYLQ-6BID-H6JK-EY2S-E7XW,weakpassword99\n",
		"bad.json":  `[{"pid": "GMW1-L1D9", "pps": 1, "extra": "Imp0rt#Secret9"}]`,
	}
	for name, content := range files {
		if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	var printed bytes.Buffer
	cli := func(wantOK bool, args ...string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"--log-level", "debug"}, args...), strings.NewReader(""), &out, &errb)
		printed.Write(out.Bytes())
		printed.Write(errb.Bytes())
		if (code == 0) != wantOK {
			t.Fatalf("provstick %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out.String(), errb.String())
		}
	}
	pf := []string{"--passphrase-file", "pass"}
	cli(true, append([]string{"pool", "generate", "--count", "20", "--profile", "amt6-10"}, pf...)...)
	cli(true, append([]string{"pool", "generate", "--count", "5", "--profile", "amt2-5", "--new-password", "fixed", "--new-password-file", "fixed"}, pf...)...)
	cli(true, append([]string{"pool", "import", "--profile", "amt6-10", "good.csv"}, pf...)...)
	cli(false, append([]string{"pool", "import", "--profile", "amt6-10", "dup.csv"}, pf...)...)
	cli(false, append([]string{"pool", "import", "--profile", "amt6-10", "bad.csv"}, pf...)...)
	cli(false, append([]string{"pool", "import", "--profile", "amt6-10", "weak.csv"}, pf...)...)
	cli(false, append([]string{"pool", "import", "--profile", "amt6-10", "bad.json"}, pf...)...)
	cli(false, append([]string{"pool", "generate", "--count", "1", "--profile", "amt6-10", "--new-password", "fixed", "--new-password-file", "pass"}, pf...)...)
	cli(false, "pool", "generate", "--count", "1", "--profile", "amt6-10", "--passphrase-file", "wrongpass")
	cli(true, append([]string{"pool", "export", "-o", "pool.age", "--scrypt-work-factor", "10"}, pf...)...)
	cli(true, "pool", "status")
	cli(true, "pool", "history", "0000-037M")
	cli(true, "pool", "void", "IOI7-0XCF", "--reason", "test")
	cli(true, "pool", "history", "IOI7-0XCF")
	cli(true, "store", "migrate", "--dry-run")
	cli(true, "store", "rekey", "--passphrase-file", "pass", "--new-passphrase-file", "newpass")
	cli(false, append([]string{"pool", "export", "-o", "x.age"}, pf...)...)
	t.Setenv("PROVSTICK_STORE_DSN", filepath.Join(dir, "other.db"))
	cli(true, "pool", "import", "pool.age", "--passphrase-file", "newpass")
	cli(false, "pool", "import", "pool.age", "--passphrase-file", "newpass") // all duplicates
	t.Setenv("PROVSTICK_STORE_DSN", filepath.Join(dir, "pool.db"))

	// A stick drawn from the pool, looked at and consumed: the setup.bin
	// holds the secrets (it must), the output must not.
	cli(true, append([]string{"setupbin", "create", "--from-pool", "--stick", "s1", "--records", "3", "--profile", "amt6-10", "-o", "s1.bin"}, []string{"--passphrase-file", "newpass"}...)...)
	cli(true, "setupbin", "view", "s1.bin")
	cli(true, "setupbin", "view", "--json", "s1.bin")
	cli(true, "setupbin", "verify", "s1.bin")
	cli(true, "setupbin", "consume", "s1.bin")
	cli(false, append([]string{"setupbin", "create", "--from-pool", "--stick", "s2", "--records", "300", "--profile", "amt6-10", "-o", "s2.bin"}, []string{"--passphrase-file", "newpass"}...)...)
	// The deliberate plain export: its output is still searched, the
	// file is where the secrets are learnt.
	cli(true, "pool", "export", "--plain", "-o", "plain.csv", "--passphrase-file", "newpass")
	f, err := os.Open("plain.csv")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1+27 {
		t.Fatalf("plain export has %d lines, want 28", len(recs))
	}
	secrets := append([]string(nil), given...)
	for _, r := range recs[1:] {
		secrets = append(secrets, r[1], strings.ReplaceAll(r[1], "-", ""), r[3]) // PPS both forms, new password
		if r[2] != "admin" {
			secrets = append(secrets, r[2])
		}
	}
	for _, s := range given {
		if strings.Count(s, "-") == 7 {
			secrets = append(secrets, strings.ReplaceAll(s, "-", ""))
		}
	}
	if printed.Len() == 0 || !strings.Contains(printed.String(), "level=DEBUG") {
		t.Fatal("nothing was logged at debug level: the test proves nothing")
	}
	for _, s := range secrets {
		if strings.Contains(printed.String(), s) {
			t.Errorf("secret %q appears in the CLI output", s)
		}
	}
	// Nor in clear at rest (the WAL may hold recent pages).
	for _, name := range []string{"pool.db", "pool.db-wal", "other.db", "other.db-wal", "pool.age"} {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("secret %q stored in clear in %s", s, name)
			}
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", printed.String())
	}
}
