package builder

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// gptRecipe is the default recipe with a GPT and UEFI boot only.
func gptRecipe(t testing.TB) *Recipe {
	t.Helper()
	r := *defaultRecipe(t)
	r.Name = "default-gpt"
	r.Table = TableGPT
	r.Boot.BIOS = LoaderNone
	return &r
}

func TestGPTImage(t *testing.T) {
	r := gptRecipe(t)
	img, res := buildTestImage(t, r, "gpt-0001", 10)
	dump := mustRun(t, "sfdisk", "--dump", img)
	for _, want := range []string{
		`(?m)^label: gpt$`,
		`stick\.img1 : start=\s*2048, size=\s*\d+, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid=[0-9A-F-]{36}, name="PROVSTICK"`,
	} {
		if !regexp.MustCompile(want).MatchString(dump) {
			t.Errorf("sfdisk --dump: no match for %s:\n%s", want, dump)
		}
	}
	// sfdisk --verify checks both GPT headers and the protective MBR.
	if out := mustRun(t, "sfdisk", "--verify", img); !strings.Contains(out, "No errors detected") {
		t.Errorf("sfdisk --verify:\n%s", out)
	}
	fsck := mustRun(t, "fsck.fat", "-n", "-v", extractPartition(t, img))
	if !strings.Contains(fsck, "2048 hidden sectors") {
		t.Errorf("fsck.fat: hidden sectors not 2048:\n%s", fsck)
	}
	if dir := mustRun(t, "mdir", "-i", img+"@@1M", "::"); !regexp.MustCompile(`(?m)^SETUP    BIN`).MatchString(dir) {
		t.Errorf("mdir: no SETUP.BIN:\n%s", dir)
	}
	// Reproducible: the GUIDs come from the stick id.
	again, res2 := buildTestImage(t, r, "gpt-0001", 10)
	if res.SHA256 != res2.SHA256 || fileSHA(t, again) != res.SHA256 {
		t.Errorf("two builds of the same GPT stick differ: %s, %s", res.SHA256, res2.SHA256)
	}
	other, res3 := buildTestImage(t, r, "gpt-0002", 10)
	if res3.SHA256 == res.SHA256 {
		t.Errorf("two sticks have the same image")
	}
	if d := mustRun(t, "sfdisk", "--dump", other); d == dump {
		t.Errorf("two sticks have the same GPT")
	}
}

func TestGPTRejectsLegacyBoot(t *testing.T) {
	r := *defaultRecipe(t)
	r.Table = TableGPT
	err := r.Validate()
	if !errors.Is(err, ErrRecipe) || !strings.Contains(err.Error(), "boot.bios") || !strings.Contains(err.Error(), "UEFI only") {
		t.Errorf("gpt + syslinux: %v", err)
	}
}

func TestVMBootGPT(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM under TCG; skipped with -short")
	}
	img, _ := buildTestImage(t, gptRecipe(t), "vm-gpt-0001", 5)
	took, _ := bootToMarker(t, img, true, 180*time.Second)
	t.Logf("GPT stick: boot to %q under TCG (OVMF): %.1f s", readyMarker, took.Seconds())
}

func TestPIDsFile(t *testing.T) {
	r, err := LoadRecipe("../images/setup-only.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	sb := testSetupBin(t, 3)
	img := filepath.Join(t.TempDir(), "s.img")
	pids := []string{"AAAA0001", "AAAA0002", "AAAA0003"}
	if _, err := b.Build(t.Context(), img, Stick{ID: "p-1", SetupBin: sb, PIDs: pids}); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Format string   `json:"format"`
		PIDs   []string `json:"pids"`
	}
	out := mustRun(t, "mtype", "-i", img+"@@1M", "::"+PIDsPath)
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("pids.json: %v\n%s", err, out)
	}
	if got.Format != PIDsFormat || strings.Join(got.PIDs, ",") != strings.Join(pids, ",") {
		t.Errorf("pids.json %+v, want %s %q", got, PIDsFormat, pids)
	}
	man := mustRun(t, "mtype", "-i", img+"@@1M", "::"+ManifestPath)
	if !strings.Contains(man, PIDsPath) {
		t.Errorf("manifest does not list %s:\n%s", PIDsPath, man)
	}
	// One PID per record, or nothing is written.
	bad := filepath.Join(t.TempDir(), "bad.img")
	if _, err := b.Build(t.Context(), bad, Stick{ID: "p-2", SetupBin: sb, PIDs: pids[:2]}); err == nil || !strings.Contains(err.Error(), "2 PIDs for 3") {
		t.Errorf("2 PIDs for 3 records: %v", err)
	}
	if _, err := os.Stat(bad); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed build left %s", bad)
	}
}
