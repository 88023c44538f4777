// Package tlspsk is a small TLS 1.0, 1.1 and 1.2 client and server for plain
// pre-shared-key cipher suites (RFC 4279), the only way to talk to an Intel AMT
// device (AMT 2.x–10.x, port 16993) that is still in PSK setup mode.
//
// Go's crypto/tls has no PSK for TLS ≤ 1.2, so this package implements exactly
// what ../shared/specs/amt-psk.md §3 asks for and nothing more:
//
//   - TLS 1.0, 1.1 and 1.2, client and server, the PSK key exchange only
//     (no certificates, no Diffie-Hellman);
//   - TLS_PSK_WITH_AES_128_CBC_SHA (0x008C), TLS_PSK_WITH_AES_256_CBC_SHA
//     (0x008D), TLS_PSK_WITH_AES_128_CBC_SHA256 (0x00AE, TLS 1.2 only) and,
//     behind Config.AllowRC4, TLS_PSK_WITH_RC4_128_SHA (0x008A);
//   - the optional ServerKeyExchange carrying a PSK identity hint, in both
//     directions;
//   - null compression, no session resumption, no renegotiation (a
//     HelloRequest or a second ClientHello is refused with a no_renegotiation
//     warning), and a conservative ClientHello: TLS 1.0 record version, no
//     extensions, only the renegotiation_info SCSV (RFC 5746) in the suite
//     list, because old AMT firmware is said to choke on extensions.
//
// A Conn is a net.Conn. The kiosk opens one with Client (or Dialer, for
// http.Transport.DialTLSContext); the AMT simulator accepts with Server or
// Listen. The key is chosen by callbacks (Config.Identity on the client,
// Config.GetKey on the server); KeyForm turns a PID/PPS pair into key bytes.
// Which bytes real AMT firmware uses as the PSK is UNCONFIRMED (spec §3,
// marked [U]); KeyForm is the switch, and the simulator mirrors it.
//
// Key material never appears in errors or log lines. Errors that a caller
// branches on are sentinels: ErrUnknownIdentity (the server did not know the
// identity, alert 115), ErrBadKey (the peers' keys differ: bad_record_mac or
// decrypt_error at Finished — "wrong PPS for this PID"), ErrVersion (no common
// protocol version). Every alert is also available as an *AlertError.
//
// The implementation is checked against OpenSSL's s_server and s_client in
// this package's tests; see testdata/README.md for the known-answer vectors.
package tlspsk
