package setupbin

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"reflect"
	"testing"
)

func TestPKIRecord(t *testing.T) {
	sum := sha256.Sum256([]byte("root"))
	p := PKI{NewPassword: "P@ssw0rd-PKI", RootHash: sum[:], Suffix: "site.example", ServerFQDN: "provisionserver.site.example"}
	for _, prof := range []*Profile{ProfileAMT11Plus, ProfileAMT6to10} {
		rec, err := p.Record(prof)
		if err != nil {
			t.Fatalf("%s: %v", prof.Name, err)
		}
		var got []Var
		for _, e := range rec.Entries {
			got = append(got, e.Var)
		}
		want := []Var{VarCurrentPassword, VarNewPassword, VarManageability, VarPKIDNSSuffix, VarConfigServerFQDN, VarRemoteConfig, VarUserHashes, VarAddUserHash, VarProvisioningHalt}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: variables %v, want %v", prof.Name, got, want)
		}
		// Written by a Writer with the profile and read back.
		var buf bytes.Buffer
		w, err := NewWriter(&buf, WriterOptions{Profile: prof, Records: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddRecord(rec); err != nil {
			t.Fatalf("%s: AddRecord: %v", prof.Name, err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		rd, err := NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			t.Fatal(err)
		}
		if fs := rd.CheckProfile(prof); len(fs) != 0 {
			t.Errorf("%s: findings %v", prof.Name, fs)
		}
		back, err := rd.Records[0].PKI()
		if err != nil {
			t.Fatal(err)
		}
		wantBack := p
		wantBack.CurrentPassword, wantBack.RootName = DefaultMEBxPassword, DefaultRootName
		if !reflect.DeepEqual(back, wantBack) {
			t.Errorf("%s: read back %+v, want %+v", prof.Name, back, wantBack)
		}
	}
	// amt2-5 reads formats without SHA-256 hashes and no 2/28.
	if _, err := p.Record(ProfileAMT2to5); !errors.Is(err, ErrValue) {
		t.Errorf("amt2-5: %v, want ErrValue", err)
	}
	for _, tc := range []struct {
		name string
		f    func(*PKI)
	}{
		{"short hash", func(p *PKI) { p.RootHash = p.RootHash[:5] }},
		{"no suffix", func(p *PKI) { p.Suffix = "" }},
		{"long name", func(p *PKI) { p.RootName = "0123456789012345678901234567890123" }},
		{"weak password", func(p *PKI) { p.NewPassword = "short" }},
	} {
		q := p
		tc.f(&q)
		if _, err := q.Record(ProfileAMT11Plus); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}
