package store

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/provstick/provstick/setupbin"
)

// TestProvisionTables covers what the kiosk adds: EntryOf, Note,
// progress with a sealed secret, the hello log and the CA, on both engines.
func TestProvisionTables(t *testing.T) {
	forEngines(t, func(t *testing.T, dsn string) {
		ctx := t.Context()
		s := openT(t, dsn, pass("pw"))
		if _, err := s.Generate(ctx, GenerateSpec{Count: 2, Profile: "amt6-10"}); err != nil {
			t.Fatal(err)
		}
		_, es, err := s.AllocateStick(ctx, StickSpec{Label: "s1", Recipe: "default", Count: 2, Profile: "amt6-10"})
		if err != nil {
			t.Fatal(err)
		}
		pid := es[0].PID
		const uuid = "939b524b-13d4-1d18-e487-1c697a6b7a2b"
		if err := s.Consume(ctx, pid, Machine{UUID: uuid}, "ledger"); err != nil {
			t.Fatal(err)
		}
		l, err := s.EntryOf(ctx, pid)
		if err != nil {
			t.Fatal(err)
		}
		if l.PPS != es[0].PPS || l.NewPassword != es[0].NewPassword || l.State != StateConsumed || l.Machine != uuid || l.Stick != "s1" || l.Record != 1 {
			t.Errorf("EntryOf: got %+v machine %q", l.Entry, l.Machine)
		}
		if _, err := s.EntryOf(ctx, es[1].PID); err != nil {
			t.Errorf("EntryOf allocated: %v", err)
		}
		if _, err := s.LoadProgress(ctx, pid); !errors.Is(err, ErrNotFound) {
			t.Errorf("LoadProgress before save: %v, want ErrNotFound", err)
		}
		p := Progress{Step: 3, Public: []byte(`{"a":1}`), Secret: []byte("admin-pw"), Attempts: 1}
		if err := s.SaveProgress(ctx, pid, p, "step 3: key"); err != nil {
			t.Fatal(err)
		}
		got, err := s.LoadProgress(ctx, pid)
		if err != nil {
			t.Fatal(err)
		}
		if got.Step != 3 || !bytes.Equal(got.Public, p.Public) || !bytes.Equal(got.Secret, p.Secret) || got.Attempts != 1 {
			t.Errorf("LoadProgress: got %+v", got)
		}
		var raw []byte
		if err := s.db.QueryRowContext(ctx, "SELECT secret FROM provisioning").Scan(&raw); err != nil || bytes.Contains(raw, []byte("admin-pw")) {
			t.Errorf("secret stored in clear (err %v)", err)
		}
		if err := s.Note(ctx, pid, "hello folded"); err != nil {
			t.Fatal(err)
		}
		h, err := s.History(ctx, pid)
		if err != nil {
			t.Fatal(err)
		}
		last := h[len(h)-1]
		if last.Reason != "hello folded" || last.From != StateConsumed || last.To != StateConsumed || last.Machine != uuid {
			t.Errorf("last event %+v", last)
		}
		if err := s.Note(ctx, setupbin.PID([]byte("ZZZZZZZZ")), "x"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Note on unknown PID: %v", err)
		}
		checkInvariants(t, s)

		now := time.Now()
		if err := s.RecordHellos(ctx, []HelloRecord{
			{At: now, Peer: "127.0.0.1:1", UUID: uuid, PID: pid.String(), Version: 2, Retry: 0, Outcome: "queued"},
			{At: now, Peer: "127.0.0.1:2", UUID: uuid, PID: pid.String(), Version: 2, Retry: 1, Outcome: "folded"},
			{At: now, Peer: "127.0.0.1:3", Outcome: "malformed"},
		}); err != nil {
			t.Fatal(err)
		}
		hs, err := s.Hellos(ctx, pid.String(), 0)
		if err != nil || len(hs) != 2 || hs[1].Retry != 1 || hs[1].Outcome != "folded" {
			t.Errorf("Hellos: %+v, %v", hs, err)
		}
		if n, err := s.CountHellos(ctx); n != 3 || err != nil {
			t.Errorf("CountHellos: %d, %v", n, err)
		}

		if _, _, err := s.LoadCA(ctx); !errors.Is(err, ErrNotFound) {
			t.Errorf("LoadCA before save: %v", err)
		}
		c1, k1, err := s.SaveCA(ctx, []byte("cert1"), []byte("key1"))
		if err != nil || string(c1) != "cert1" || string(k1) != "key1" {
			t.Fatalf("SaveCA: %q %q %v", c1, k1, err)
		}
		c2, k2, err := s.SaveCA(ctx, []byte("cert2"), []byte("key2"))
		if err != nil || string(c2) != "cert1" || string(k2) != "key1" {
			t.Errorf("second SaveCA replaced the first: %q %q %v", c2, k2, err)
		}
		s.Close()
		locked := openT(t, dsn, nil)
		if _, err := locked.EntryOf(ctx, pid); !errors.Is(err, ErrLocked) {
			t.Errorf("EntryOf without key: %v", err)
		}
	})
}
