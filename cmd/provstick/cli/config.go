package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// ConfigVersion is the only configuration file version this build reads.
const ConfigVersion = 1

// Config is the whole provstick configuration, decoded strictly: an unknown
// key or version is an error naming it. Subcommands read their part from it.
// The example in configs/provstick.yaml is loaded by a test.
type Config struct {
	Version int         `mapstructure:"version"`
	Log     LogConfig   `mapstructure:"log"`
	Store   StoreConfig `mapstructure:"store"`
	Kiosk   KioskConfig `mapstructure:"kiosk"`
}

// LogConfig selects the slog handler.
type LogConfig struct {
	Level  string `mapstructure:"level"`  // debug, info, warn, error
	Format string `mapstructure:"format"` // text or json
}

// StoreConfig says where the pool lives (issue "kiosk/store").
type StoreConfig struct {
	// DSN is a file path for the embedded SQLite store, or a postgres:// URL.
	DSN string `mapstructure:"dsn"`
	// PassphraseFile holds the passphrase that unlocks the secrets at rest.
	PassphraseFile string `mapstructure:"passphrase_file"`
	// KeyFile holds a raw key instead of a passphrase.
	KeyFile string `mapstructure:"key_file"`
	// Station names this machine in the events it writes.
	Station string `mapstructure:"station"`
	// KDFTime and KDFMemoryKiB are the argon2id cost of a new passphrase
	// (first use, store rekey); stored with the key ring, so changing them
	// never locks an existing store.
	KDFTime      int `mapstructure:"kdf_time"`
	KDFMemoryKiB int `mapstructure:"kdf_memory_kib"`
}

// KioskConfig configures provstick kiosk serve (issue 10).
type KioskConfig struct {
	// HelloListen is the TCP address of the hello listener.
	HelloListen         string        `mapstructure:"hello_listen"`
	HelloReadTimeout    time.Duration `mapstructure:"hello_read_timeout"`
	MaxHelloConnections int           `mapstructure:"max_hello_connections"`
	// DNSListen is the UDP and TCP address of the DNS server; "" = off.
	DNSListen   string   `mapstructure:"dns_listen"`
	DNSSuffixes []string `mapstructure:"dns_suffixes"`
	SCSFQDN     string   `mapstructure:"scs_fqdn"`
	// Address is the kiosk's address in DNS answers.
	Address string `mapstructure:"address"`
	// Provisioning.
	Concurrency int           `mapstructure:"concurrency"`
	StepTimeout time.Duration `mapstructure:"step_timeout"`
	VerifyDelay time.Duration `mapstructure:"verify_delay"`
	AMTTLSPort  int           `mapstructure:"amt_tls_port"`
	KeyForm     string        `mapstructure:"key_form"`
	PSKEncoding string        `mapstructure:"psk_encoding"`
	// Users are extra digest users the kiosk adds to every machine it
	// provisions (spec §6 step 8; none: the step is skipped), each
	// {name, access: local|network|any, realms: [names, e.g. redirection,
	// remote-control, hardware-asset]}. Each gets a generated password per
	// machine, stored encrypted with the machine's progress.
	Users []KioskUserConfig `mapstructure:"users"`
	// NextPSK turns on spec §6 step 10: each machine is given the next
	// PID/PPS from the pool with SetTLSPSK (encoding per psk_encoding,
	// UNCONFIRMED), so that after a partial unprovision it says hello with
	// that PID and is provisioned again.
	NextPSK bool `mapstructure:"next_psk"`
	// Web is the web console (kiosk/web).
	Web KioskWebConfig `mapstructure:"web"`
	// PKI is the PKI path (admin control mode, specs/pki.md).
	PKI KioskPKIConfig `mapstructure:"pki"`
}

// KioskUserConfig is one extra digest user (AMT_AuthorizationService.
// AddUserAclEntryEx).
type KioskUserConfig struct {
	// Name is the digest user name: 1 to 16 printable ASCII characters,
	// not "admin".
	Name string `mapstructure:"name"`
	// Access is where the user may connect from: local, network or any.
	Access string `mapstructure:"access"`
	// Realms are the AMT realms the user may use, by name: redirection,
	// pt-administration, hardware-asset, remote-control, storage,
	// event-manager, storage-admin, agent-presence-local,
	// agent-presence-remote, circuit-breaker, network-time, general-info,
	// firmware-update, eit, local-un, endpoint-access-control,
	// endpoint-access-control-admin, event-log-reader, audit-log, acl,
	// local-system.
	Realms []string `mapstructure:"realms"`
}

// KioskPKIConfig configures PKI provisioning: version-3 hellos from
// machines whose stick added the site root hash (provstick setupbin pki).
type KioskPKIConfig struct {
	// Dir is the site PKI directory (provstick kiosk ca init); the kiosk
	// reads provisioning.pem and provisioning-key.age. "" turns PKI off.
	Dir string `mapstructure:"dir"`
	// PassphraseFile holds the passphrase of provisioning-key.age; ""
	// → $PROVSTICK_PKI_PASSPHRASE.
	PassphraseFile string `mapstructure:"passphrase_file"`
	// Secrets are the secrets files provstick setupbin pki wrote for this
	// site's sticks: the MEBx password their records set, which the
	// kiosk logs in with until AdminSetup. Every record of every file
	// must set the same password (setupbin pki --new-password): a PKI
	// hello names no record, so the kiosk cannot tell which one a machine
	// took.
	Secrets []string `mapstructure:"secrets"`
}

// KioskWebConfig configures the kiosk's web console: HTTPS with a
// certificate from the kiosk CA, a local admin account, /api/v1 and
// /metrics.
type KioskWebConfig struct {
	// Listen is the console's TCP address; "" turns it off.
	Listen string `mapstructure:"listen"`
	// AdminUser and AdminPasswordHash (argon2id, from "provstick kiosk
	// hash-password"); no hash: a password for this run only is printed.
	AdminUser         string `mapstructure:"admin_user"`
	AdminPasswordHash string `mapstructure:"admin_password_hash"`
	// APITokenSHA256 is the hex SHA-256 of a bearer token for /api/v1.
	APITokenSHA256 string `mapstructure:"api_token_sha256"`
	// Hosts the certificate names (default localhost and the host name).
	Hosts          []string      `mapstructure:"hosts"`
	PlainHTTP      bool          `mapstructure:"plain_http"`
	SessionTTL     time.Duration `mapstructure:"session_ttl"`
	MaxLedgerBytes int64         `mapstructure:"max_ledger_bytes"`
	PublicMetrics  bool          `mapstructure:"public_metrics"`
}

// defaults lists every key with its default; viper only maps PROVSTICK_*
// environment variables onto keys it knows, so every key must be here.
var defaults = map[string]any{
	"version":               ConfigVersion,
	"log.level":             "info",
	"log.format":            "text",
	"store.dsn":             "provstick.db",
	"store.passphrase_file": "",
	"store.key_file":        "",
	"store.station":         "",
	"store.kdf_time":        3,
	"store.kdf_memory_kib":  64 * 1024,

	"kiosk.hello_listen":          ":9971",
	"kiosk.hello_read_timeout":    "5s",
	"kiosk.max_hello_connections": 256,
	"kiosk.dns_listen":            "",
	"kiosk.dns_suffixes":          []string{},
	"kiosk.scs_fqdn":              "",
	"kiosk.address":               "",
	"kiosk.concurrency":           16,
	"kiosk.step_timeout":          "60s",
	"kiosk.verify_delay":          "5s",
	"kiosk.amt_tls_port":          16993,
	"kiosk.key_form":              "pps-ascii",
	"kiosk.psk_encoding":          "text",
	"kiosk.users":                 []map[string]any{},
	"kiosk.next_psk":              false,

	"kiosk.web.listen":              ":8443",
	"kiosk.web.admin_user":          "admin",
	"kiosk.web.admin_password_hash": "",
	"kiosk.web.api_token_sha256":    "",
	"kiosk.web.hosts":               []string{},
	"kiosk.web.plain_http":          false,
	"kiosk.web.session_ttl":         "8h",
	"kiosk.web.max_ledger_bytes":    16 << 20,
	"kiosk.web.public_metrics":      false,

	"kiosk.pki.dir":             "",
	"kiosk.pki.passphrase_file": "",
	"kiosk.pki.secrets":         []string{},
}

// flagKeys maps persistent flags to configuration keys.
var flagKeys = map[string]string{
	"log-level":  "log.level",
	"log-format": "log.format",
}

// loadConfig resolves the configuration with flags over environment over
// file over defaults, and returns the file it read ("" when none).
func loadConfig(cmd *cobra.Command, explicit string) (*Config, string, error) {
	v := viper.New()
	for k, d := range defaults {
		v.SetDefault(k, d)
	}
	v.SetEnvPrefix("PROVSTICK")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	var bindErr error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if key, ok := flagKeys[f.Name]; ok {
			bindErr = errors.Join(bindErr, v.BindPFlag(key, f))
		}
	})
	if bindErr != nil {
		return nil, "", fmt.Errorf("binding flags: %w", bindErr)
	}

	file := explicit
	if file == "" {
		file = findConfigFile()
	}
	if file != "" {
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return nil, "", fmt.Errorf("reading configuration %s: %w", file, err)
		}
	}
	var cfg Config
	if err := v.UnmarshalExact(&cfg); err != nil {
		return nil, "", fmt.Errorf("configuration %s: %w", orDefaults(file), err)
	}
	if cfg.Version != ConfigVersion {
		return nil, "", fmt.Errorf("configuration %s: field version: unsupported value %d (this build reads version %d)", orDefaults(file), cfg.Version, ConfigVersion)
	}
	if file != "" {
		// Relative paths written in a configuration file are relative to
		// that file ("a store next to the config"); from flags and the
		// environment they are relative to the working directory.
		for key, p := range map[string]*string{"store.dsn": &cfg.Store.DSN, "store.passphrase_file": &cfg.Store.PassphraseFile, "store.key_file": &cfg.Store.KeyFile,
			"kiosk.pki.dir": &cfg.Kiosk.PKI.Dir, "kiosk.pki.passphrase_file": &cfg.Kiosk.PKI.PassphraseFile} {
			if *p != "" && !filepath.IsAbs(*p) && !strings.Contains(*p, "://") && v.InConfig(key) && !isFromEnv(key) {
				*p = filepath.Join(filepath.Dir(file), *p)
			}
		}
		if v.InConfig("kiosk.pki.secrets") && !isFromEnv("kiosk.pki.secrets") {
			for i, p := range cfg.Kiosk.PKI.Secrets {
				if p != "" && !filepath.IsAbs(p) {
					cfg.Kiosk.PKI.Secrets[i] = filepath.Join(filepath.Dir(file), p)
				}
			}
		}
	}
	return &cfg, file, nil
}

func orDefaults(file string) string {
	if file == "" {
		return "(defaults and environment)"
	}
	return file
}

// findConfigFile returns ./provstick.yaml or
// $XDG_CONFIG_HOME/provstick/config.yaml (~/.config when unset), the first
// that exists, or "".
func findConfigFile() string {
	cands := []string{"provstick.yaml"}
	if dir, err := os.UserConfigDir(); err == nil {
		cands = append(cands, filepath.Join(dir, "provstick", "config.yaml"))
	}
	for _, c := range cands {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return c
		}
	}
	return ""
}

func newLogger(w interface{ Write([]byte) (int, error) }, lc LogConfig) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(lc.Level)); err != nil {
		return nil, fmt.Errorf("configuration field log.level: invalid value %q (want debug, info, warn or error)", lc.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch lc.Format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("configuration field log.format: invalid value %q (want text or json)", lc.Format)
	}
}

// isFromEnv reports whether the PROVSTICK_* variable for key is set and
// not empty, as viper counts it (it then wins over the file, and its paths
// are the caller's).
func isFromEnv(key string) bool {
	return os.Getenv("PROVSTICK_"+strings.ToUpper(strings.ReplaceAll(key, ".", "_"))) != ""
}
