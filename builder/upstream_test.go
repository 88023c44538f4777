package builder

// What go-diskfs v1.9.4 leaves wrong in a FAT32 filesystem, shown on its
// own output without the builder's patches (fat.go). The report for
// upstream, with this reproducer, is docs/upstream/go-diskfs.md. When an
// upgrade fixes one of them, this test fails and says which patch can go.

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/mbr"
)

func TestGoDiskfsUpstreamBugs(t *testing.T) {
	img := filepath.Join(t.TempDir(), "raw.img")
	const size = 80 << 20 // FAT32 needs ≥ 65,525 clusters: 64 MiB and up
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	d, err := diskfs.OpenBackend(file.New(f, false), diskfs.WithOpenMode(diskfs.ReadWrite), diskfs.WithSectorSize(diskfs.SectorSize512))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Partition(&mbr.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, Partitions: []*mbr.Partition{{
		Index: 1, Bootable: true, Type: mbr.Fat32LBA, Start: partitionStart, Size: size/512 - partitionStart,
	}}}); err != nil {
		t.Fatal(err)
	}
	fsys, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: "PROVSTICK", Reproducible: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := fsys.Mkdir("EFI"); err != nil {
		t.Fatal(err)
	}
	w, err := fsys.OpenFile("EFI/A.TXT", os.O_CREATE|os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("a\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()

	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, partitionStart*512); err != nil {
		t.Fatal(err)
	}
	// 1. BPB hidden sectors (offset 0x1C) should be the partition's start
	// LBA; some BIOSes boot from it. fixBootSector sets it.
	if h := binary.LittleEndian.Uint32(bs[0x1C:]); h != 0 {
		t.Errorf("go-diskfs now writes hidden sectors %d (was 0): fixBootSector's hidden-sectors patch may go", h)
	}
	// 2. Reproducible filesystems get volume serial 0 (offset 0x43), the
	// same for every stick; fixBootSector sets one derived from the stick.
	if s := binary.LittleEndian.Uint32(bs[0x43:]); s != 0 {
		t.Errorf("go-diskfs now writes volume serial %#x with Reproducible (was 0): check fixBootSector", s)
	}
	// 3. ".." of a directory in the root points at the root's cluster (2)
	// instead of 0, as the FAT specification asks; go-diskfs fixed this
	// in 2020 (pull request 70) and it came back. fsck.fat says so.
	out, err := exec.Command("fsck.fat", "-n", extractPartition(t, img)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Invalid '..' entry") {
		t.Errorf("fsck.fat no longer complains about '..' in go-diskfs's output (err %v): fixTree's '..' patch may go\n%s", err, out)
	}
	// 4. FSInfo's free-cluster count is left "unknown" (allowed by the
	// specification, but fsck.fat offers to set it); fixFSInfo fills it.
	if !strings.Contains(string(out), "Free cluster summary uninitialized") {
		t.Errorf("go-diskfs now fills FSInfo's free-cluster count: fixFSInfo may go\n%s", out)
	}
	t.Logf("fsck.fat on go-diskfs's own output:\n%s", out)
}
