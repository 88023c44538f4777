// Package stickimage finds setup.bin inside a stick image (or a whole
// stick device) the way a BIOS does: the first partition of the MBR (or of
// the GPT behind a protective MBR), its FAT32 root directory, and the
// SETUP.BIN entry with its clusters, which must be contiguous because old
// BIOSes read the file raw (specs/setupbin.md §1).
//
// It reads only what it needs, bounds every count it reads from the image,
// and names the field and value when the image is not what it should be.
// Callers hand the returned extent to the setupbin package (for example
// setupbin.Consume on an io.SectionReader-like view) to act on the records
// in place, as the firmware would.
package stickimage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrLayout is wrapped by every error about an image that is not a stick
// with setup.bin where the BIOS looks for it.
var ErrLayout = errors.New("stick image layout")

// Extent is where setup.bin's bytes are in the image.
type Extent struct {
	// PartitionOffset is the first partition's start in bytes.
	PartitionOffset int64
	// Offset is the byte offset of setup.bin's first byte in the image.
	Offset int64
	// Size is the file's size in bytes.
	Size int64
	// First reports whether SETUP.BIN is the first file entry of the root
	// directory (volume label and long-name entries aside), as the
	// strictest BIOSes want.
	First bool
}

const (
	sector       = 512
	maxRootScan  = 64      // root directory clusters looked at
	maxDirBytes  = 1 << 20 // bytes of root directory read in all
	maxChainWalk = 1 << 22 // clusters followed in setup.bin's chain
)

func layoutErr(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrLayout)
}

// Locate finds setup.bin in the image r of size bytes.
func Locate(r io.ReaderAt, size int64) (Extent, error) {
	var ext Extent
	off, err := firstPartition(r, size)
	if err != nil {
		return ext, err
	}
	ext.PartitionOffset = off
	fs, err := readBPB(r, off, size)
	if err != nil {
		return ext, err
	}
	ent, first, err := fs.findRoot(r, "SETUP   BIN")
	if err != nil {
		return ext, err
	}
	ext.First = first
	ext.Size = int64(ent.size)
	if ent.size == 0 {
		return ext, layoutErr("setup.bin is empty (directory entry size 0)")
	}
	// The file's clusters must follow one another.
	need := (int64(ent.size) + fs.clusterBytes - 1) / fs.clusterBytes
	c := ent.cluster
	for i := int64(1); i < need; i++ {
		if i > maxChainWalk {
			return ext, layoutErr("setup.bin has more than %d clusters", maxChainWalk)
		}
		next, err := fs.next(r, c)
		if err != nil {
			return ext, err
		}
		if next != c+1 {
			return ext, layoutErr("setup.bin is not contiguous: cluster %d is followed by %d (a BIOS reading it raw gets other bytes)", c, next)
		}
		c = next
	}
	ext.Offset = fs.clusterOffset(ent.cluster)
	if ext.Offset+ext.Size > size {
		return ext, layoutErr("setup.bin (%d bytes at %d) runs past the image's end (%d bytes)", ext.Size, ext.Offset, size)
	}
	return ext, nil
}

// firstPartition returns the byte offset of the first partition: the MBR's
// first entry, or the GPT's first entry when the MBR is protective.
func firstPartition(r io.ReaderAt, size int64) (int64, error) {
	mbr := make([]byte, sector)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return 0, fmt.Errorf("reading the MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return 0, layoutErr("MBR signature at 510 is %#02x%02x, want 0x55aa (not a partitioned stick image)", mbr[510], mbr[511])
	}
	le := binary.LittleEndian
	typ := mbr[446+4]
	start := int64(le.Uint32(mbr[446+8:]))
	if typ == 0xEE {
		return gptFirst(r, size)
	}
	if typ == 0 || start == 0 {
		return 0, layoutErr("MBR partition 1 is empty (type %#02x, start %d)", typ, start)
	}
	if start*sector >= size {
		return 0, layoutErr("MBR partition 1 starts at sector %d, past the image's end", start)
	}
	return start * sector, nil
}

func gptFirst(r io.ReaderAt, size int64) (int64, error) {
	h := make([]byte, sector)
	if _, err := r.ReadAt(h, sector); err != nil {
		return 0, fmt.Errorf("reading the GPT header: %w", err)
	}
	if string(h[:8]) != "EFI PART" {
		return 0, layoutErr("protective MBR but no GPT header at LBA 1 (signature %q)", h[:8])
	}
	le := binary.LittleEndian
	entLBA := int64(le.Uint64(h[72:]))
	entSize := int64(le.Uint32(h[84:]))
	if entSize < 128 || entSize > 4096 || entLBA < 2 || entLBA*sector >= size {
		return 0, layoutErr("GPT header: entries at LBA %d of %d bytes each", entLBA, entSize)
	}
	e := make([]byte, entSize)
	if _, err := r.ReadAt(e, entLBA*sector); err != nil {
		return 0, fmt.Errorf("reading GPT entry 1: %w", err)
	}
	first := int64(le.Uint64(e[32:]))
	if first == 0 || first*sector >= size {
		return 0, layoutErr("GPT entry 1 starts at LBA %d", first)
	}
	return first * sector, nil
}

type fat32 struct {
	off          int64
	bps          int64
	spc          int64
	fatStart     int64
	dataStart    int64
	clusterBytes int64
	clusters     uint32
	root         uint32
}

func readBPB(r io.ReaderAt, off, size int64) (*fat32, error) {
	bs := make([]byte, sector)
	if _, err := r.ReadAt(bs, off); err != nil {
		return nil, fmt.Errorf("reading the boot sector at %d: %w", off, err)
	}
	le := binary.LittleEndian
	f := &fat32{off: off, bps: int64(le.Uint16(bs[0x0B:])), spc: int64(bs[0x0D]), root: le.Uint32(bs[0x2C:])}
	reserved := int64(le.Uint16(bs[0x0E:]))
	nFATs := int64(bs[0x10])
	fatSectors := int64(le.Uint32(bs[0x24:]))
	total := int64(le.Uint32(bs[0x20:]))
	switch {
	case bs[510] != 0x55 || bs[511] != 0xAA:
		return nil, layoutErr("partition boot sector at %d has no 0x55aa signature", off)
	case f.bps != 512 && f.bps != 1024 && f.bps != 2048 && f.bps != 4096:
		return nil, layoutErr("FAT bytes per sector (BPB 0x0B) is %d", f.bps)
	case f.spc == 0 || f.spc&(f.spc-1) != 0:
		return nil, layoutErr("FAT sectors per cluster (BPB 0x0D) is %d", f.spc)
	case le.Uint16(bs[0x11:]) != 0 || fatSectors == 0:
		return nil, layoutErr("not FAT32 (root entries %d, sectors per FAT %d): the stick's filesystem must be FAT32", le.Uint16(bs[0x11:]), fatSectors)
	case nFATs == 0 || nFATs > 4 || reserved == 0:
		return nil, layoutErr("FAT count %d, reserved sectors %d", nFATs, reserved)
	}
	f.clusterBytes = f.bps * f.spc
	f.fatStart = off + reserved*f.bps
	f.dataStart = off + (reserved+nFATs*fatSectors)*f.bps
	data := total - reserved - nFATs*fatSectors
	if data <= 0 || f.dataStart >= size {
		return nil, layoutErr("FAT sizes leave no data area (total sectors %d)", total)
	}
	f.clusters = uint32(min(data/f.spc, fatSectors*f.bps/4-2))
	if f.root < 2 || f.root >= f.clusters+2 {
		return nil, layoutErr("FAT32 root cluster (BPB 0x2C) is %d", f.root)
	}
	return f, nil
}

func (f *fat32) clusterOffset(c uint32) int64 { return f.dataStart + int64(c-2)*f.clusterBytes }

func (f *fat32) next(r io.ReaderAt, c uint32) (uint32, error) {
	var b [4]byte
	if _, err := r.ReadAt(b[:], f.fatStart+4*int64(c)); err != nil {
		return 0, fmt.Errorf("reading FAT entry %d: %w", c, err)
	}
	n := binary.LittleEndian.Uint32(b[:]) & 0x0FFFFFFF
	if n < 2 || n >= f.clusters+2 {
		return n, layoutErr("FAT entry %d ends the chain early (value %#x)", c, n)
	}
	return n, nil
}

type dirEntry struct {
	cluster uint32
	size    uint32
}

// findRoot looks for the 8.3 name in the root directory and reports
// whether it is the first file entry there.
func (f *fat32) findRoot(r io.ReaderAt, name string) (dirEntry, bool, error) {
	buf := make([]byte, f.clusterBytes)
	c := f.root
	files := 0
	read := int64(0)
	for i := 0; i < maxRootScan; i++ {
		if read+f.clusterBytes > maxDirBytes {
			break
		}
		if _, err := r.ReadAt(buf, f.clusterOffset(c)); err != nil {
			return dirEntry{}, false, fmt.Errorf("reading root directory cluster %d: %w", c, err)
		}
		read += f.clusterBytes
		for o := 0; o+32 <= len(buf); o += 32 {
			e := buf[o : o+32]
			switch {
			case e[0] == 0x00:
				return dirEntry{}, false, layoutErr("no SETUP.BIN in the root directory of the first partition")
			case e[0] == 0xE5, e[11] == 0x0F, e[11]&0x08 != 0: // deleted, long name, volume label
				continue
			}
			files++
			if string(e[:11]) == name && e[11]&0x10 == 0 {
				le := binary.LittleEndian
				cl := uint32(le.Uint16(e[20:]))<<16 | uint32(le.Uint16(e[26:]))
				if cl < 2 || cl >= f.clusters+2 {
					return dirEntry{}, false, layoutErr("SETUP.BIN's first cluster is %d", cl)
				}
				return dirEntry{cluster: cl, size: le.Uint32(e[28:])}, files == 1, nil
			}
		}
		n, err := f.next(r, c)
		if err != nil {
			break
		}
		c = n
	}
	return dirEntry{}, false, layoutErr("no SETUP.BIN in the root directory of the first partition")
}

// View is the part of an image (or device) holding setup.bin, as a file
// of its own for the setupbin package: reads and writes at offsets within
// setup.bin land at Offset+off in the underlying file, and Sync is passed
// through so that crash-safe orderings hold on the device.
type View struct {
	F interface {
		io.ReaderAt
		io.WriterAt
	}
	Ext Extent
}

// ReadAt implements io.ReaderAt within setup.bin.
func (v View) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off >= v.Ext.Size {
		return 0, io.EOF
	}
	n := len(b)
	if int64(n) > v.Ext.Size-off {
		n = int(v.Ext.Size - off)
	}
	got, err := v.F.ReadAt(b[:n], v.Ext.Offset+off)
	if err == nil && got < len(b) {
		err = io.EOF
	}
	return got, err
}

// WriteAt implements io.WriterAt within setup.bin; writes past its end are
// refused.
func (v View) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > v.Ext.Size {
		return 0, fmt.Errorf("write of %d bytes at %d outside setup.bin (%d bytes): %w", len(b), off, v.Ext.Size, ErrLayout)
	}
	return v.F.WriteAt(b, v.Ext.Offset+off)
}

// Sync syncs the underlying file when it can.
func (v View) Sync() error {
	if s, ok := v.F.(interface{ Sync() error }); ok {
		return s.Sync()
	}
	return nil
}
