package builder

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/provstick/provstick/initramfs/hostbased"
	"github.com/provstick/provstick/setupbin"
)

// RecipeVersion is the only recipe format version this builder reads.
const RecipeVersion = 1

// Limits of the image a recipe may ask for. FAT32 needs at least 65,525
// clusters to be FAT32 at all; with go-diskfs's cluster table (512-byte
// clusters up to 260 MiB) that is about 33 MiB, and we keep a margin so
// the partition is FAT32 for every tool that guesses from the cluster
// count (DESIGN.md §3 decision 5 keeps the default at or under 2 GB).
const (
	MinImageSize = 65 << 20
	MaxImageSize = 32 << 30
)

// ErrRecipe: the recipe is not one this builder can make. The error names
// the file and field.
var ErrRecipe = errors.New("builder: bad recipe")

// Recipe says how to lay out and boot a stick. It is decoded strictly from
// YAML (see images/*.yaml): unknown fields and a version other than
// RecipeVersion are errors, so a typo never silently falls back to a
// default.
type Recipe struct {
	Version     int        `yaml:"version"`
	Name        string     `yaml:"name"`
	Description string     `yaml:"description"`
	Size        ByteSize   `yaml:"size"`  // whole image, e.g. "256MiB"
	Table       string     `yaml:"table"` // partition table: "mbr" or "gpt" (UEFI only)
	Filesystem  Filesystem `yaml:"filesystem"`
	Boot        Boot       `yaml:"boot"`
	Kernel      Kernel     `yaml:"kernel"`
	Agent       Agent      `yaml:"agent"`
}

// Filesystem is the one partition's filesystem.
type Filesystem struct {
	Type  string `yaml:"type"`  // "fat32"
	Label string `yaml:"label"` // volume label, "PROVSTICK"
}

// Boot names the boot loaders. An image with neither loader is a
// setup.bin-only stick (no kernel needed).
type Boot struct {
	UEFI    string `yaml:"uefi"`    // "systemd-boot", "shim-grub" (Secure Boot) or "none"
	BIOS    string `yaml:"bios"`    // "syslinux" or "none"
	Cmdline string `yaml:"cmdline"` // kernel command line
	// Timeout is the boot menu wait in seconds (0: boot at once).
	Timeout int `yaml:"timeout"`
	// BIOSVideo is the screen a legacy BIOS boot (syslinux) gives the
	// kernel: "text" (VGA text, 80×25) or "1024x768" (a VESA mode the
	// kernel's real-mode setup sets, vga=0x317 on syslinux's command
	// line only; vesafb and fbcon, built into Debian's kernel, draw the
	// console at 128×48). Empty: "1024x768" when agent.qr is on (no QR
	// code fits 80×25), otherwise "text". UEFI boot is not affected (its
	// console is the firmware's framebuffer). A BIOS whose video BIOS
	// lacks the mode makes the kernel ask for one and wait 30 seconds
	// before it keeps text mode (the agent then says there is no QR
	// code); "text" avoids that wait on such machines.
	BIOSVideo string `yaml:"bios_video"`
}

// Legacy BIOS screens (Boot.BIOSVideo).
const (
	BIOSVideoText     = "text"
	BIOSVideo1024x768 = "1024x768"
)

// biosVideoModes are the kernel's vga= numbers (0x200 + the VESA mode
// number) for Boot.BIOSVideo. 0x117 (1024×768, 16-bit colour) is one of
// VBE 1.2's fixed mode numbers, which video BIOSes still list; 16-bit
// colour moves half the bytes of 0x118's 24-bit when fbcon redraws.
var biosVideoModes = map[string]string{BIOSVideo1024x768: "0x317"}

// Kernel says where the kernel comes from and which modules go into the
// initramfs (their dependencies are added from each module's .modinfo).
type Kernel struct {
	Package string   `yaml:"package"` // Debian package the kernel comes from, for the manifest
	Modules []string `yaml:"modules"` // module names, '-' and '_' equivalent
}

// Agent configures the agent on the target; it is written to the stick as
// provstick/agent.json.
//
// Host-based activation (Activate: client-control) sets an AMT admin
// password on every machine that boots the stick, so the stick must carry
// what the agent makes it from: the target has no network and no secret
// of its own. The recipe never holds that value (recipes are checked in
// and shared); AMTPasswordFrom names where the builder reads it at build
// time, "env:NAME" or "file:PATH". With AMTPassword "derived" (the
// default) the value is a site secret of at least 16 bytes and each
// machine gets its own password, hostbased.DerivePassword(secret, AMT
// UUID): one machine's password reveals no other's, and the kiosk (which
// holds the same secret) computes any machine's password from the UUID in
// its ledger line, so nothing needs to be recorded and a power cut after
// activation loses no password. "fixed" writes one password for every
// machine (AMT's password rules apply), for sites that already manage AMT
// with one admin password. Either way the stick is a key ring, as it
// already is for the MEBx passwords in setup.bin: agent.json holds the
// value base64-encoded, not encrypted (the target could not decrypt it).
type Agent struct {
	After     string `yaml:"after"`     // "poweroff", "reboot" or "wait"
	Countdown int    `yaml:"countdown"` // seconds before After
	// MEWait is how long the agent waits for the ME to answer, in
	// seconds (0: the agent's default, 30).
	MEWait int `yaml:"me_wait"`
	// QR shows the ledger line as a QR code on the technician's screen
	// once it is written (off by default), for sites where sticks do not
	// come back: a phone scans it and the kiosk imports the text
	// (provstick ledger import).
	QR bool `yaml:"qr"`
	// Activate is "none" (default) or "client-control".
	Activate string `yaml:"activate"`
	// AMTPassword is "derived" (default with activation) or "fixed".
	AMTPassword string `yaml:"amt_password"`
	// AMTPasswordFrom is "env:NAME" or "file:PATH" (relative to the
	// builder's working directory); required with activation.
	AMTPasswordFrom string `yaml:"amt_password_from"`
	// CheckKiosk is the agent's optional check that the machine reaches
	// the kiosk's hello port the way AMT finds it (off by default).
	CheckKiosk CheckKiosk `yaml:"check_kiosk"`
}

// CheckKiosk configures the agent's kiosk reachability check: a DHCPv4
// lease on a wired interface, provisionserver.<domain> resolved with the
// lease's DNS server, a TCP connection to the kiosk's hello port closed
// without a hello (the kiosk counts it as a probe). The domain is Domain
// if set, else the ME's DNS suffix, else DHCP option 15 — AMT's own order
// (specs/amt-psk.md §1). Enabling it packs the NIC drivers (Modules) into
// the initramfs; a stick without it boots exactly as before.
type CheckKiosk struct {
	Enabled bool `yaml:"enabled"`
	// Timeout bounds the whole check in seconds (0: 20); a machine with
	// no cable costs this much.
	Timeout int `yaml:"timeout"`
	// Port is the kiosk's hello port (0: 9971).
	Port int `yaml:"port"`
	// Domain overrides the ME's suffix and DHCP option 15 (optional).
	Domain string `yaml:"domain"`
	// Modules are the NIC driver modules packed (with their
	// dependencies); empty: DefaultNICModules. A name the kernel has
	// built in (modules.builtin) is left out.
	Modules []string `yaml:"modules"`
}

// DefaultNICModules are the wired NIC drivers packed for check_kiosk:
// e1000e is the Intel vPro/AMT NIC (I217, I218, I219), igb Intel's server
// and some desktop NICs (I210/I211), r8169 and its PHY driver realtek the
// common Realtek NICs, e1000 and virtio_net QEMU's. About 1 MiB
// compressed with their dependencies (libphy, dca, i2c-algo-bit,
// net_failover).
var DefaultNICModules = []string{"e1000e", "igb", "r8169", "realtek", "e1000", "virtio_net"}

// NICModules is the module list check_kiosk adds (nil when disabled).
func (a *Agent) NICModules() []string {
	if !a.CheckKiosk.Enabled {
		return nil
	}
	if len(a.CheckKiosk.Modules) > 0 {
		return a.CheckKiosk.Modules
	}
	return DefaultNICModules
}

// Agent activation settings.
const (
	ActivateNone          = "none"
	ActivateClientControl = "client-control"
	AMTPasswordDerived    = "derived"
	AMTPasswordFixed      = "fixed"
)

var passwordFromRE = regexp.MustCompile(`^(env:[A-Za-z_][A-Za-z0-9_]*|file:[^\x00]+)$`)

// ActivationSecret reads what AMTPasswordFrom names and checks it: a site
// secret of at least 16 bytes (derived) or a password AMT accepts
// (fixed). A file's trailing newline is not part of the value. Errors
// name the field and the source, never the value.
func (a *Agent) ActivationSecret() ([]byte, error) {
	bad := func(why string) error {
		return fmt.Errorf("field agent.amt_password_from: %s: %s: %w", a.AMTPasswordFrom, why, ErrRecipe)
	}
	kind, src, _ := strings.Cut(a.AMTPasswordFrom, ":")
	var v []byte
	switch kind {
	case "env":
		s, ok := os.LookupEnv(src)
		if !ok || s == "" {
			return nil, bad("the environment variable is not set")
		}
		v = []byte(s)
	case "file":
		f, err := os.Open(src)
		if err != nil {
			return nil, bad(fmt.Sprintf("reading the file: %v", errors.Unwrap(err)))
		}
		defer f.Close()
		if v, err = io.ReadAll(io.LimitReader(f, 4097)); err != nil {
			return nil, bad("reading the file failed")
		}
		if len(v) > 4096 {
			return nil, bad("the file is larger than 4 KiB")
		}
		v = bytes.TrimRight(v, "\r\n")
	default:
		return nil, bad(`want "env:NAME" or "file:PATH"`)
	}
	if a.AMTPassword == AMTPasswordFixed {
		if err := setupbin.ValidateMEBxPassword(setupbin.Password(v)); err != nil {
			return nil, bad(fmt.Sprintf("not a password AMT accepts: %v", err))
		}
	} else if len(v) < hostbased.MinSiteSecret {
		return nil, bad(fmt.Sprintf("the site secret has %d bytes, want at least %d (e.g. head -c 32 /dev/urandom | base64)", len(v), hostbased.MinSiteSecret))
	}
	return v, nil
}

// Boot loader and setting names.
const (
	LoaderNone        = "none"
	LoaderSystemdBoot = "systemd-boot"
	LoaderSyslinux    = "syslinux"
	LoaderShimGrub    = "shim-grub" // Secure Boot: Debian's signed shim → grub → kernel
)

// Partition tables.
const (
	TableMBR = "mbr"
	TableGPT = "gpt" // protective MBR + GPT; UEFI boot only
)

// DefaultKernelPackage is fetched when a recipe names no kernel.package.
const DefaultKernelPackage = "linux-image-amd64"

// Bootable reports whether the recipe needs a kernel and an initramfs.
func (r *Recipe) Bootable() bool {
	return r.Boot.UEFI != LoaderNone || r.Boot.BIOS != LoaderNone
}

// ByteSize is a size in bytes written with an optional unit (KiB, MiB,
// GiB, or K, M, G as powers of two).
type ByteSize int64

var sizeRE = regexp.MustCompile(`^\s*([0-9]+)\s*([KMG]i?B?)?\s*$`)

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *ByteSize) UnmarshalText(b []byte) error {
	m := sizeRE.FindSubmatch(b)
	if m == nil {
		return fmt.Errorf("size %q: want a number with an optional unit (KiB, MiB, GiB)", b)
	}
	n, err := strconv.ParseInt(string(m[1]), 10, 64)
	if err != nil || n > 1<<44 {
		return fmt.Errorf("size %q: out of range", b)
	}
	switch strings.ToUpper(string(m[2]))[:min(1, len(m[2]))] {
	case "K":
		n <<= 10
	case "M":
		n <<= 20
	case "G":
		n <<= 30
	}
	*s = ByteSize(n)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (s ByteSize) MarshalText() ([]byte, error) {
	switch {
	case s != 0 && s%(1<<30) == 0:
		return []byte(strconv.FormatInt(int64(s)>>30, 10) + "GiB"), nil
	case s != 0 && s%(1<<20) == 0:
		return []byte(strconv.FormatInt(int64(s)>>20, 10) + "MiB"), nil
	}
	return []byte(strconv.FormatInt(int64(s), 10)), nil
}

// ParseRecipe decodes one YAML recipe strictly and checks it. name is
// used in error messages (the file name).
//
// The builder decodes recipes itself, with the YAML library viper uses,
// rather than through viper: a recipe is a data file that also the tests,
// the benchmark and (later) the kiosk's factory line load, and viper would
// fold key case, merge environment variables and ignore unknown keys.
func ParseRecipe(r io.Reader, name string) (*Recipe, error) {
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading recipe %s: %w", name, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var rec Recipe
	if err := dec.Decode(&rec); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("recipe %s: empty: %w", name, ErrRecipe)
		}
		return nil, fmt.Errorf("recipe %s: %s: %w", name, yamlMessage(err), ErrRecipe)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("recipe %s: more than one YAML document: %w", name, ErrRecipe)
	}
	rec.setDefaults()
	if err := rec.Validate(); err != nil {
		return nil, fmt.Errorf("recipe %s: %w", name, err)
	}
	return &rec, nil
}

// LoadRecipe reads and checks the recipe file name.
func LoadRecipe(name string) (*Recipe, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("reading recipe: %w", err)
	}
	defer f.Close()
	return ParseRecipe(f, name)
}

func (r *Recipe) setDefaults() {
	if r.Table == "" {
		r.Table = "mbr"
	}
	if r.Filesystem.Type == "" {
		r.Filesystem.Type = "fat32"
	}
	if r.Filesystem.Label == "" {
		r.Filesystem.Label = "PROVSTICK"
	}
	if r.Boot.UEFI == "" {
		r.Boot.UEFI = LoaderNone
	}
	if r.Boot.BIOS == "" {
		r.Boot.BIOS = LoaderNone
	}
	if r.Boot.BIOSVideo == "" && r.Boot.BIOS == LoaderSyslinux {
		r.Boot.BIOSVideo = BIOSVideoText
		if r.Agent.QR {
			r.Boot.BIOSVideo = BIOSVideo1024x768
		}
	}
	if len(r.Kernel.Modules) == 0 {
		r.Kernel.Modules = nil
	}
	if len(r.Agent.CheckKiosk.Modules) == 0 {
		r.Agent.CheckKiosk.Modules = nil
	}
	if r.Agent.After == "" {
		r.Agent.After = "poweroff"
	}
	if r.Agent.Activate == "" {
		r.Agent.Activate = ActivateNone
	}
	if r.Agent.Activate == ActivateClientControl && r.Agent.AMTPassword == "" {
		r.Agent.AMTPassword = AMTPasswordDerived
	}
}

// hasVGA: the command line sets a video mode itself.
func hasVGA(cmdline string) bool {
	for _, w := range strings.Fields(cmdline) {
		if strings.HasPrefix(w, "vga=") {
			return true
		}
	}
	return false
}

var labelRE = regexp.MustCompile(`^[A-Z0-9_-]{1,11}$`)

// Validate checks a recipe built in code (ParseRecipe calls it).
func (r *Recipe) Validate() error {
	bad := func(field string, v any, why string) error {
		return fmt.Errorf("field %s: %v: %s: %w", field, v, why, ErrRecipe)
	}
	switch {
	case r.Version != RecipeVersion:
		return bad("version", r.Version, fmt.Sprintf("this builder reads version %d", RecipeVersion))
	case r.Name == "":
		return bad("name", `""`, "required")
	case r.Size < MinImageSize || r.Size > MaxImageSize:
		return bad("size", r.Size, fmt.Sprintf("want %d MiB to %d GiB", MinImageSize>>20, MaxImageSize>>30))
	case r.Size%(1<<20) != 0:
		return bad("size", r.Size, "want a whole number of MiB")
	case r.Table != TableMBR && r.Table != TableGPT:
		return bad("table", r.Table, `want "mbr" or "gpt"`)
	case r.Table == TableGPT && r.Boot.BIOS != LoaderNone:
		return bad("boot.bios", r.Boot.BIOS, `a GPT stick boots UEFI only (legacy BIOS boot needs table: mbr); set boot.bios: none`)
	case r.Filesystem.Type != "fat32":
		return bad("filesystem.type", r.Filesystem.Type, `only "fat32" is supported`)
	case !labelRE.MatchString(r.Filesystem.Label):
		return bad("filesystem.label", r.Filesystem.Label, "want 1 to 11 of A-Z 0-9 _ -")
	case r.Boot.UEFI != LoaderNone && r.Boot.UEFI != LoaderSystemdBoot && r.Boot.UEFI != LoaderShimGrub:
		return bad("boot.uefi", r.Boot.UEFI, `want "systemd-boot", "shim-grub" or "none"`)
	case r.Boot.BIOS != LoaderNone && r.Boot.BIOS != LoaderSyslinux:
		return bad("boot.bios", r.Boot.BIOS, `want "syslinux" or "none"`)
	case r.Boot.BIOSVideo != "" && r.Boot.BIOSVideo != BIOSVideoText && biosVideoModes[r.Boot.BIOSVideo] == "":
		return bad("boot.bios_video", strconv.Quote(r.Boot.BIOSVideo), `want "text" or "1024x768"`)
	case biosVideoModes[r.Boot.BIOSVideo] != "" && r.Boot.BIOS != LoaderSyslinux:
		return bad("boot.bios_video", r.Boot.BIOSVideo, "applies only with boot.bios: syslinux")
	case biosVideoModes[r.Boot.BIOSVideo] != "" && hasVGA(r.Boot.Cmdline):
		return bad("boot.cmdline", strconv.Quote(r.Boot.Cmdline), "has vga= and boot.bios_video sets one; set boot.bios_video: text to keep the command line's")
	case r.Boot.Timeout < 0 || r.Boot.Timeout > 600:
		return bad("boot.timeout", r.Boot.Timeout, "want 0 to 600 seconds")
	case strings.ContainsAny(r.Boot.Cmdline, "\n\r\x00"):
		return bad("boot.cmdline", strconv.Quote(r.Boot.Cmdline), "one line")
	case len(r.Boot.Cmdline) > 1024:
		return bad("boot.cmdline", len(r.Boot.Cmdline), "longer than 1024 bytes")
	case r.Bootable() && len(r.Kernel.Modules) == 0:
		return bad("kernel.modules", "[]", "a bootable stick needs the USB and FAT modules")
	case r.Agent.After != "poweroff" && r.Agent.After != "reboot" && r.Agent.After != "wait":
		return bad("agent.after", r.Agent.After, `want "poweroff", "reboot" or "wait"`)
	case r.Agent.Countdown < 0 || r.Agent.Countdown > 3600:
		return bad("agent.countdown", r.Agent.Countdown, "want 0 to 3600 seconds")
	case r.Agent.MEWait < 0 || r.Agent.MEWait > 600:
		return bad("agent.me_wait", r.Agent.MEWait, "want 1 to 600 seconds, or 0 for the agent's default (30)")
	case r.Agent.Activate != ActivateNone && r.Agent.Activate != ActivateClientControl:
		return bad("agent.activate", strconv.Quote(r.Agent.Activate), `want "none" or "client-control"`)
	case r.Agent.Activate == ActivateNone && (r.Agent.AMTPassword != "" || r.Agent.AMTPasswordFrom != ""):
		return bad("agent.amt_password", strconv.Quote(r.Agent.AMTPassword+r.Agent.AMTPasswordFrom), "amt_password and amt_password_from apply only with activate: client-control")
	case r.Agent.Activate == ActivateClientControl && !r.Bootable():
		return bad("agent.activate", r.Agent.Activate, "activation is done by the agent, which needs a bootable stick (boot.uefi or boot.bios)")
	case r.Agent.Activate == ActivateClientControl && r.Agent.AMTPassword != AMTPasswordDerived && r.Agent.AMTPassword != AMTPasswordFixed:
		return bad("agent.amt_password", strconv.Quote(r.Agent.AMTPassword), `want "derived" (per machine from a site secret) or "fixed"`)
	case r.Agent.Activate == ActivateClientControl && r.Agent.AMTPasswordFrom == "":
		return bad("agent.amt_password_from", `""`, `required with activate: client-control: "env:NAME" or "file:PATH" (the value itself never goes in a recipe)`)
	case r.Agent.Activate == ActivateClientControl && !passwordFromRE.MatchString(r.Agent.AMTPasswordFrom):
		return bad("agent.amt_password_from", strconv.Quote(r.Agent.AMTPasswordFrom), `want "env:NAME" or "file:PATH" (the value itself never goes in a recipe)`)
	}
	for i, m := range r.Kernel.Modules {
		if len(m) > 64 || !moduleNameRE.MatchString(m) {
			return bad(fmt.Sprintf("kernel.modules[%d]", i), strconv.Quote(m), "not a module name")
		}
	}
	return r.Agent.CheckKiosk.validate(r.Bootable(), bad)
}

func (k *CheckKiosk) validate(bootable bool, bad func(string, any, string) error) error {
	if !k.Enabled {
		if k.Timeout != 0 || k.Port != 0 || k.Domain != "" || len(k.Modules) > 0 {
			return bad("agent.check_kiosk.enabled", false, "timeout, port, domain and modules apply only with enabled: true")
		}
		return nil
	}
	switch {
	case !bootable:
		return bad("agent.check_kiosk.enabled", true, "the check is done by the agent, which needs a bootable stick (boot.uefi or boot.bios)")
	case k.Timeout < 0 || k.Timeout > 300:
		return bad("agent.check_kiosk.timeout", k.Timeout, "want 1 to 300 seconds, or 0 for the default (20)")
	case k.Port < 0 || k.Port > 65535:
		return bad("agent.check_kiosk.port", k.Port, "want 1 to 65535, or 0 for the default (9971)")
	case k.Domain != "" && (len(k.Domain) > 254 || !domainRE.MatchString(k.Domain)):
		return bad("agent.check_kiosk.domain", strconv.Quote(k.Domain), "not a DNS domain name (e.g. line7.factory.example)")
	}
	for i, m := range k.Modules {
		if !moduleNameRE.MatchString(m) {
			return bad(fmt.Sprintf("agent.check_kiosk.modules[%d]", i), strconv.Quote(m), "not a module name")
		}
	}
	return nil
}

// domainRE is a DNS name: labels of letters, digits and inner hyphens,
// at most 253 characters with an optional final dot.
var domainRE = regexp.MustCompile(`^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$`)

var yamlTypeRE = regexp.MustCompile(` in type builder\.\w+`)

// yamlMessage makes a YAML decoding error one line without Go type names:
// "line 3: field sise not found".
func yamlMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:")
	msg = yamlTypeRE.ReplaceAllString(msg, "")
	msg = strings.TrimPrefix(msg, "yaml: ")
	return strings.Join(strings.Fields(msg), " ")
}

var moduleNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`) // and at most 64 long (see debNameRE)
