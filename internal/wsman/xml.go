package wsman

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// XML namespaces of the protocols (spec §5).
const (
	NSSOAP        = "http://www.w3.org/2003/05/soap-envelope"
	NSAddressing  = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
	NSWSMan       = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
	NSTransfer    = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
	NSEnumeration = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
	NSXSI         = "http://www.w3.org/2001/XMLSchema-instance"

	// AddressAnonymous is the WS-Addressing anonymous reply address.
	AddressAnonymous = NSAddressing + "/role/anonymous"
)

// Resource URI prefixes of the three schemas AMT serves (spec §5).
const (
	AMTSchema = "http://intel.com/wbem/wscim/1/amt-schema/1/"
	CIMSchema = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/"
	IPSSchema = "http://intel.com/wbem/wscim/1/ips-schema/1/"
)

// Actions of the transfer and enumeration operations.
const (
	ActionGet               = NSTransfer + "/Get"
	ActionGetResponse       = NSTransfer + "/GetResponse"
	ActionPut               = NSTransfer + "/Put"
	ActionPutResponse       = NSTransfer + "/PutResponse"
	ActionCreate            = NSTransfer + "/Create"
	ActionCreateResponse    = NSTransfer + "/CreateResponse"
	ActionDelete            = NSTransfer + "/Delete"
	ActionDeleteResponse    = NSTransfer + "/DeleteResponse"
	ActionEnumerate         = NSEnumeration + "/Enumerate"
	ActionEnumerateResponse = NSEnumeration + "/EnumerateResponse"
	ActionPull              = NSEnumeration + "/Pull"
	ActionPullResponse      = NSEnumeration + "/PullResponse"
	ActionRelease           = NSEnumeration + "/Release"
	ActionReleaseResponse   = NSEnumeration + "/ReleaseResponse"
	// ActionFault is the action of WS-Addressing faults, ActionWSManFault
	// that of WS-Management ones.
	ActionFault      = NSAddressing + "/fault"
	ActionWSManFault = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
)

// Limits on what the parser accepts from the network.
const (
	maxDepth    = 64
	maxElements = 1 << 16
	// DefaultMaxMessageBytes caps a request or response body.
	DefaultMaxMessageBytes = 4 << 20
)

// ErrMalformed reports an envelope that is not well-formed XML or lacks a
// part the protocol requires.
var ErrMalformed = errors.New("wsman: malformed message")

// Element is a parsed XML element with namespaces resolved. Text holds the
// character data directly inside the element (for leaf elements, the value).
type Element struct {
	Name     xml.Name
	Attr     []xml.Attr // without namespace declarations
	Text     string
	Children []*Element

	ns map[string]string // prefix → namespace declared on this element
	up *Element
}

// Child returns the first child with the given local name (any namespace).
func (e *Element) Child(local string) *Element {
	if e == nil {
		return nil
	}
	for _, c := range e.Children {
		if c.Name.Local == local {
			return c
		}
	}
	return nil
}

// ChildText returns the text of the first child named local, or "".
func (e *Element) ChildText(local string) string {
	if c := e.Child(local); c != nil {
		return c.Text
	}
	return ""
}

// AttrValue returns the value of the attribute with the given local name.
func (e *Element) AttrValue(local string) (string, bool) {
	for _, a := range e.Attr {
		if a.Name.Local == local {
			return a.Value, true
		}
	}
	return "", false
}

// resolveQName resolves a "prefix:local" text value (a SOAP fault code, for
// instance) against the namespace declarations in scope at e.
func (e *Element) resolveQName(s string) xml.Name {
	s = strings.TrimSpace(s)
	prefix, local, ok := strings.Cut(s, ":")
	if !ok {
		prefix, local = "", s
	}
	for x := e; x != nil; x = x.up {
		if ns, ok := x.ns[prefix]; ok {
			return xml.Name{Space: ns, Local: local}
		}
	}
	if ok {
		return xml.Name{Space: prefix, Local: local}
	}
	return xml.Name{Local: local}
}

// Decode unmarshals the element into v with encoding/xml, as if the element
// were a document of its own with every namespace spelled out.
func (e *Element) Decode(v any) error {
	b, err := e.Marshal()
	if err != nil {
		return err
	}
	if err := xml.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decoding %s: %w", e.Name.Local, err)
	}
	return nil
}

// Marshal encodes the element and its children as standalone XML.
func (e *Element) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := xml.NewEncoder(&buf)
	if err := e.encode(enc); err != nil {
		return nil, err
	}
	if err := enc.Flush(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (e *Element) encode(enc *xml.Encoder) error {
	start := xml.StartElement{Name: e.Name, Attr: e.Attr}
	if err := enc.EncodeToken(start); err != nil {
		return err
	}
	if e.Text != "" {
		if err := enc.EncodeToken(xml.CharData(e.Text)); err != nil {
			return err
		}
	}
	for _, c := range e.Children {
		if err := c.encode(enc); err != nil {
			return err
		}
	}
	return enc.EncodeToken(start.End())
}

// ParseElement reads one XML document into an Element tree. It refuses
// documents nested deeper than 64 or holding more than 65536 elements.
func ParseElement(r io.Reader) (*Element, error) {
	d := xml.NewDecoder(r)
	var root, cur *Element
	n := 0
	depth := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if root != nil && cur == nil {
				return nil, fmt.Errorf("%w: content after the root element", ErrMalformed)
			}
			n++
			depth++
			if n > maxElements || depth > maxDepth {
				return nil, fmt.Errorf("%w: more than %d elements or deeper than %d", ErrMalformed, maxElements, maxDepth)
			}
			el := &Element{Name: t.Name, up: cur}
			for _, a := range t.Attr {
				switch {
				case a.Name.Space == "xmlns":
					el.declare(a.Name.Local, a.Value)
				case a.Name.Space == "" && a.Name.Local == "xmlns":
					el.declare("", a.Value)
				default:
					el.Attr = append(el.Attr, a)
				}
			}
			if cur == nil {
				root = el
			} else {
				cur.Children = append(cur.Children, el)
			}
			cur = el
		case xml.EndElement:
			depth--
			if cur != nil {
				cur.Text = strings.TrimSpace(cur.Text)
				cur = cur.up
			}
		case xml.CharData:
			if cur != nil {
				cur.Text += string(t)
			} else if len(bytes.TrimSpace(t)) != 0 {
				return nil, fmt.Errorf("%w: text outside the root element", ErrMalformed)
			}
		}
	}
	if root == nil {
		return nil, fmt.Errorf("%w: no root element", ErrMalformed)
	}
	return root, nil
}

func (e *Element) declare(prefix, ns string) {
	if e.ns == nil {
		e.ns = make(map[string]string, 2)
	}
	e.ns[prefix] = ns
}

// ---- writing with prefixes ----

// prefixed writes elements as prefix:Local with xmlns:prefix declarations on
// the root, the way AMT and MeshCentral spell envelopes. Values always go
// through EncodeToken, which escapes them.
type prefixed struct {
	enc *xml.Encoder
	err error
}

func (p *prefixed) start(name string, attr ...xml.Attr) {
	if p.err == nil {
		p.err = p.enc.EncodeToken(xml.StartElement{Name: xml.Name{Local: name}, Attr: attr})
	}
}

func (p *prefixed) end(name string) {
	if p.err == nil {
		p.err = p.enc.EncodeToken(xml.EndElement{Name: xml.Name{Local: name}})
	}
}

func (p *prefixed) text(s string) {
	if p.err == nil && s != "" {
		p.err = p.enc.EncodeToken(xml.CharData(s))
	}
}

// leaf writes <name attr...>value</name>.
func (p *prefixed) leaf(name, value string, attr ...xml.Attr) {
	p.start(name, attr...)
	p.text(value)
	p.end(name)
}

// xmlNamespace is the namespace encoding/xml gives the reserved xml: prefix.
const xmlNamespace = "http://www.w3.org/XML/1998/namespace"

// envelopeScope maps the namespaces the envelope declares to their prefixes.
var envelopeScope = map[string]string{NSSOAP: "s", NSAddressing: "a", NSWSMan: "w", xmlNamespace: "xml"}

// wellKnownPrefix is the prefix used for a namespace the envelope does not
// declare, when it has a conventional one.
var wellKnownPrefix = map[string]string{NSEnumeration: "n", NSTransfer: "t", NSXSI: "xsi"}

// element writes e and its subtree with prefixes. Every namespace the
// subtree uses and the envelope does not declare is declared once, on e, so
// no child carries an xmlns attribute (MeshCentral's parser would take one
// for a property attribute).
func (p *prefixed) element(e *Element) {
	scope := make(map[string]string, len(envelopeScope)+4)
	for ns, pf := range envelopeScope {
		scope[ns] = pf
	}
	used := map[string]bool{}
	for _, pf := range scope {
		used[pf] = true
	}
	var decl []xml.Attr
	next := 0
	var collect func(x *Element)
	add := func(ns string) {
		if ns == "" {
			return
		}
		if _, ok := scope[ns]; ok {
			return
		}
		pf, ok := wellKnownPrefix[ns]
		for !ok || used[pf] {
			pf, ok = autoPrefix(next), true
			next++
		}
		scope[ns] = pf
		used[pf] = true
		decl = append(decl, attr("xmlns:"+pf, ns))
	}
	collect = func(x *Element) {
		add(x.Name.Space)
		for _, a := range x.Attr {
			add(a.Name.Space)
		}
		for _, c := range x.Children {
			collect(c)
		}
	}
	collect(e)
	p.write(e, scope, decl)
}

func autoPrefix(i int) string {
	const letters = "ghijkm"
	if i < len(letters) {
		return letters[i : i+1]
	}
	return "p" + strconv.Itoa(i)
}

func (p *prefixed) write(e *Element, scope map[string]string, decl []xml.Attr) {
	name := qualify(e.Name, scope)
	attrs := decl
	for _, a := range e.Attr {
		attrs = append(attrs, xml.Attr{Name: xml.Name{Local: qualify(a.Name, scope)}, Value: a.Value})
	}
	p.start(name, attrs...)
	p.text(e.Text)
	for _, c := range e.Children {
		p.write(c, scope, nil)
	}
	p.end(name)
}

func qualify(n xml.Name, scope map[string]string) string {
	if n.Space == "" {
		return n.Local
	}
	return scope[n.Space] + ":" + n.Local
}

// toElement turns a body value into an Element: *Element as is, anything
// else through encoding/xml.
func toElement(v any) (*Element, error) {
	if e, ok := v.(*Element); ok {
		return e, nil
	}
	b, err := xml.Marshal(v)
	if err != nil {
		return nil, err
	}
	return ParseElement(bytes.NewReader(b))
}

func attr(name, value string) xml.Attr { return xml.Attr{Name: xml.Name{Local: name}, Value: value} }
