package store

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/provstick/provstick/setupbin"
)

// TestGiveNextPSK: the next PID/PPS is drawn and recorded as consumed by
// the machine in one transaction, asked again (a resumed run, or two
// kiosks at once) it is the same entry, another machine cannot have it,
// and a hello from it takes the normal path (consumed → hello-seen).
func TestGiveNextPSK(t *testing.T) {
	forEngines(t, func(t *testing.T, dsn string) {
		ctx := t.Context()
		s := openT(t, dsn, pass("pw"))
		if _, err := s.Generate(ctx, GenerateSpec{Count: 3, Profile: "amt6-10"}); err != nil {
			t.Fatal(err)
		}
		_, es, err := s.AllocateStick(ctx, StickSpec{Label: "s1", Recipe: "default", Count: 1, Profile: "amt6-10"})
		if err != nil {
			t.Fatal(err)
		}
		from := es[0].PID
		const uuid = "939b524b-13d4-1d18-e487-1c697a6b7a2b"
		if err := s.Consume(ctx, from, Machine{UUID: uuid}, "ledger"); err != nil {
			t.Fatal(err)
		}
		spec := NextPSKSpec{From: from, Machine: strings.ToUpper(uuid), Password: "Gen3rated-Pw!"}
		// Concurrent asks for the same source: one draw, the same entry.
		var wg sync.WaitGroup
		got := make([]Entry, 4)
		gave := make([]bool, 4)
		errs := make([]error, 4)
		for i := range got {
			wg.Go(func() { got[i], gave[i], errs[i] = s.GiveNextPSK(ctx, spec) })
		}
		wg.Wait()
		draws := 0
		for i := range got {
			if errs[i] != nil {
				t.Fatalf("give %d: %v", i, errs[i])
			}
			if gave[i] {
				draws++
			}
			if got[i].PID != got[0].PID || got[i].PPS != got[0].PPS {
				t.Errorf("give %d: %s, give 0: %s", i, got[i].PID, got[0].PID)
			}
		}
		if draws != 1 {
			t.Errorf("%d draws, want 1", draws)
		}
		next := got[0]
		if next.PID == from || next.NewPassword != spec.Password || next.CurrentPassword != spec.Password || next.State != StateConsumed {
			t.Errorf("next entry %+v", next)
		}
		l, err := s.EntryOf(ctx, next.PID)
		if err != nil || l.State != StateConsumed || l.Machine != uuid || l.Stick != NextPSKLabel(from) || l.NewPassword != spec.Password || l.PPS != next.PPS {
			t.Errorf("EntryOf = %+v, %v", l, err)
		}
		h, err := s.History(ctx, next.PID)
		if err != nil || len(h) != 3 || h[1].To != StateAllocated || h[2].To != StateConsumed || h[2].Machine != uuid ||
			!strings.Contains(h[2].Reason, "SetTLSPSK") {
			t.Errorf("history %+v, %v", h, err)
		}
		if h, _ := s.History(ctx, from); !strings.Contains(h[len(h)-1].Reason, "next PID/PPS "+next.PID.String()) {
			t.Errorf("source history %+v", h)
		}
		for _, ev := range append(h, Event{}) {
			if strings.Contains(ev.Reason, string(spec.Password)) {
				t.Errorf("password in the history: %q", ev.Reason)
			}
		}
		// Another machine cannot have it.
		other := spec
		other.Machine = "00000000-0000-0000-0000-000000000001"
		if _, _, err := s.GiveNextPSK(ctx, other); !errors.Is(err, ErrIllegalTransition) {
			t.Errorf("other machine: %v", err)
		}
		// Counters and the low-stick list.
		st, err := s.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[State]int64{StateFree: 1, StateConsumed: 2}
		for _, c := range st.Counts {
			if c.N != want[c.State] {
				t.Errorf("count %s = %d, want %d", c.State, c.N, want[c.State])
			}
		}
		for _, k := range st.Low {
			if k.Recipe == NextPSKRecipe {
				t.Errorf("next-psk row listed as a low stick: %+v", k)
			}
		}
		// The machine says hello with the new PID: the normal path.
		if err := s.HelloSeen(ctx, next.PID); err != nil {
			t.Errorf("consumed → hello-seen: %v", err)
		}
		// Pool exhausted: the last free entry goes, then none.
		_, es2, err := s.AllocateStick(ctx, StickSpec{Label: "s2", Recipe: "default", Count: 1, Profile: "amt6-10"})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.GiveNextPSK(ctx, NextPSKSpec{From: es2[0].PID, Machine: uuid, Password: "x"}); !errors.Is(err, ErrPoolExhausted) {
			t.Errorf("exhausted: %v", err)
		}
		if _, _, err := s.GiveNextPSK(ctx, NextPSKSpec{From: setupbin.PID{}, Machine: uuid, Password: "x"}); !errors.Is(err, ErrInvalid) {
			t.Errorf("invalid PID: %v", err)
		}
	})
}
