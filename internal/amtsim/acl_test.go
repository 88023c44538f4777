package amtsim

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/provstick/provstick/internal/wsman"
)

// TestUserACL: AddUserAclEntryEx with AMT's return codes and limits, then
// EnumerateUserAclEntries and GetUserAclEntryEx read the entries back
// (spec §6 step 8); PartialUnprovision removes them.
func TestUserACL(t *testing.T) {
	n := startNet(t, inSetup(t), nil)
	ctx := t.Context()
	c := n.httpClient(t, "admin", testMEBx)
	realm := n.srv.Realm()
	user := func(name string) wsman.AddUserAclEntryExInput {
		return wsman.AddUserAclEntryExInput{DigestUsername: name, DigestPassword: wsman.DigestPassword(name, realm, "Us3r-Pass!"),
			AccessPermission: uint32(wsman.AccessNetwork), Realms: []uint32{uint32(wsman.RealmRedirection), uint32(wsman.RealmRemoteControl)}}
	}
	for _, tc := range []struct {
		name string
		mod  func(*wsman.AddUserAclEntryExInput)
		want wsman.Status
	}{
		{"empty name", func(in *wsman.AddUserAclEntryExInput) { in.DigestUsername = "" }, wsman.StatusInvalidName},
		{"long name", func(in *wsman.AddUserAclEntryExInput) { in.DigestUsername = "abcdefghijklmnopq" }, wsman.StatusInvalidName},
		{"colon", func(in *wsman.AddUserAclEntryExInput) { in.DigestUsername = "a:b" }, wsman.StatusInvalidName},
		{"bad digest", func(in *wsman.AddUserAclEntryExInput) { in.DigestPassword = "bm90IDE2IGJ5dGVz" }, wsman.StatusInvalidPassword},
		{"access 3", func(in *wsman.AddUserAclEntryExInput) { in.AccessPermission = 3 }, wsman.StatusInvalidParameter},
		{"no realm", func(in *wsman.AddUserAclEntryExInput) { in.Realms = nil }, wsman.StatusInvalidRealm},
		{"reserved realm", func(in *wsman.AddUserAclEntryExInput) { in.Realms = []uint32{1} }, wsman.StatusInvalidRealm},
		{"admin's name", func(in *wsman.AddUserAclEntryExInput) { in.DigestUsername = "admin" }, wsman.StatusDuplicate},
		{"kerberos", func(in *wsman.AddUserAclEntryExInput) { in.DigestUsername, in.KerberosUserSid = "", "AQUAAAAAAAUVAAAA" }, wsman.StatusNotPermitted},
	} {
		in := user("u")
		tc.mod(&in)
		if _, err := c.AddUserAclEntryEx(ctx, in); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %d", tc.name, err, tc.want)
		}
	}
	if hs, err := c.EnumerateUserAclEntries(ctx); err != nil || len(hs) != 0 {
		t.Fatalf("no users yet: %v, %v", hs, err)
	}
	var handles []uint32
	for i := range MaxUsers {
		h, err := c.AddUserAclEntryEx(ctx, user(fmt.Sprintf("user%02d", i)))
		if err != nil {
			t.Fatalf("user %d: %v", i, err)
		}
		handles = append(handles, h)
	}
	if _, err := c.AddUserAclEntryEx(ctx, user("one-too-many")); !errors.Is(err, wsman.StatusMaxLimitReached) {
		t.Errorf("user %d: %v, want 23", MaxUsers+1, err)
	}
	if _, err := c.AddUserAclEntryEx(ctx, user("user03")); !errors.Is(err, wsman.StatusDuplicate) {
		t.Errorf("duplicate: %v, want 2058", err)
	}
	hs, err := c.EnumerateUserAclEntries(ctx)
	if err != nil || !slices.Equal(hs, handles) {
		t.Fatalf("EnumerateUserAclEntries = %v, %v; want %v", hs, err, handles)
	}
	e, err := c.GetUserAclEntryEx(ctx, handles[5])
	if err != nil || e.DigestUsername != "user05" || e.AccessPermission != uint32(wsman.AccessNetwork) || !slices.Equal(e.Realms, []uint32{2, 5}) {
		t.Errorf("GetUserAclEntryEx = %+v, %v", e, err)
	}
	if _, err := c.GetUserAclEntryEx(ctx, 9999); !errors.Is(err, wsman.StatusInvalidHandle) {
		t.Errorf("unknown handle: %v, want 2053", err)
	}
	if _, err := n.httpClient(t, "user07", "Us3r-Pass!").GetGeneralSettings(ctx); err != nil {
		t.Errorf("user logs in: %v", err)
	}
	if err := c.CommitChanges(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.PartialUnprovision(ctx); err != nil {
		t.Fatal(err)
	}
	if hs, err := c.EnumerateUserAclEntries(ctx); err != nil || len(hs) != 0 {
		t.Errorf("after PartialUnprovision: %v, %v", hs, err)
	}
}

func TestRealmNames(t *testing.T) {
	for _, name := range wsman.RealmNames() {
		r, err := wsman.ParseRealm(name)
		if err != nil || r.String() != name || !r.Valid() {
			t.Errorf("%s: %v %v", name, r, err)
		}
	}
	if r, err := wsman.ParseRealm("5"); err != nil || r != wsman.RealmRemoteControl {
		t.Errorf("by number: %v %v", r, err)
	}
	if _, err := wsman.ParseRealm("nope"); err == nil {
		t.Error("unknown realm accepted")
	}
}
