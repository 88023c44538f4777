package tlspsk

import "fmt"

// alert is a TLS alert description (RFC 5246 §7.2, RFC 4279 §2).
type alert uint8

const (
	alertCloseNotify           alert = 0
	alertUnexpectedMessage     alert = 10
	alertBadRecordMAC          alert = 20
	alertRecordOverflow        alert = 22
	alertDecompressionFailure  alert = 30
	alertHandshakeFailure      alert = 40
	alertIllegalParameter      alert = 47
	alertDecodeError           alert = 50
	alertDecryptError          alert = 51
	alertProtocolVersion       alert = 70
	alertInsufficientSecurity  alert = 71
	alertInternalError         alert = 80
	alertUserCanceled          alert = 90
	alertNoRenegotiation       alert = 100
	alertUnsupportedExtension  alert = 110
	alertUnknownPSKIdentity    alert = 115
	alertLevelWarning          uint8 = 1
	alertLevelFatal            uint8 = 2
	maxConsecutiveWarnings           = 16
	maxConsecutiveEmptyRecords       = 16
)

var alertNames = map[alert]string{
	alertCloseNotify:          "close_notify",
	alertUnexpectedMessage:    "unexpected_message",
	alertBadRecordMAC:         "bad_record_mac",
	21:                        "decryption_failed",
	alertRecordOverflow:       "record_overflow",
	alertDecompressionFailure: "decompression_failure",
	alertHandshakeFailure:     "handshake_failure",
	42:                        "bad_certificate",
	43:                        "unsupported_certificate",
	44:                        "certificate_revoked",
	45:                        "certificate_expired",
	46:                        "certificate_unknown",
	alertIllegalParameter:     "illegal_parameter",
	48:                        "unknown_ca",
	49:                        "access_denied",
	alertDecodeError:          "decode_error",
	alertDecryptError:         "decrypt_error",
	60:                        "export_restriction",
	alertProtocolVersion:      "protocol_version",
	alertInsufficientSecurity: "insufficient_security",
	alertInternalError:        "internal_error",
	86:                        "inappropriate_fallback",
	alertUserCanceled:         "user_canceled",
	alertNoRenegotiation:      "no_renegotiation",
	alertUnsupportedExtension: "unsupported_extension",
	alertUnknownPSKIdentity:   "unknown_psk_identity",
}

func (a alert) String() string {
	if s, ok := alertNames[a]; ok {
		return s
	}
	return fmt.Sprintf("alert(%d)", uint8(a))
}

// AlertError is a fatal alert, sent by us (Remote false) or received from
// the peer (Remote true).
type AlertError struct {
	Description uint8 // RFC 5246 §7.2 AlertDescription, e.g. 20, 115
	Remote      bool
}

func (e *AlertError) Error() string {
	who := "local"
	if e.Remote {
		who = "remote"
	}
	return fmt.Sprintf("tlspsk: %s alert %s (%d)", who, alert(e.Description), e.Description)
}

// Is maps alerts to the sentinels a caller branches on. bad_record_mac and
// decrypt_error map to ErrBadKey only through the handshake, which wraps
// ErrBadKey itself; after the handshake they mean tampering, not a key
// mismatch.
func (e *AlertError) Is(target error) bool {
	switch target {
	case ErrUnknownIdentity:
		return alert(e.Description) == alertUnknownPSKIdentity
	case ErrVersion:
		return alert(e.Description) == alertProtocolVersion
	}
	return false
}
