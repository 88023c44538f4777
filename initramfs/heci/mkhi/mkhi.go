// Package mkhi is the small part of the ME kernel host interface (MKHI,
// client [heci.MKHIClient]) provstick uses: the firmware version
// (specs/heci.md §3, last paragraph).
//
// The request is 4 header bytes {u8 group 0xFF, u8 command 2, u8 reserved,
// u8 result}; the reply repeats the header with the command's high bit set
// and a result byte, then version blocks. specs/heci.md gives the reply as
// "two 8-byte version blocks (code, recovery)" but not the block layout;
// the layout used here, {u16 minor, u8 major, u8 platform, u16 build,
// u16 hotfix}, is the Linux kernel's (drivers/misc/mei/bus-fixup.c,
// struct mkhi_fw_ver_block) and is UNCONFIRMED on real hardware by this
// project. The kernel accepts one to three blocks; so do we.
package mkhi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/provstick/provstick/initramfs/heci"
)

// Group and command of the firmware version request.
const (
	GroupGen        = 0xFF
	CmdGetFWVersion = 0x02
	responseBit     = 0x80
	blockLen        = 8
	maxBlocks       = 3
)

// ErrProtocol: a reply broke the expected layout.
var ErrProtocol = errors.New("mkhi: protocol error")

// Version is one firmware version block.
type Version struct {
	Platform uint8  `json:"platform"`
	Major    uint8  `json:"major"`
	Minor    uint16 `json:"minor"`
	Hotfix   uint16 `json:"hotfix"`
	Build    uint16 `json:"build"`
}

// String prints major.minor.hotfix.build like the kernel's fw_ver file.
func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d.%d", v.Major, v.Minor, v.Hotfix, v.Build)
}

// GetFWVersion asks the ME kernel for its firmware versions.
type GetFWVersion struct{}

// Marshal is the 4-byte request: FF 02 00 00.
func (GetFWVersion) Marshal() []byte { return []byte{GroupGen, CmdGetFWVersion, 0, 0} }

// Execute sends the request.
func (c GetFWVersion) Execute(ctx context.Context, t heci.Transport) (*GetFWVersionResponse, error) {
	out, err := t.Send(ctx, c.Marshal())
	if err != nil {
		return nil, fmt.Errorf("mkhi: GetFWVersion: %w", err)
	}
	return ParseGetFWVersionResponse(out)
}

// GetFWVersionResponse holds the version blocks: the running code first,
// then the recovery image, then (on some firmware) a third.
type GetFWVersionResponse struct {
	Reserved uint8 // the header's reserved byte, kept as sent
	Result   uint8 // the header's result byte; 0 on success
	Blocks   []Version
}

// Code is the running firmware's version (the first block).
func (r *GetFWVersionResponse) Code() Version { return r.Blocks[0] }

// Recovery is the recovery image's version, if the reply had one.
func (r *GetFWVersionResponse) Recovery() (Version, bool) {
	if len(r.Blocks) < 2 {
		return Version{}, false
	}
	return r.Blocks[1], true
}

// ParseRequest checks a firmware version request (for the simulator).
func ParseRequest(b []byte) error {
	if len(b) != 4 || b[0] != GroupGen || b[1] != CmdGetFWVersion {
		return fmt.Errorf("%w: GetFWVersion request: % x, want ff 02 00 00", ErrProtocol, b)
	}
	return nil
}

// Marshal encodes the reply.
func (r *GetFWVersionResponse) Marshal() []byte {
	b := []byte{GroupGen, CmdGetFWVersion | responseBit, r.Reserved, r.Result}
	for _, v := range r.Blocks {
		b = binary.LittleEndian.AppendUint16(b, v.Minor)
		b = append(b, v.Major, v.Platform)
		b = binary.LittleEndian.AppendUint16(b, v.Build)
		b = binary.LittleEndian.AppendUint16(b, v.Hotfix)
	}
	return b
}

// ParseGetFWVersionResponse checks and decodes a reply: length first, then
// group, command and result, then one to three 8-byte blocks.
func ParseGetFWVersionResponse(b []byte) (*GetFWVersionResponse, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%w: GetFWVersion reply of %d bytes, need at least 4", ErrProtocol, len(b))
	}
	if b[0] != GroupGen || b[1] != CmdGetFWVersion|responseBit {
		return nil, fmt.Errorf("%w: GetFWVersion reply group 0x%02X command 0x%02X, want group 0xFF command 0x82", ErrProtocol, b[0], b[1])
	}
	r := &GetFWVersionResponse{Reserved: b[2], Result: b[3]} // 0x02 reserved, 0x03 result
	if r.Result != 0 {
		return nil, fmt.Errorf("mkhi: GetFWVersion: result 0x%02X", r.Result)
	}
	n := len(b) - 4
	if n%blockLen != 0 || n/blockLen < 1 || n/blockLen > maxBlocks {
		return nil, fmt.Errorf("%w: GetFWVersion reply of %d bytes, want 4 + 8×(1..3)", ErrProtocol, len(b))
	}
	for off := 4; off < len(b); off += blockLen {
		blk := b[off : off+blockLen]
		r.Blocks = append(r.Blocks, Version{
			Minor:    binary.LittleEndian.Uint16(blk[0:2]), // +0, 2 bytes
			Major:    blk[2],                               // +2, 1 byte
			Platform: blk[3],                               // +3, 1 byte
			Build:    binary.LittleEndian.Uint16(blk[4:6]), // +4, 2 bytes
			Hotfix:   binary.LittleEndian.Uint16(blk[6:8]), // +6, 2 bytes
		})
	}
	return r, nil
}
