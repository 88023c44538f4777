package wsman

import (
	"bytes"
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// addSeeds adds every file under testdata/<dirs...> to the corpus.
func addSeeds(f *testing.F, dirs ...string) {
	f.Helper()
	for _, d := range dirs {
		files, err := filepath.Glob(filepath.Join("testdata", d, "*"))
		if err != nil {
			f.Fatal(err)
		}
		if len(files) == 0 {
			f.Fatalf("no seeds under testdata/%s", d)
		}
		for _, name := range files {
			b, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

// sameTree compares two element trees by name, attributes, text and
// children (namespace declarations aside).
func sameTree(a, b *Element) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Name != b.Name || a.Text != b.Text || len(a.Children) != len(b.Children) || !reflect.DeepEqual(normAttrs(a.Attr), normAttrs(b.Attr)) {
		return false
	}
	for i := range a.Children {
		if !sameTree(a.Children[i], b.Children[i]) {
			return false
		}
	}
	return true
}

func normAttrs(a []xml.Attr) []xml.Attr {
	if len(a) == 0 {
		return nil
	}
	return a
}

// FuzzParseResponse parses arbitrary bytes as a reply; whatever parses must
// be written back by our encoder and parse again to the same header and
// body tree, and faults must be readable.
func FuzzParseResponse(f *testing.F) {
	addSeeds(f, "responses", "requests", "golden")
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b)
		if err != nil {
			return
		}
		if m.Body != nil && m.Body.Name.Local == "Fault" {
			_ = parseFault(m.Body).Error()
		}
		var buf bytes.Buffer
		var body any
		if m.Body != nil {
			body = m.Body
		}
		if err := writeEnvelope(&buf, &m.Header, body); err != nil {
			return // names encoding/xml refuses to write (invalid characters)
		}
		m2, err := ParseMessage(buf.Bytes())
		if err != nil {
			t.Fatalf("our re-encoding does not parse: %v\n%s", err, buf.Bytes())
		}
		if !reflect.DeepEqual(m.Header, m2.Header) {
			t.Fatalf("header changed:\n%+v\n%+v", m.Header, m2.Header)
		}
		if !sameTree(m.Body, m2.Body) {
			t.Fatalf("body changed:\n%s", buf.Bytes())
		}
		// Typed decoding of any body must not panic.
		if m.Body != nil {
			var g GeneralSettings
			_ = m.Body.Decode(&g)
			var ref EndpointReference
			_ = m.Body.Decode(&ref)
		}
	})
}

// FuzzServeRequest sends arbitrary bodies to the dispatcher with the fake
// AMT behind it: every reply must be a parseable envelope.
func FuzzServeRequest(f *testing.F) {
	addSeeds(f, "requests", "golden")
	dev := newFakeAMT(f, nil, testPassword)
	dev.srv.opts.Unauthenticated = true
	f.Fuzz(func(t *testing.T, b []byte) {
		w := httptest.NewRecorder()
		dev.srv.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/wsman", bytes.NewReader(b)))
		if _, err := ParseMessage(w.Body.Bytes()); err != nil {
			t.Fatalf("status %d reply does not parse: %v\n%s", w.Code, err, w.Body.Bytes())
		}
	})
}

// FuzzMaskSecrets checks that masking never panics and that, for input
// that parses, no secret element keeps its text.
func FuzzMaskSecrets(f *testing.F) {
	addSeeds(f, "requests", "golden")
	f.Fuzz(func(t *testing.T, b []byte) {
		out := maskString(b)
		if _, err := ParseElement(bytes.NewReader(b)); err != nil {
			return
		}
		if strings.HasPrefix(out, "<unparseable") || strings.HasPrefix(out, "<unencodable") {
			return
		}
		masked, err := ParseElement(strings.NewReader(out))
		if err != nil {
			return // the raw prefix form may not re-parse on its own; nothing is shown wrongly
		}
		var walk func(e *Element)
		walk = func(e *Element) {
			if secretElements[e.Name.Local] && (e.Text != "REDACTED" || len(e.Children) != 0) {
				t.Fatalf("secret element %s kept %q in %s", e.Name.Local, e.Text, out)
			}
			for _, c := range e.Children {
				walk(c)
			}
		}
		walk(masked)
	})
}

// FuzzDigestChallenge parses arbitrary WWW-Authenticate and Authorization
// values; a challenge that parses must yield an Authorization header that
// parses back to the same realm and nonce.
func FuzzDigestChallenge(f *testing.F) {
	addSeeds(f, "digest")
	f.Fuzz(func(t *testing.T, b []byte) {
		s := string(b)
		_ = parseAuthParams(s)
		ch, err := parseChallenge([]string{s})
		if err != nil {
			return
		}
		dt := &DigestTransport{Username: "admin", Password: "pw"}
		h, err := dt.authorization(ch, "POST", "/wsman")
		if err != nil {
			t.Fatal(err)
		}
		p := parseAuthParams(strings.TrimPrefix(h, "Digest "))
		clean := func(s string) string { return strings.NewReplacer("\r", "", "\n", "").Replace(s) }
		if p["realm"] != clean(ch.realm) || p["nonce"] != clean(ch.nonce) {
			t.Fatalf("challenge realm %q nonce %q came back as %q %q in %s", ch.realm, ch.nonce, p["realm"], p["nonce"], h)
		}
	})
}
