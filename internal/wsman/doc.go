// Package wsman speaks WS-Management 1.0 over SOAP 1.2 and HTTP Digest, the
// way Intel AMT 3.0 and later expect it on /wsman (ports 16992 plain HTTP and
// 16993 TLS). See ../shared/specs/amt-psk.md §4–§6.
//
// The client side (Client) builds envelopes with WS-Addressing 2004/08 and
// WS-Management headers, runs the 2004/09 transfer (Get, Put, Create,
// Delete) and enumeration (Enumerate, Pull) operations and method calls, and
// offers a typed call for every provisioning step of spec §6 (amt.go).
// DigestTransport adds RFC 2617 Digest authentication (MD5, qop=auth) to any
// http.RoundTripper, so the kiosk can put TLS-PSK underneath through
// http.Transport.DialTLSContext.
//
// The server side (Server) is an http.Handler that checks Digest
// credentials, parses requests, routes them by resource URI and action to
// registered handlers, and writes responses and WS-Management faults. The
// AMT simulator (internal/amtsim) registers the AMT classes on it.
//
// AMT return values become Status errors and SOAP faults *Fault errors; both
// work with errors.Is and errors.As. Request and response envelopes are
// logged at debug level with every secret-bearing element (passwords,
// DigestPassword, PPS, key blobs) replaced by REDACTED.
//
// Where real hardware has not confirmed an encoding (SetTLSPSK), the choice
// is an option, not a guess; see PSKEncoding.
package wsman
