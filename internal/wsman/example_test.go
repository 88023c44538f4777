package wsman_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/provstick/provstick/internal/wsman"
)

// A device answering Get AMT_GeneralSettings and SetMEBxPassword, and a
// client calling both.
func Example() {
	const realm = "Digest:0123456789ABCDEF0123456789ABCDEF"
	admin := wsman.DigestHA1("admin", realm, "Admin-Pw1!")
	srv := wsman.NewServer(wsman.ServerOptions{
		Realm: realm,
		Credentials: func(_ context.Context, user, r string) (wsman.HA1, bool) {
			return admin, user == "admin" && r == realm
		},
	})
	srv.HandleGet(wsman.URIGeneralSettings, func(context.Context, *wsman.Request) (any, error) {
		return wsman.GeneralSettings{DigestRealm: realm, HostName: "pc-1"}, nil
	})
	srv.HandleMethod(wsman.URISetupAndConfigurationService, "SetMEBxPassword",
		func(_ context.Context, r *wsman.Request) (any, wsman.Status, error) {
			var in wsman.SetMEBxPasswordInput
			if err := r.Decode(&in); err != nil {
				return nil, 0, err
			}
			if len(in.Password) < 8 {
				return nil, wsman.StatusInvalidPassword, nil
			}
			return nil, wsman.StatusSuccess, nil
		})
	ts := httptest.NewServer(srv)
	defer ts.Close()

	c, err := wsman.NewClient(wsman.Options{Endpoint: ts.URL + "/wsman", Password: "Admin-Pw1!"})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	g, err := c.GetGeneralSettings(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println(g.HostName, g.DigestRealm == c.Realm())
	err = c.SetMEBxPassword(ctx, "short")
	fmt.Println(err)
	// Output:
	// pc-1 true
	// wsman: AMT_SetupAndConfigurationService.SetMEBxPassword returned 2054 (INVALID_PASSWORD)
}
