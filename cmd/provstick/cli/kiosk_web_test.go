package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/provstick/provstick/internal/ledger"
	"github.com/provstick/provstick/kiosk/store"
)

// TestWebReconcilerQR: the web console's ledger upload (kiosk/web hands
// the uploaded bytes to its Reconciler unchanged) takes a file of scanned
// QR texts as the CLI does: each is decoded and reconciled against the
// store, a bad scan is a damaged line, and the result says how many.
func TestWebReconcilerQR(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, ".config"))
	dsn := filepath.Join(dir, "pool.db")
	t.Setenv("PROVSTICK_STORE_DSN", dsn)
	t.Setenv("PROVSTICK_STORE_KDF_TIME", "1")
	t.Setenv("PROVSTICK_STORE_KDF_MEMORY_KIB", "256")
	t.Setenv(envStorePassphrase, "web-qr-passphrase")
	if err := os.WriteFile("pool.csv", []byte("0000-037M,NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"pool", "import", "--profile", "amt6-10", "pool.csv"},
		{"setupbin", "create", "--from-pool", "--stick", "web-0001", "--records", "1", "--profile", "amt6-10", "-o", "stick.bin"},
	} {
		var out, errb bytes.Buffer
		if code := run(t.Context(), args, strings.NewReader(""), &out, &errb); code != 0 {
			t.Fatalf("%v: status %d\n%s%s", args, code, out.String(), errb.String())
		}
	}
	line, err := ledger.Marshal(&ledger.Record{Seq: 1, Stick: "web-0001", Case: ledger.CaseNormal, Consumed: 1, Record: 1, PID: "0000-037M",
		AMT: &ledger.AMT{UUID: "8a4f2b1c-0000-4000-8000-00163e000001"}, TPM: &ledger.TPM{EKSHA256: strings.Repeat("ab", 32), EKCertDER: bytes.Repeat([]byte{1}, 1200)}})
	if err != nil {
		t.Fatal(err)
	}
	full, err := ledger.Unmarshal(bytes.TrimSuffix(line, []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	qrLine, err := ledger.Marshal(ledger.ForQR(full, full.Sum, false))
	if err != nil {
		t.Fatal(err)
	}
	text, err := ledger.EncodeQR(qrLine)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.Context(), dsn, &store.Options{KDF: store.KDFParams{Time: 1, Memory: 256, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w := webReconciler{st: st}
	res, err := w.ImportLedger(context.Background(), "scans.txt", strings.NewReader(text+"\r\n"+text[:40]+"\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Stick != "web-0001" || res.Records != 1 || res.New != 1 || res.Damaged != 1 || !slices.Contains(res.Notes, "1 QR texts decoded, 1 unreadable") {
		t.Errorf("import of scanned QR texts: %+v", res)
	}
	// The stick comes back: its full line is the same line.
	res, err = w.ImportLedger(context.Background(), "ledger.jsonl", bytes.NewReader(line))
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 1 || res.Discrepancies != 0 {
		t.Errorf("import of the stick's ledger after its QR text: %+v", res)
	}
}
