package stickimage

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// compact rewrites a golden image into a small one that Locate reads the
// same way: the partition moved to LBA 1 (LBA 3 behind a GPT), 2
// reserved sectors, each FAT cut to its first sector (the BPB says so), and
// only the first 16 data clusters kept. The
// fuzzer then spends its time on the fields, not on megabytes of zeros.
func compact(t testing.TB, img []byte) []byte {
	le := binary.LittleEndian
	const part = 1 << 20
	bs := img[part : part+512]
	bps := int(le.Uint16(bs[0x0B:]))
	spc := int(bs[0x0D])
	reserved := int(le.Uint16(bs[0x0E:]))
	nFATs := int(bs[0x10])
	fatSectors := int(le.Uint32(bs[0x24:]))
	const keepFAT, keepReserved, keepClusters = 1, 2, 16
	out := make([]byte, 512)
	copy(out[446:], img[446:512])
	if out[446+4] == 0xEE {
		// GPT: header at LBA 1, entries at LBA 2, the partition at LBA 3.
		h := append([]byte(nil), img[512:1024]...)
		entLBA := int(le.Uint64(h[72:]))
		le.PutUint64(h[72:], 2)
		e := append([]byte(nil), img[entLBA*512:entLBA*512+512]...)
		le.PutUint64(e[32:], 3)
		out = append(append(out, h...), e...)
	} else {
		le.PutUint32(out[446+8:], 1)
	}
	p := append([]byte(nil), img[part:part+keepReserved*bps]...)
	le.PutUint16(p[0x0E:], keepReserved)
	le.PutUint32(p[0x24:], keepFAT)
	for i := 0; i < nFATs; i++ {
		at := part + reserved*bps + i*fatSectors*bps
		p = append(p, img[at:at+keepFAT*bps]...)
	}
	data := part + (reserved+nFATs*fatSectors)*bps
	p = append(p, img[data:data+keepClusters*spc*bps]...)
	return append(out, p...)
}

var seedNames = []string{"mbr-first", "gpt-first", "mbr-second", "mbr-fragmented", "mbr-empty"}

// FuzzLocate feeds Locate the golden images compacted (testdata/seed-*.bin), mutated.
// Locate must never panic, and an extent it returns lies within the input.
func FuzzLocate(f *testing.F) {
	for _, n := range seedNames {
		b, err := os.ReadFile(filepath.Join("testdata", "seed-"+n+".bin"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ext, err := Locate(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		if ext.Offset < 0 || ext.Size <= 0 || ext.Offset+ext.Size > int64(len(b)) {
			t.Fatalf("extent %+v outside a %d-byte input", ext, len(b))
		}
	})
}
