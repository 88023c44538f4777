package store

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestWebQueries(t *testing.T) {
	forEngines(t, func(t *testing.T, dsn string) {
		ctx := t.Context()
		s := openT(t, dsn, pass("pw"))
		if _, err := s.Generate(ctx, GenerateSpec{Count: 4, Profile: "amt6-10"}); err != nil {
			t.Fatal(err)
		}
		_, es, err := s.AllocateStick(ctx, StickSpec{Label: "line_1%", Recipe: "default", Count: 3, Profile: "amt6-10"})
		if err != nil {
			t.Fatal(err)
		}
		uuids := []string{"939b524b-13d4-1d18-e487-1c697a6b7a2b", "939b524b-13d4-1d18-e487-1c697a6b7a2c"}
		for i, u := range uuids {
			if err := s.Consume(ctx, es[i].PID, Machine{UUID: u, DMISerial: "SER-" + string(rune('A'+i))}, "ledger"); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.HelloSeen(ctx, es[0].PID); err != nil {
			t.Fatal(err)
		}
		if err := s.Provisioned(ctx, es[0].PID); err != nil {
			t.Fatal(err)
		}
		if err := s.Fail(ctx, es[1].PID, "device unreachable"); err != nil {
			t.Fatal(err)
		}
		if err := s.RecordHellos(ctx, []HelloRecord{{At: time.Now(), Peer: "127.0.0.1:1", UUID: uuids[0], PID: es[0].PID.String(), Version: 2, Retry: 3, Outcome: "queued"}}); err != nil {
			t.Fatal(err)
		}

		all, err := s.WebMachines(ctx, WebMachineQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 2 {
			t.Fatalf("WebMachines: %d rows, want 2: %+v", len(all), all)
		}
		for _, tc := range []struct {
			name string
			q    WebMachineQuery
			want []string // UUIDs
		}{
			{"uuid part", WebMachineQuery{Search: "7A2B"}, uuids[:1]},
			{"serial", WebMachineQuery{Search: "ser-b"}, uuids[1:]},
			{"pid display", WebMachineQuery{Search: es[1].PID.Display()}, uuids[1:]},
			{"pid lower", WebMachineQuery{Search: strings.ToLower(es[0].PID.String()[2:])}, uuids[:1]},
			{"state", WebMachineQuery{State: StateFailed}, uuids[1:]},
			{"wildcard is literal", WebMachineQuery{Search: "%"}, nil},
			{"underscore is literal", WebMachineQuery{Search: "_"}, nil},
			{"limit", WebMachineQuery{Limit: 1}, nil},
		} {
			got, err := s.WebMachines(ctx, tc.q)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if tc.name == "limit" {
				if len(got) != 1 {
					t.Errorf("limit: %d rows", len(got))
				}
				continue
			}
			var us []string
			for _, m := range got {
				us = append(us, m.UUID)
			}
			if strings.Join(us, ",") != strings.Join(tc.want, ",") {
				t.Errorf("%s: got %v, want %v", tc.name, us, tc.want)
			}
		}
		if m := all[0]; m.UUID != uuids[1] || m.State != StateFailed || m.Reason != "device unreachable" || m.Stick != "line_1%" || m.Record != 2 {
			t.Errorf("newest machine: %+v", m)
		}

		m, items, err := s.WebTimeline(ctx, strings.ToUpper(uuids[0]), 0)
		if err != nil {
			t.Fatal(err)
		}
		if m.UUID != uuids[0] || m.PID != es[0].PID.String() {
			t.Errorf("timeline machine: %+v", m)
		}
		var steps []string
		for _, it := range items {
			if it.Hello {
				steps = append(steps, "hello:"+it.Reason)
				continue
			}
			steps = append(steps, string(it.To))
		}
		want := []string{"free", "allocated", "consumed", "hello-seen", "provisioned", "hello:queued"}
		if strings.Join(steps, ",") != strings.Join(want, ",") {
			t.Errorf("timeline: got %v, want %v", steps, want)
		}
		if _, _, err := s.WebTimeline(ctx, "00000000-0000-0000-0000-000000000000", 0); !errors.Is(err, ErrNotFound) {
			t.Errorf("timeline of unknown machine: %v, want ErrNotFound", err)
		}

		sticks, err := s.WebSticks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(sticks) != 1 || sticks[0].Label != "line_1%" || sticks[0].Records != 3 || sticks[0].Unconsumed != 1 {
			t.Errorf("WebSticks: %+v", sticks)
		}

		recent, err := s.WebRecentEvents(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(recent) != 2 || recent[0].To != StateFailed || recent[0].ID <= recent[1].ID || recent[0].Machine != uuids[1] {
			t.Errorf("WebRecentEvents: %+v", recent)
		}

		var evs []WebEvent
		if err := s.WebAuditEvents(ctx, WebAuditQuery{}, func(ev WebEvent) error { evs = append(evs, ev); return nil }); err != nil {
			t.Fatal(err)
		}
		// 4 generated + 3 allocated + 2 consumed + hello-seen + provisioned + failed.
		if len(evs) != 12 {
			t.Errorf("WebAuditEvents: %d events, want 12", len(evs))
		}
		var page []WebEvent
		if err := s.WebAuditEvents(ctx, WebAuditQuery{AfterID: evs[9].ID, Limit: 1}, func(ev WebEvent) error { page = append(page, ev); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(page) != 1 || page[0].ID != evs[10].ID {
			t.Errorf("WebAuditEvents page: %+v", page)
		}
		stop := errors.New("stop")
		if err := s.WebAuditEvents(ctx, WebAuditQuery{Since: time.Now().Add(-time.Hour), Until: time.Now().Add(time.Hour)}, func(WebEvent) error { return stop }); err != stop {
			t.Errorf("WebAuditEvents with failing fn: %v, want the fn's error", err)
		}

		tot, err := s.WebTotals(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tot.Machines != 2 || tot.Sticks != 1 || tot.Hellos != 1 || tot.Events != 12 {
			t.Errorf("WebTotals: %+v", tot)
		}
	})
}

// TestWebQueriesLocked: the console's queries read no secrets, so they
// work on a store opened without a key.
func TestWebQueriesLocked(t *testing.T) {
	dsn := engines[0].dsn(t)
	s := openT(t, dsn, pass("pw"))
	if _, err := s.Generate(t.Context(), GenerateSpec{Count: 1, Profile: "amt6-10"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	l := openT(t, dsn, nil)
	if _, err := l.WebMachines(t.Context(), WebMachineQuery{Search: "x"}); err != nil {
		t.Error(err)
	}
	if _, err := l.WebTotals(t.Context()); err != nil {
		t.Error(err)
	}
	if _, err := l.WebRecentEvents(t.Context(), 10); err != nil {
		t.Error(err)
	}
}
