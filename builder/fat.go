package builder

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrFAT: the FAT32 filesystem the builder just wrote does not look the
// way it should (a bug here or in go-diskfs, never user input).
var ErrFAT = errors.New("builder: FAT32 layout")

// fat32 is a small view of a FAT32 filesystem at off in an image: enough
// to patch what go-diskfs v1.9.4 leaves wrong and to check the layout.
// Field offsets follow Microsoft's FAT specification (fatgen103) §3.
type fat32 struct {
	img         rwAt
	off         int64 // partition start in bytes
	bps         int64 // bytes per sector, BPB 0x0B
	spc         int64 // sectors per cluster, 0x0D
	reserved    int64 // reserved sectors, 0x0E
	nFATs       int64 // 0x10
	fatSectors  int64 // sectors per FAT, 0x24 (FAT32)
	rootCluster uint32
	backupBoot  int64  // 0x32
	fsInfo      int64  // 0x30
	clusters    uint32 // data clusters
	fat         []uint32
}

type rwAt interface {
	io.ReaderAt
	io.WriterAt
}

func openFAT32(img rwAt, off int64) (*fat32, error) {
	bs := make([]byte, 512)
	if _, err := img.ReadAt(bs, off); err != nil {
		return nil, fmt.Errorf("reading the boot sector: %w", err)
	}
	le := binary.LittleEndian
	f := &fat32{
		img:         img,
		off:         off,
		bps:         int64(le.Uint16(bs[0x0B:])),
		spc:         int64(bs[0x0D]),
		reserved:    int64(le.Uint16(bs[0x0E:])),
		nFATs:       int64(bs[0x10]),
		fatSectors:  int64(le.Uint32(bs[0x24:])),
		rootCluster: le.Uint32(bs[0x2C:]),
		backupBoot:  int64(le.Uint16(bs[0x32:])),
		fsInfo:      int64(le.Uint16(bs[0x30:])),
	}
	total := int64(le.Uint32(bs[0x20:]))
	if f.bps != 512 && f.bps != 4096 || f.spc == 0 || f.nFATs == 0 || f.fatSectors == 0 || bs[510] != 0x55 || bs[511] != 0xAA {
		return nil, fmt.Errorf("boot sector at %d is not FAT32: %w", off, ErrFAT)
	}
	data := total - f.reserved - f.nFATs*f.fatSectors
	if data <= 0 || f.fatSectors*f.bps > 64<<20 {
		return nil, fmt.Errorf("boot sector at %d: bad sizes: %w", off, ErrFAT)
	}
	f.clusters = uint32(data / f.spc)
	raw := make([]byte, f.fatSectors*f.bps)
	if _, err := img.ReadAt(raw, off+f.reserved*f.bps); err != nil {
		return nil, fmt.Errorf("reading the FAT: %w", err)
	}
	n := min(int64(len(raw)/4), int64(f.clusters)+2)
	f.fat = make([]uint32, n)
	for i := range f.fat {
		f.fat[i] = le.Uint32(raw[4*i:]) & 0x0FFFFFFF
	}
	return f, nil
}

func (f *fat32) clusterBytes() int64 { return f.bps * f.spc }

func (f *fat32) clusterOffset(c uint32) int64 {
	dataStart := (f.reserved + f.nFATs*f.fatSectors) * f.bps
	return f.off + dataStart + int64(c-2)*f.clusterBytes()
}

// chain returns the clusters of the chain starting at c.
func (f *fat32) chain(c uint32) ([]uint32, error) {
	var out []uint32
	for c >= 2 && c < 0x0FFFFFF8 {
		if int(c) >= len(f.fat) || len(out) > len(f.fat) {
			return nil, fmt.Errorf("cluster chain through %d leaves the FAT: %w", c, ErrFAT)
		}
		out = append(out, c)
		c = f.fat[c]
	}
	return out, nil
}

// dirEntry is one short-name entry of a directory.
type dirEntry struct {
	Name    string // 8.3 as stored, "NAME    EXT"
	Attr    byte
	Cluster uint32
	Size    uint32
	off     int64 // of the entry in the image
}

const (
	attrVolumeID  = 0x08
	attrDirectory = 0x10
	attrLFN       = 0x0F
)

// readDir returns the short-name entries of the directory at cluster c
// (LFN slots and deleted entries skipped).
func (f *fat32) readDir(c uint32) ([]dirEntry, error) {
	cl, err := f.chain(c)
	if err != nil {
		return nil, err
	}
	var out []dirEntry
	buf := make([]byte, f.clusterBytes())
	for _, c := range cl {
		base := f.clusterOffset(c)
		if _, err := f.img.ReadAt(buf, base); err != nil {
			return nil, fmt.Errorf("reading directory cluster %d: %w", c, err)
		}
		for i := 0; i+32 <= len(buf); i += 32 {
			e := buf[i : i+32]
			switch {
			case e[0] == 0:
				return out, nil
			case e[0] == 0xE5, e[11] == attrLFN:
				continue
			}
			out = append(out, dirEntry{
				Name:    string(e[0:11]),
				Attr:    e[11],
				Cluster: uint32(binary.LittleEndian.Uint16(e[0x14:]))<<16 | uint32(binary.LittleEndian.Uint16(e[0x1A:])),
				Size:    binary.LittleEndian.Uint32(e[0x1C:]),
				off:     base + int64(i),
			})
		}
	}
	return out, nil
}

// fatDateTime encodes t (UTC) as FAT date and time words (two-second
// resolution, years from 1980).
func fatDateTime(t time.Time) (date, tim uint16) {
	t = t.UTC()
	y := max(t.Year()-1980, 0)
	date = uint16(y<<9 | int(t.Month())<<5 | t.Day())
	tim = uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2)
	return date, tim
}

// fixTree walks every directory from the root and rewrites what go-diskfs
// v1.9.4 gets wrong or makes irreproducible:
//   - every entry's creation, access and modification times become t
//     (go-diskfs stamps the wall clock, or SOURCE_DATE_EPOCH read from the
//     process environment, into entries and into "." and "..");
//   - ".." of a directory in the root points at cluster 0, as the FAT
//     specification requires (go-diskfs writes the root's cluster, 2,
//     which fsck.fat reports);
//   - "." points at the directory itself.
func (f *fat32) fixTree(t time.Time) error {
	date, tim := fatDateTime(t)
	seen := map[uint32]bool{}
	var walk func(dir, parent uint32, depth int) error
	walk = func(dir, parent uint32, depth int) error {
		if depth > 16 || seen[dir] {
			return fmt.Errorf("directory loop at cluster %d: %w", dir, ErrFAT)
		}
		seen[dir] = true
		ents, err := f.readDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			var b [32]byte
			if _, err := f.img.ReadAt(b[:], e.off); err != nil {
				return fmt.Errorf("reading a directory entry: %w", err)
			}
			le := binary.LittleEndian
			b[0x0D] = 0 // creation time, tenths
			le.PutUint16(b[0x0E:], tim)
			le.PutUint16(b[0x10:], date)
			le.PutUint16(b[0x12:], date) // last access date
			le.PutUint16(b[0x16:], tim)
			le.PutUint16(b[0x18:], date)
			cluster := e.Cluster
			switch e.Name {
			case ".          ":
				cluster = dir
			case "..         ":
				cluster = parent
				if parent == f.rootCluster {
					cluster = 0
				}
			}
			le.PutUint16(b[0x14:], uint16(cluster>>16))
			le.PutUint16(b[0x1A:], uint16(cluster))
			if _, err := f.img.WriteAt(b[:], e.off); err != nil {
				return fmt.Errorf("writing a directory entry: %w", err)
			}
			if e.Attr&attrDirectory != 0 && e.Name != ".          " && e.Name != "..         " {
				if err := walk(e.Cluster, dir, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(f.rootCluster, 0, 0)
}

// fixBootSector sets the BPB fields go-diskfs leaves at zero — hidden
// sectors (the partition's start LBA; boot code such as syslinux's uses
// it to find the partition) and the volume serial (derived from the
// stick) — and makes the backup boot sector an exact copy, as Windows
// and mkfs.fat do.
func (f *fat32) fixBootSector(hidden, serial uint32) error {
	bs := make([]byte, f.bps)
	if _, err := f.img.ReadAt(bs, f.off); err != nil {
		return fmt.Errorf("reading the boot sector: %w", err)
	}
	binary.LittleEndian.PutUint32(bs[0x1C:], hidden)
	binary.LittleEndian.PutUint32(bs[0x43:], serial)
	if _, err := f.img.WriteAt(bs, f.off); err != nil {
		return fmt.Errorf("writing the boot sector: %w", err)
	}
	if f.backupBoot > 0 && f.backupBoot < f.reserved {
		if _, err := f.img.WriteAt(bs, f.off+f.backupBoot*f.bps); err != nil {
			return fmt.Errorf("writing the backup boot sector: %w", err)
		}
	}
	return nil
}

// fixFSInfo fills in the FSInfo sector's free cluster count and next free
// cluster hint (go-diskfs leaves them "unknown", which fsck.fat reports),
// in the primary FSInfo sector and its backup after the backup boot
// sector.
func (f *fat32) fixFSInfo() error {
	if f.fsInfo == 0 || f.fsInfo >= f.reserved {
		return nil
	}
	var free, next uint32
	for c := uint32(2); c < uint32(len(f.fat)); c++ {
		if f.fat[c] == 0 {
			if free == 0 {
				next = c
			}
			free++
		}
	}
	fi := make([]byte, 512)
	at := f.off + f.fsInfo*f.bps
	if _, err := f.img.ReadAt(fi, at); err != nil {
		return fmt.Errorf("reading the FSInfo sector: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint32(fi[0:]) != 0x41615252 || le.Uint32(fi[0x1E4:]) != 0x61417272 {
		return fmt.Errorf("FSInfo sector %d has no signature: %w", f.fsInfo, ErrFAT)
	}
	le.PutUint32(fi[0x1E8:], free)
	le.PutUint32(fi[0x1EC:], next)
	for _, s := range []int64{f.fsInfo, f.backupBoot + f.fsInfo} {
		if s == f.fsInfo || f.backupBoot > 0 && s < f.reserved {
			if _, err := f.img.WriteAt(fi, f.off+s*f.bps); err != nil {
				return fmt.Errorf("writing the FSInfo sector: %w", err)
			}
		}
	}
	return nil
}
