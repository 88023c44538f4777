package wsman

import (
	"bytes"
	"encoding/xml"
	"io"
	"log/slog"
	"strconv"
)

// secretElements are the local names whose text MaskSecrets replaces: the
// password, digest-hash, pre-shared-key and private-key parameters of the
// AMT calls we make or answer.
var secretElements = map[string]bool{
	"Password":       true, // SetMEBxPassword, UsernameToken
	"DigestPassword": true, // SetAdminAclEntryEx, AddUserAclEntryEx
	"PPS":            true, // SetTLSPSK
	"PSK":            true,
	"KeyBlob":        true, // AddKey (private key)
	"PrivateKey":     true,
	"Passphrase":     true,
	"AdminPassword":  true,
	"MEBxPassword":   true,
	"NewPassword":    true,
	"OldPassword":    true,
	// IPS_HostBasedSetupService.AdminSetup and Setup (specs/pki.md).
	"NetworkAdminPassword": true,
}

// MaskSecrets returns the envelope with the text of every secret-bearing
// element replaced by REDACTED, as a slog value that does the work only when
// a handler formats it. Input that does not parse is not shown at all.
func MaskSecrets(envelope []byte) slog.Value {
	return slog.AnyValue(maskedXML(envelope))
}

type maskedXML []byte

// LogValue implements slog.LogValuer.
func (m maskedXML) LogValue() slog.Value { return slog.StringValue(maskString(m)) }

func (m maskedXML) String() string { return maskString(m) }

func maskString(b []byte) string {
	var out bytes.Buffer
	d := xml.NewDecoder(bytes.NewReader(b))
	enc := xml.NewEncoder(&out)
	depthSecret := 0 // >0 while inside a secret element
	for {
		tok, err := d.RawToken()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "<unparseable message, " + strconv.Itoa(len(b)) + " bytes, not shown>"
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depthSecret > 0 {
				depthSecret++
				continue
			}
			if secretElements[t.Name.Local] {
				depthSecret = 1
			}
			err = enc.EncodeToken(xml.StartElement{Name: rawName(t.Name), Attr: rawAttrs(t.Attr)})
			if err == nil && depthSecret == 1 {
				err = enc.EncodeToken(xml.CharData("REDACTED"))
			}
		case xml.EndElement:
			if depthSecret > 1 {
				depthSecret--
				continue
			}
			depthSecret = 0
			err = enc.EncodeToken(xml.EndElement{Name: rawName(t.Name)})
		case xml.CharData:
			if depthSecret == 0 {
				err = enc.EncodeToken(t)
			}
		case xml.ProcInst, xml.Comment, xml.Directive:
			// dropped
		}
		if err != nil {
			return "<unencodable message, " + strconv.Itoa(len(b)) + " bytes, not shown>"
		}
	}
	if err := enc.Flush(); err != nil {
		return "<unencodable message, not shown>"
	}
	return out.String()
}

// rawName turns a RawToken name (prefix in Space) back into prefix:local.
func rawName(n xml.Name) xml.Name {
	if n.Space == "" {
		return n
	}
	return xml.Name{Local: n.Space + ":" + n.Local}
}

func rawAttrs(a []xml.Attr) []xml.Attr {
	if len(a) == 0 {
		return nil
	}
	out := make([]xml.Attr, len(a))
	for i, x := range a {
		out[i] = xml.Attr{Name: rawName(x.Name), Value: x.Value}
	}
	return out
}
