package kiosk

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/kiosk/provision"
	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/setupbin"
)

// TestNextPSKAfterPartialUnprovision: with steps 8 and 10 on, two machines
// are provisioned from their hellos; machine 0 is then partially
// unprovisioned, keeps its admin ACL and the PSK step 10 gave it, says
// hello with the new PID, and the kiosk provisions it again through the
// normal path with that entry (and gives it yet another one).
func TestNextPSKAfterPartialUnprovision(t *testing.T) {
	users := []provision.User{{Name: "helpdesk", Access: wsman.AccessNetwork, Realms: []wsman.Realm{wsman.RealmRedirection, wsman.RealmHardwareAsset}}}
	b := newBench(t, benchOptions{n: 2, consume: true, logLevel: slog.LevelWarn, extraFree: 4, nextPSK: true, users: users})
	b.waitState(all(2), store.StateProvisioned, 60*time.Second)
	ctx := context.Background()
	m := b.fleet.Machines[0]
	st := m.Net.Device().State()
	next, err := setupbin.ParsePID(st.PID)
	if err != nil || next == b.entries[0].PID {
		t.Fatalf("device PID after step 10: %q, %v", st.PID, err)
	}
	if len(st.Net.Users) != 1 || st.Net.Users[0].Username != "helpdesk" {
		t.Errorf("device users %+v", st.Net.Users)
	}
	if l, err := b.s.EntryOf(ctx, next); err != nil || l.State != store.StateConsumed || l.Machine != b.uuids[0] {
		t.Fatalf("next entry %+v, %v", l, err)
	}
	admin, err := provision.AdminPassword(ctx, b.s, b.entries[0].PID)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	c, err := wsman.NewClient(wsman.Options{Endpoint: "https://" + m.TLSAddr + "/wsman", Password: wsman.Secret(admin.Reveal()),
		HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.PartialUnprovision(ctx); err != nil {
		t.Fatal(err)
	}
	// The machine's hellos now carry next; the kiosk takes it from there.
	deadline := time.Now().Add(60 * time.Second)
	for {
		s, err := b.s.State(ctx, next)
		if err != nil {
			t.Fatal(err)
		}
		if s == store.StateProvisioned {
			break
		}
		if time.Now().After(deadline) {
			h, _ := b.s.History(ctx, next)
			t.Fatalf("next entry %s after 60 s; history %+v", s, h)
		}
		time.Sleep(50 * time.Millisecond)
	}
	hs, err := b.s.Hellos(ctx, next.String(), 0)
	if err != nil || len(hs) == 0 {
		t.Errorf("no hello logged for the next PID: %v", err)
	}
	h, err := b.s.History(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	var story []string
	for _, ev := range h {
		story = append(story, string(ev.From)+"→"+string(ev.To)+" "+ev.Reason)
	}
	text := strings.Join(story, "\n")
	for _, want := range []string{"free→allocated drawn as the next PID/PPS of " + b.entries[0].PID.String(), "allocated→consumed given to machine",
		"committed holding this PID/PPS", "consumed→hello-seen hello from", "step 8: users added: helpdesk", "hello-seen→provisioned verified over TLS"} {
		if !strings.Contains(text, want) {
			t.Errorf("history of the next entry lacks %q:\n%s", want, text)
		}
	}
	if st2 := m.Net.Device().State(); st2.PID == next.String() || st2.PID == b.entries[0].PID.String() {
		t.Errorf("device PID after the second provisioning: %s (want a third entry)", st2.PID)
	}
}
