package agent

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultRTC is the machine's battery-backed clock.
const DefaultRTC = "/dev/rtc0"

// SetClockFromRTC brings up the system clock. Debian's kernel already
// copies rtc0 into the system time at boot (CONFIG_RTC_HCTOSYS); when that
// did not happen (the system time is before ClockFloor) it reads the RTC
// itself (PC RTCs keep UTC under Linux convention; a Windows machine
// keeps local time there, which leaves the ledger's time off by the zone,
// nothing worse) and sets the system time from it if the RTC is
// plausible. It returns the time now and, when the clock is still not
// plausible, an error saying why: the agent carries on (the ledger's
// sequence numbers, not its times, order the lines) and the ledger line
// names the clock as missing.
func SetClockFromRTC(rtc string) (time.Time, error) {
	if now := time.Now(); ClockPlausible(now) {
		return now, nil
	}
	if rtc == "" {
		rtc = DefaultRTC
	}
	f, err := os.Open(rtc)
	if err != nil {
		return time.Now(), fmt.Errorf("reading the RTC: %w", err)
	}
	defer f.Close()
	rt, err := unix.IoctlGetRTCTime(int(f.Fd()))
	if err != nil {
		return time.Now(), fmt.Errorf("reading the RTC %s: %w", rtc, err)
	}
	t := time.Date(int(rt.Year)+1900, time.Month(rt.Mon+1), int(rt.Mday), int(rt.Hour), int(rt.Min), int(rt.Sec), 0, time.UTC)
	if !ClockPlausible(t) {
		return time.Now(), fmt.Errorf("the RTC says %s: battery flat or never set", t.Format(time.RFC3339))
	}
	tv := unix.NsecToTimeval(t.UnixNano())
	if err := unix.Settimeofday(&tv); err != nil {
		return time.Now(), fmt.Errorf("setting the system time from the RTC: %w", err)
	}
	return time.Now(), nil
}
