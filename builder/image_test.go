package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/provstick/provstick/setupbin/setupbintest"
)

func defaultRecipe(t testing.TB) *Recipe {
	t.Helper()
	r, err := LoadRecipe("../images/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testSetupBin(t testing.TB, records int) []byte {
	t.Helper()
	sb, _ := setupbintest.File(t, setupbintest.Options{Records: records, Seed: 7})
	return sb
}

func buildTestImage(t testing.TB, r *Recipe, id string, records int) (string, *Result) {
	t.Helper()
	b, err := New(r, &Options{KernelDir: kernelDir(t), Agent: testAgent(t)})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "stick.img")
	res, err := b.Build(t.Context(), out, Stick{ID: id, Batch: "test", SetupBin: testSetupBin(t, records)})
	if err != nil {
		t.Fatal(err)
	}
	return out, res
}

func fileSHA(t testing.TB, name string) string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func extractPartition(t testing.TB, img string) string {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "part.img")
	g, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := io.Copy(g, io.NewSectionReader(f, partitionStart*sectorSize, st.Size()-partitionStart*sectorSize)); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestImageStructure reads a built image back with independent tools:
// sfdisk (table), fsck.fat (filesystem), mtools (files, setup.bin's
// cluster chain and place in the root).
func TestImageStructure(t *testing.T) {
	for _, recipe := range []string{"default", "setup-only"} {
		t.Run(recipe, func(t *testing.T) {
			r, err := LoadRecipe("../images/" + recipe + ".yaml")
			if err != nil {
				t.Fatal(err)
			}
			img, res := buildTestImage(t, r, "line3-0001", 10)
			if got := fileSHA(t, img); got != res.SHA256 {
				t.Errorf("Result.SHA256 %s, file hashes to %s", res.SHA256, got)
			}

			// The partition table.
			dump := mustRun(t, "sfdisk", "--dump", img)
			want := regexp.MustCompile(`stick\.img1 : start=\s*2048, size=\s*` + itoa(int(r.Size)/512-2048) + `, type=c, bootable`)
			if !want.MatchString(dump) {
				t.Errorf("sfdisk --dump: no FAT32 LBA bootable partition at 1 MiB:\n%s", dump)
			}

			// The filesystem: fsck.fat -n exits non-zero on any error and
			// prints what it would fix.
			part := extractPartition(t, img)
			fsck := mustRun(t, "fsck.fat", "-n", "-v", part)
			for _, bad := range []string{"differences", "uninitialized", "Free cluster summary wrong", "Dirty bit", "should be"} {
				if strings.Contains(fsck, bad) {
					t.Errorf("fsck.fat -n reports %q:\n%s", bad, fsck)
				}
			}
			if !strings.Contains(fsck, "2048 hidden sectors") {
				t.Errorf("fsck.fat: hidden sectors not 2048:\n%s", fsck)
			}

			mimg := img + "@@1M"
			info := mustRun(t, "minfo", "-i", mimg, "::")
			if !strings.Contains(info, "disk type=\"FAT32   \"") || !strings.Contains(info, `disk label="PROVSTICK  "`) {
				t.Errorf("minfo: not a FAT32 volume labelled PROVSTICK:\n%s", info)
			}
			serial, _ := stickSerial("line3-0001")
			if !strings.Contains(info, "serial number: "+strings.ToUpper(hex8(serial))) {
				t.Errorf("minfo: volume serial is not %08X (from the stick id):\n%s", serial, info)
			}

			// setup.bin is the first entry of the root after the volume
			// label, and its clusters are one run starting at the first
			// data cluster after the root directory's.
			root := mustRun(t, "mdir", "-a", "-i", mimg, "::")
			var names []string
			for _, l := range strings.Split(root, "\n") {
				if f := strings.Fields(l); len(f) > 1 && !strings.HasPrefix(l, " ") && f[0] != "Directory" {
					names = append(names, f[0])
				}
			}
			if len(names) == 0 || names[0] != "SETUP" {
				t.Errorf("first root entry is %v, want SETUP.BIN:\n%s", names, root)
			}
			chain := mustRun(t, "mshowfat", "-i", mimg, "::SETUP.BIN")
			n := (len(testSetupBin(t, 10)) + 511) / 512
			if want := "<3-" + itoa(2+n) + ">"; !strings.Contains(chain, want) || strings.Count(chain, "<") != 1 {
				t.Errorf("mshowfat SETUP.BIN: %q, want one run %s", chain, want)
			}
			got := filepath.Join(t.TempDir(), "setup.bin")
			mustRun(t, "mcopy", "-i", mimg, "::SETUP.BIN", got)
			if b, _ := os.ReadFile(got); string(b) != string(testSetupBin(t, 10)) {
				t.Error("setup.bin read back with mcopy differs")
			}

			// Our own reading of the FAT agrees.
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fat, err := openFAT32(readOnly{f}, partitionStart*sectorSize)
			if err != nil {
				t.Fatal(err)
			}
			ents, err := fat.readDir(fat.rootCluster)
			if err != nil {
				t.Fatal(err)
			}
			var first *dirEntry
			for i := range ents {
				if ents[i].Attr&attrVolumeID == 0 {
					first = &ents[i]
					break
				}
			}
			if first == nil || first.Name != "SETUP   BIN" {
				t.Fatalf("first root file entry %+v, want SETUP   BIN", first)
			}
			cl, err := fat.chain(first.Cluster)
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i < len(cl); i++ {
				if cl[i] != cl[i-1]+1 {
					t.Fatalf("setup.bin clusters not contiguous: %v", cl)
				}
			}

			// The manifest: on the stick, matching the result, no secrets.
			mf := filepath.Join(t.TempDir(), "manifest.json")
			mustRun(t, "mcopy", "-i", mimg, "::"+ManifestPath, mf)
			var m Manifest
			b, _ := os.ReadFile(mf)
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if m.Stick != "line3-0001" || m.Recipe != recipe || m.SetupBin.Records != 10 || m.SetupBin.FirstRecord != 1 || m.SetupBin.LastRecord != 10 || m.Format != ManifestFormat {
				t.Errorf("manifest %+v", m)
			}
			if r.Bootable() {
				for _, p := range []string{"EFI/BOOT/BOOTX64.EFI", KernelPath, InitrdPath, "syslinux/syslinux.cfg"} {
					if m.Files[p] == "" {
						t.Errorf("manifest lists no %s", p)
					}
					mustRun(t, "mcopy", "-n", "-i", mimg, "::"+p, filepath.Join(t.TempDir(), "x"))
				}
				mustRun(t, "mdir", "-a", "-i", mimg, "::syslinux/ldlinux.sys")
			}
		})
	}
}

type readOnly struct{ *os.File }

func (readOnly) WriteAt([]byte, int64) (int, error) { return 0, os.ErrPermission }

func itoa(n int) string { return jsonNum(n) }

func jsonNum(n int) string { b, _ := json.Marshal(n); return string(b) }

func hex8(v uint32) string {
	return hex.EncodeToString([]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// TestImageSizes: every size fsck.fat and mtools accept (go-diskfs's FAT
// size is one sector short for some sizes, see fat32SafeSectors).
func TestImageSizes(t *testing.T) {
	r, err := LoadRecipe("../images/setup-only.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, mib := range []int{65, 66, 100, 129, 255, 256, 257, 261, 300, 600} {
		t.Run(itoa(mib)+"MiB", func(t *testing.T) {
			rr := *r
			rr.Size = ByteSize(mib) << 20
			img, _ := buildTestImage(t, &rr, "size-test", 3)
			mustRun(t, "fsck.fat", "-n", extractPartition(t, img))
			mustRun(t, "mcopy", "-i", img+"@@1M", "::SETUP.BIN", filepath.Join(t.TempDir(), "s"))
		})
	}
}

// TestReproducible builds the same stick twice (in different directories,
// at different times) and compares the bytes; a different stick id must
// give a different image.
func TestReproducible(t *testing.T) {
	r := defaultRecipe(t)
	a, ra := buildTestImage(t, r, "line3-0007", 20)
	b, rb := buildTestImage(t, r, "line3-0007", 20)
	if ra.SHA256 != rb.SHA256 || fileSHA(t, a) != fileSHA(t, b) {
		t.Fatalf("two builds differ: %s vs %s", ra.SHA256, rb.SHA256)
	}
	_, rc := buildTestImage(t, r, "line3-0008", 20)
	if rc.SHA256 == ra.SHA256 {
		t.Error("two sticks with different ids have the same image")
	}
	t.Logf("image sha256 %s", ra.SHA256)
}
