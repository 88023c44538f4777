package tlspsk_test

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/provstick/provstick/internal/tlspsk"
)

// The kiosk side (client) and the simulator side (server) of one AMT
// device, PID 0000-037M with Intel's example PPS.
func Example() {
	const pid, pps = "0000037M", "NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ"
	form := tlspsk.KeyPPSASCII // UNCONFIRMED on real firmware; spec §3

	l, err := tlspsk.Listen("tcp", "127.0.0.1:0", &tlspsk.Config{
		Hint: pid, // some firmware sends the PID as the identity hint
		GetKey: func(identity string) ([]byte, error) {
			if identity != pid {
				return nil, tlspsk.ErrUnknownIdentity
			}
			return form.Key(pid, pps), nil
		},
	})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "hello from AMT")
	}()

	d := &tlspsk.Dialer{Config: &tlspsk.Config{
		MaxVersion: tlspsk.VersionTLS10, // what PSK-era firmware speaks
		Identity: func(hint string) (string, []byte, error) {
			return pid, form.Key(pid, pps), nil
		},
	}}
	c, err := d.DialContext(context.Background(), "tcp", l.Addr().String())
	if errors.Is(err, tlspsk.ErrBadKey) {
		fmt.Println("wrong PPS for this PID")
		return
	}
	if err != nil {
		panic(err)
	}
	defer c.Close()
	st := c.(*tlspsk.Conn).ConnectionState()
	fmt.Println(tlspsk.VersionName(st.Version), tlspsk.CipherSuiteName(st.CipherSuite), "hint", st.Hint)
	b, _ := io.ReadAll(c)
	fmt.Println(string(b))
	// Output:
	// TLS 1.0 TLS_PSK_WITH_AES_128_CBC_SHA hint 0000037M
	// hello from AMT
}
