package setupbintest_test

import (
	"bytes"
	"testing"

	"github.com/provstick/provstick/setupbin"
	"github.com/provstick/provstick/setupbin/setupbintest"
)

func TestBuild(t *testing.T) {
	b, psks := setupbintest.File(t, setupbintest.Options{Records: 10, Consumed: 3, Seed: 5})
	b2, _ := setupbintest.File(t, setupbintest.Options{Records: 10, Consumed: 3, Seed: 5})
	if !bytes.Equal(b, b2) {
		t.Error("same options, different bytes")
	}
	r, err := setupbin.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if r.HasErrors() || r.Header.Consumed != 3 || len(r.Records) != 10 {
		t.Fatalf("findings %v, consumed %d, %d records", r.Findings, r.Header.Consumed, len(r.Records))
	}
	p, err := r.Records[3].PSK()
	if err != nil || p != psks[3] {
		t.Errorf("record 3: %v", err)
	}
}
