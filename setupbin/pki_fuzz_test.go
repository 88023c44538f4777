package setupbin

import (
	"bytes"
	"crypto/sha256"
	"reflect"
	"testing"
)

// FuzzPKIRecord reads every record of arbitrary input as a PKI record;
// what reads back is rebuilt with PKI.Record and must read back the same.
// Seeds: testdata/ and a PKI file made here.
func FuzzPKIRecord(f *testing.F) {
	addTestdataSeeds(f)
	sum := sha256.Sum256([]byte("seed root"))
	p := PKI{NewPassword: "Seed-Passw0rd!", RootHash: sum[:], Suffix: "site.example", ServerFQDN: "provisionserver.site.example"}
	rec, err := p.Record(ProfileAMT11Plus)
	if err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, WriterOptions{Profile: ProfileAMT11Plus, Records: 2})
	if err != nil {
		f.Fatal(err)
	}
	for range 2 {
		if err := w.AddRecord(rec); err != nil {
			f.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for _, rec := range r.Records {
			got, err := rec.PKI()
			if err != nil {
				continue
			}
			again, err := got.Record(nil)
			if err != nil {
				continue // read back, but not a record we would write (e.g. a weak password)
			}
			// Record fills the defaults in.
			if got.RootName == "" {
				got.RootName = DefaultRootName
			}
			if got.CurrentPassword == "" {
				got.CurrentPassword = DefaultMEBxPassword
			}
			back, err := again.PKI()
			if err != nil {
				t.Fatalf("record %d: rebuilt record does not read back: %v", rec.Index, err)
			}
			if !reflect.DeepEqual(back, got) {
				t.Fatalf("record %d: %+v, rebuilt %+v", rec.Index, got, back)
			}
		}
	})
}
