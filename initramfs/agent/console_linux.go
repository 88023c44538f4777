package agent

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultConsole is the machine's display: the foreground virtual
// terminal, drawn by vgacon (legacy BIOS, VGA text mode) or fbcon (the
// UEFI GOP framebuffer through efifb, or under legacy BIOS the VESA mode
// the recipe's boot.bios_video asks for, through vesafb). /dev/fb0 would need our own font
// and renderer and does not exist at all in VGA text mode; tty0 works on
// both and the kernel draws the glyphs.
const DefaultConsole = "/dev/tty0"

// Console is the technician's screen.
type Console struct {
	f          *os.File
	cols, rows int
	cur        Screen
	// footerCols is the footer's width as last drawn (less than cols
	// beside a QR code); qr the code drawn, if any.
	footerCols int
	qr         *QRCode
	// undouble puts back the font doubleFont replaced (nil: not doubled).
	undouble func() error
}

// OpenConsole opens path (DefaultConsole if empty), silences kernel
// messages on the console (printk level 1, so they cannot scroll the
// screen away), and on a wide framebuffer console doubles the font so the
// text is large.
func OpenConsole(path string) (*Console, error) {
	if path == "" {
		path = DefaultConsole
	}
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the console %s: %w", path, err)
	}
	c := &Console{f: f}
	_ = os.WriteFile("/proc/sys/kernel/printk", []byte("1"), 0)
	c.size()
	if c.cols >= 120 {
		if undo, err := doubleFont(int(f.Fd())); err == nil {
			c.undouble = undo
			c.size()
		}
	}
	return c, nil
}

func (c *Console) size() {
	c.cols, c.rows = 80, 25
	if ws, err := unix.IoctlGetWinsize(int(c.f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col >= 40 && ws.Row >= 10 {
		c.cols, c.rows = int(ws.Col), int(ws.Row)
	}
}

// Size is the console's size in characters.
func (c *Console) Size() (cols, rows int) { return c.cols, c.rows }

// Draw redraws the whole screen. A QR code that does not fit the doubled
// font's grid gets the normal font back (text half the size, four times
// the cells).
func (c *Console) Draw(s Screen) error {
	c.cur = s
	c.qr = s.QR.Fit(c.cols, c.rows)
	if s.QR != nil && c.qr == nil && c.undouble != nil {
		if err := c.undouble(); err == nil {
			c.size()
			c.qr = s.QR.Fit(c.cols, c.rows)
		}
		c.undouble = nil
	}
	c.footerCols = c.cols
	if c.qr != nil {
		c.footerCols -= c.qr.Cols()
	}
	_, err := c.f.Write(s.Render(c.cols, c.rows))
	return err
}

// QRCode is the QR code the last Draw put on the screen (nil: none).
func (c *Console) QRCode() *QRCode { return c.qr }

// Footer replaces the footer line (the countdown) of the current screen.
func (c *Console) Footer(text string) error {
	c.cur.Footer = text
	_, err := c.f.Write(c.cur.footerUpdate(max(c.footerCols, 40), max(c.rows, 10)))
	return err
}

// Close closes the console; the screen stays as drawn.
func (c *Console) Close() error { return c.f.Close() }

// console_font_op from linux/kd.h.
type consoleFontOp struct {
	op, flags, width, height, charcount uint32
	_                                   uint32
	data                                *byte
}

const (
	kdFontOpSet = 0
	kdFontOpGet = 1
	kdFontOp    = 0x4B72 // KDFONTOP
	fontVPitch  = 32     // rows per glyph in the ioctl's buffer
)

// doubleFont reads the console font and sets one twice as wide and high
// (8×16 becomes 16×32). fbcon accepts it; vgacon refuses any width but 8,
// which leaves VGA text mode as it is (80×25 is already large).
// It returns a function that sets the original font again.
func doubleFont(fd int) (undo func() error, err error) {
	buf := make([]byte, 512*fontVPitch*4)
	get := consoleFontOp{op: kdFontOpGet, width: 32, height: 32, charcount: 512, data: &buf[0]}
	if err := ioctlPtr(fd, kdFontOp, unsafe.Pointer(&get)); err != nil {
		return nil, fmt.Errorf("reading the console font: %w", err)
	}
	if get.width != 8 || get.height == 0 || get.height > 16 || get.charcount == 0 || get.charcount > 512 {
		return nil, fmt.Errorf("console font %d×%d×%d: not doubled", get.width, get.height, get.charcount)
	}
	out := make([]byte, int(get.charcount)*fontVPitch*2)
	for ch := 0; ch < int(get.charcount); ch++ {
		for y := 0; y < int(get.height); y++ {
			w := spread(buf[ch*fontVPitch+y])
			for _, yy := range []int{2 * y, 2*y + 1} {
				o := ch*fontVPitch*2 + yy*2
				out[o], out[o+1] = byte(w>>8), byte(w)
			}
		}
	}
	set := consoleFontOp{op: kdFontOpSet, width: 16, height: 2 * get.height, charcount: get.charcount, data: &out[0]}
	if err := ioctlPtr(fd, kdFontOp, unsafe.Pointer(&set)); err != nil {
		return nil, fmt.Errorf("setting a doubled console font: %w", err)
	}
	undo = func() error {
		orig := consoleFontOp{op: kdFontOpSet, width: get.width, height: get.height, charcount: get.charcount, data: &buf[0]}
		if err := ioctlPtr(fd, kdFontOp, unsafe.Pointer(&orig)); err != nil {
			return fmt.Errorf("setting the console font back: %w", err)
		}
		return nil
	}
	return undo, nil
}

// spread doubles each bit of b: 0b1010_0000 → 0b1100_1100_0000_0000.
func spread(b byte) uint16 {
	var w uint16
	for i := 7; i >= 0; i-- {
		w <<= 2
		if b&(1<<i) != 0 {
			w |= 3
		}
	}
	return w
}

func ioctlPtr(fd int, req uint, p unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(p)); errno != 0 {
		return errno
	}
	return nil
}
