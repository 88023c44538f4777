package wsman

import (
	"bytes"
	"crypto/rand"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

// Selector picks one instance of a class by key property (WS-Management
// SelectorSet). Only text values are supported; AMT's provisioning classes
// need no nested endpoint references as selectors.
type Selector struct {
	Name  string `xml:"Name,attr"`
	Value string `xml:",chardata"`
}

// SelectorSet is the ordered set of selectors of a request.
type SelectorSet []Selector

// Get returns the value of the selector called name.
func (s SelectorSet) Get(name string) (string, bool) {
	for _, x := range s {
		if x.Name == name {
			return x.Value, true
		}
	}
	return "", false
}

// EndpointReference names a resource instance (WS-Addressing EPR), as
// returned by Create, GenerateKeyPair, AddKey and AddCertificate and passed
// as a reference property such as ElementInContext.
type EndpointReference struct {
	Address     string
	ResourceURI string
	Selectors   SelectorSet
}

// eprXML is the wire shape of an EndpointReference.
type eprXML struct {
	Address string    `xml:"http://schemas.xmlsoap.org/ws/2004/08/addressing Address"`
	Params  eprParams `xml:"http://schemas.xmlsoap.org/ws/2004/08/addressing ReferenceParameters"`
}

type eprParams struct {
	ResourceURI string         `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd ResourceURI"`
	SelectorSet eprSelectorSet `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd SelectorSet"`
}

type eprSelectorSet struct {
	Selectors []Selector `xml:"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd Selector"`
}

// MarshalXML writes the reference under the element name start.
func (r EndpointReference) MarshalXML(enc *xml.Encoder, start xml.StartElement) error {
	addr := r.Address
	if addr == "" {
		addr = AddressAnonymous
	}
	return enc.EncodeElement(eprXML{Address: addr, Params: eprParams{
		ResourceURI: r.ResourceURI, SelectorSet: eprSelectorSet{Selectors: r.Selectors},
	}}, start)
}

// UnmarshalXML reads a reference.
func (r *EndpointReference) UnmarshalXML(dec *xml.Decoder, start xml.StartElement) error {
	var x eprXML
	if err := dec.DecodeElement(&x, &start); err != nil {
		return err
	}
	*r = EndpointReference{Address: x.Address, ResourceURI: x.Params.ResourceURI, Selectors: x.Params.SelectorSet.Selectors}
	return nil
}

// Header is the SOAP header of a WS-Management message, request or reply.
type Header struct {
	Action           string
	To               string
	ResourceURI      string
	MessageID        string
	RelatesTo        string
	ReplyTo          string // address of ReplyTo; requests use AddressAnonymous
	OperationTimeout string // xs:duration, "PT60S"
	Selectors        SelectorSet
}

// Message is a parsed SOAP envelope.
type Message struct {
	Header
	// Body is the first element inside soap:Body, or nil for an empty body.
	Body *Element
	// Envelope is the whole parsed document.
	Envelope *Element
}

// ParseMessage parses a SOAP 1.2 envelope. It checks the envelope and body
// namespaces and reads the WS-Addressing and WS-Management headers; it does
// not interpret the body.
func ParseMessage(b []byte) (*Message, error) {
	root, err := ParseElement(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	if root.Name != (xml.Name{Space: NSSOAP, Local: "Envelope"}) {
		return nil, fmt.Errorf("%w: root element is {%s}%s, want a SOAP 1.2 Envelope", ErrMalformed, root.Name.Space, root.Name.Local)
	}
	m := &Message{Envelope: root}
	var body *Element
	for _, c := range root.Children {
		switch {
		case c.Name.Space == NSSOAP && c.Name.Local == "Header":
			m.Header = parseHeader(c)
		case c.Name.Space == NSSOAP && c.Name.Local == "Body":
			body = c
		}
	}
	if body == nil {
		return nil, fmt.Errorf("%w: envelope has no Body", ErrMalformed)
	}
	if len(body.Children) > 0 {
		m.Body = body.Children[0]
	}
	return m, nil
}

func parseHeader(h *Element) Header {
	var hd Header
	for _, c := range h.Children {
		switch c.Name.Space {
		case NSAddressing:
			switch c.Name.Local {
			case "Action":
				hd.Action = c.Text
			case "To":
				hd.To = c.Text
			case "MessageID":
				hd.MessageID = c.Text
			case "RelatesTo":
				hd.RelatesTo = c.Text
			case "ReplyTo":
				hd.ReplyTo = c.ChildText("Address")
			}
		case NSWSMan:
			switch c.Name.Local {
			case "ResourceURI":
				hd.ResourceURI = c.Text
			case "OperationTimeout":
				hd.OperationTimeout = c.Text
			case "SelectorSet":
				for _, s := range c.Children {
					if s.Name.Local != "Selector" {
						continue
					}
					name, _ := s.AttrValue("Name")
					hd.Selectors = append(hd.Selectors, Selector{Name: name, Value: s.Text})
				}
			}
		}
	}
	return hd
}

// writeEnvelope writes a SOAP 1.2 envelope with the given header and body.
// body is nil, an *Element, or any value encoding/xml can marshal (a struct
// whose XMLName carries the class namespace).
func writeEnvelope(w io.Writer, h *Header, body any) error {
	var el *Element
	if body != nil {
		var err error
		if el, err = toElement(body); err != nil {
			return fmt.Errorf("encoding %s body: %w", shortAction(h.Action), err)
		}
	}
	enc := xml.NewEncoder(w)
	p := &prefixed{enc: enc}
	if p.err == nil {
		_, p.err = io.WriteString(w, xml.Header[:len(xml.Header)-1])
	}
	p.start("s:Envelope",
		attr("xmlns:s", NSSOAP),
		attr("xmlns:a", NSAddressing),
		attr("xmlns:w", NSWSMan))
	p.start("s:Header")
	mu := attr("s:mustUnderstand", "true")
	if h.Action != "" {
		p.leaf("a:Action", h.Action, mu)
	}
	if h.To != "" {
		p.leaf("a:To", h.To)
	}
	if h.ResourceURI != "" {
		p.leaf("w:ResourceURI", h.ResourceURI, mu)
	}
	if h.MessageID != "" {
		p.leaf("a:MessageID", h.MessageID)
	}
	if h.RelatesTo != "" {
		p.leaf("a:RelatesTo", h.RelatesTo)
	}
	if h.ReplyTo != "" {
		p.start("a:ReplyTo")
		p.leaf("a:Address", h.ReplyTo, mu)
		p.end("a:ReplyTo")
	}
	if h.OperationTimeout != "" {
		p.leaf("w:OperationTimeout", h.OperationTimeout)
	}
	if len(h.Selectors) > 0 {
		p.start("w:SelectorSet")
		for _, s := range h.Selectors {
			p.leaf("w:Selector", s.Value, attr("Name", s.Name))
		}
		p.end("w:SelectorSet")
	}
	p.end("s:Header")
	p.start("s:Body")
	if el != nil {
		p.element(el)
	}
	p.end("s:Body")
	p.end("s:Envelope")
	if p.err == nil {
		p.err = enc.Flush()
	}
	if p.err != nil {
		return fmt.Errorf("encoding %s envelope: %w", shortAction(h.Action), p.err)
	}
	return nil
}

// MarshalXML lets an *Element be a body or an item: it encodes itself with
// its own name, ignoring start.
func (e *Element) MarshalXML(enc *xml.Encoder, _ xml.StartElement) error {
	return e.encode(enc)
}

// newMessageID returns a random "uuid:" message ID (RFC 4122 version 4).
func newMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("uuid:%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// shortAction returns the last path element of an action, for messages.
func shortAction(a string) string {
	if i := strings.LastIndexByte(a, '/'); i >= 0 {
		return a[i+1:]
	}
	return a
}

// className returns the class name at the end of a resource URI.
func className(uri string) string { return shortAction(uri) }
