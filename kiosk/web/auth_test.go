package web

import (
	"errors"
	"strings"
	"testing"
)

func TestHashPassword(t *testing.T) {
	h, err := HashPasswordParams("s3cret pass", testHash)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Errorf("hash %q", h)
	}
	h2, _ := HashPasswordParams("s3cret pass", testHash)
	if h == h2 {
		t.Error("two hashes of one password are equal (no salt?)")
	}
	for _, tc := range []struct {
		pw   string
		want bool
	}{{"s3cret pass", true}, {"s3cret pas", false}, {"S3cret pass", false}, {"", false}, {strings.Repeat("x", 5000), false}} {
		ok, err := VerifyPassword(h, tc.pw)
		if err != nil || ok != tc.want {
			t.Errorf("VerifyPassword(%q): %v %v, want %v", truncate(tc.pw, 12), ok, err, tc.want)
		}
	}
	if _, err := HashPassword(""); err == nil {
		t.Error("empty password hashed")
	}
	// The default parameters, once.
	d, err := HashPassword("x")
	if err != nil || !strings.HasPrefix(d, "$argon2id$v=19$m=65536,t=3,p=2$") {
		t.Errorf("default hash %q %v", d, err)
	}
}

func TestParsePHC(t *testing.T) {
	const salt, key = "c2FsdHNhbHRzYWx0c2FsdA", "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
	good := "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + key
	if _, err := parsePHC(good); err != nil {
		t.Fatalf("good: %v", err)
	}
	for _, tc := range []struct{ name, in, field string }{
		{"empty", "", "want $argon2id"},
		{"argon2i", "$argon2i$v=19$m=64,t=1,p=1$" + salt + "$" + key, "algorithm"},
		{"version", "$argon2id$v=16$m=64,t=1,p=1$" + salt + "$" + key, "version"},
		{"huge memory", "$argon2id$v=19$m=4294967295,t=1,p=1$" + salt + "$" + key, "m="},
		{"zero time", "$argon2id$v=19$m=64,t=0,p=1$" + salt + "$" + key, "t="},
		{"many passes", "$argon2id$v=19$m=64,t=1000,p=1$" + salt + "$" + key, "t="},
		{"threads", "$argon2id$v=19$m=64,t=1,p=300$" + salt + "$" + key, "p="},
		{"missing p", "$argon2id$v=19$m=64,t=1$" + salt + "$" + key, "want m, t and p"},
		{"repeated", "$argon2id$v=19$m=64,m=64,t=1,p=1$" + salt + "$" + key, "parameters"},
		{"unknown", "$argon2id$v=19$m=64,t=1,p=1,x=2$" + salt + "$" + key, "unknown parameter"},
		{"short salt", "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$" + key, "salt"},
		{"padded salt", "$argon2id$v=19$m=64,t=1,p=1$" + salt + "==$" + key, "salt"},
		{"short hash", "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$aGFzaA", "hash"},
		{"extra field", good + "$x", "want $argon2id"},
	} {
		_, err := parsePHC(tc.in)
		if !errors.Is(err, ErrHashFormat) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: %v, want ErrHashFormat naming %q", tc.name, err, tc.field)
		}
		if err != nil && strings.Contains(err.Error(), key) {
			t.Errorf("%s: the error quotes the hash", tc.name)
		}
	}
}

func TestSettingsFrom(t *testing.T) {
	type web struct {
		Listen        string `mapstructure:"listen"`
		AdminHash     string `mapstructure:"admin_password_hash"`
		APITokenHash  string `mapstructure:"api_token_sha256"`
		KeyFile       string `mapstructure:"key_file"`
		Hosts         []string
		Extra         map[string]string `mapstructure:"extra"`
		EmptyPassword string            `mapstructure:"password"`
	}
	type cfg struct {
		Version int `mapstructure:"version"`
		Store   struct {
			DSN            string `mapstructure:"dsn"`
			PassphraseFile string `mapstructure:"passphrase_file"`
		} `mapstructure:"store"`
		Kiosk struct {
			KeyForm      string `mapstructure:"key_form"`
			PSKEncoding  string `mapstructure:"psk_encoding"`
			MasterSecret string `mapstructure:"master_secret"`
		} `mapstructure:"kiosk"`
		Web    *web `mapstructure:"web"`
		hidden string
	}
	var c cfg
	c.Version = 1
	c.Store.DSN = "postgres://u:pw123456@db/x?sslmode=disable&password=qq123456"
	c.Store.PassphraseFile = "/etc/provstick/pass"
	c.Kiosk.KeyForm, c.Kiosk.PSKEncoding, c.Kiosk.MasterSecret = "pps-ascii", "text", "topsecret1"
	c.Web = &web{Listen: ":8443", AdminHash: "$argon2id$...", APITokenHash: "abcd", KeyFile: "/k", Hosts: []string{"a", "b"},
		Extra: map[string]string{"token": "tok123456", "color": "blue"}}
	c.hidden = "nope"
	got := map[string]Setting{}
	for _, s := range SettingsFrom(c) {
		got[s.Key] = s
	}
	want := map[string]string{
		"version": "1", "store.dsn": "postgres://u:REDACTED@db/x?password=REDACTED&sslmode=disable", "store.passphrase_file": "/etc/provstick/pass",
		"kiosk.key_form": "pps-ascii", "kiosk.psk_encoding": "text", "kiosk.master_secret": Redacted,
		"web.listen": ":8443", "web.admin_password_hash": Redacted, "web.api_token_sha256": Redacted, "web.key_file": "/k",
		"web.hosts": "a, b", "web.extra.token": Redacted, "web.extra.color": "blue", "web.password": "(not set)",
	}
	for k, v := range want {
		if got[k].Value != v {
			t.Errorf("%s = %q, want %q", k, got[k].Value, v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d settings, want %d: %v", len(got), len(want), got)
	}
}
