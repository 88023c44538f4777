package agent

import (
	"testing"
)

func TestFATLabel(t *testing.T) {
	fat32 := make([]byte, 512)
	fat32[510], fat32[511] = 0x55, 0xAA
	fat32[0x42] = 0x29
	copy(fat32[0x47:], "PROVSTICK  FAT32   ")
	fat16 := make([]byte, 512)
	fat16[510], fat16[511] = 0x55, 0xAA
	fat16[0x26] = 0x29
	copy(fat16[0x2B:], "OTHER      FAT16   ")
	for _, tc := range []struct {
		name  string
		b     []byte
		label string
		ok    bool
	}{
		{"fat32", fat32, "PROVSTICK", true},
		{"fat16", fat16, "OTHER", true},
		{"short", fat32[:100], "", false},
		{"no signature", make([]byte, 512), "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, ok := FATLabel(tc.b)
			if l != tc.label || ok != tc.ok {
				t.Errorf("FATLabel = %q, %v; want %q, %v", l, ok, tc.label, tc.ok)
			}
		})
	}
}

func TestParseCmdline(t *testing.T) {
	b := ParseCmdline("console=ttyS0 provstick.mei=virtio:org.provstick.mei provstick.after=reboot provstick.countdown=3\n")
	if b.MEAddress != "virtio:org.provstick.mei" || b.After != "reboot" || b.Countdown != 3 {
		t.Errorf("%+v", b)
	}
	b = ParseCmdline("provstick.after=explode provstick.countdown=-4")
	if b.After != "poweroff" || b.Countdown != -1 || b.MEAddress != "" {
		t.Errorf("%+v", b)
	}
}
