package wsman

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Options configure a Client.
type Options struct {
	// Endpoint is the device URL, "http://10.0.0.5:16992/wsman" or
	// "https://...:16993/wsman". Required.
	Endpoint string
	// Username defaults to "admin"; Password is the MEBx/admin password.
	Username string
	Password Secret
	// HTTPClient carries the requests; its Transport (nil →
	// http.DefaultTransport) is wrapped in a DigestTransport and its other
	// fields (Timeout, CheckRedirect) are kept. For TLS-PSK set a Transport
	// with DialTLSContext. nil → a client with no timeout beyond ctx.
	HTTPClient *http.Client
	// Logger receives request and response envelopes at debug level, with
	// secrets masked. nil → discard.
	Logger *slog.Logger
	// OperationTimeout is sent in every request header; 0 → 60 s.
	OperationTimeout time.Duration
	// MaxResponseBytes caps a reply body; 0 → DefaultMaxMessageBytes.
	MaxResponseBytes int64
	// MaxElements is the Pull batch size; 0 → 100.
	MaxElements int
	// MaxItems caps an enumeration's total items; 0 → 10000.
	MaxItems int
	// PSKEncoding chooses how SetTLSPSK sends PID and PPS; see PSKEncoding.
	PSKEncoding PSKEncoding
}

// Client talks WS-Management to one device. It is safe for concurrent use.
type Client struct {
	endpoint string
	to       string
	http     *http.Client
	digest   *DigestTransport
	log      *slog.Logger
	opTO     string
	maxResp  int64
	maxElem  int
	maxItems int
	pskEnc   PSKEncoding
}

// NewClient checks the options and returns a Client. It does not connect.
func NewClient(o Options) (*Client, error) {
	u, err := url.Parse(o.Endpoint)
	if err != nil {
		return nil, errors.New("wsman: Options.Endpoint does not parse as a URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("wsman: Options.Endpoint %q is not an http or https URL", u.Redacted())
	}
	if u.User != nil {
		return nil, fmt.Errorf("wsman: Options.Endpoint %q holds credentials; use Options.Username and Password", u.Redacted())
	}
	if o.Username == "" {
		o.Username = "admin"
	}
	hc := &http.Client{}
	if o.HTTPClient != nil {
		c := *o.HTTPClient
		hc = &c
	}
	dt := &DigestTransport{Base: hc.Transport, Username: o.Username, Password: o.Password}
	hc.Transport = dt
	c := &Client{
		endpoint: u.String(),
		to:       u.Path,
		http:     hc,
		digest:   dt,
		log:      o.Logger,
		opTO:     "PT60S",
		maxResp:  o.MaxResponseBytes,
		maxElem:  o.MaxElements,
		maxItems: o.MaxItems,
		pskEnc:   o.PSKEncoding,
	}
	if c.to == "" {
		c.to = "/wsman"
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if o.OperationTimeout > 0 {
		c.opTO = formatDuration(o.OperationTimeout)
	}
	if c.maxResp <= 0 {
		c.maxResp = DefaultMaxMessageBytes
	}
	if c.maxElem <= 0 {
		c.maxElem = 100
	}
	if c.maxItems <= 0 {
		c.maxItems = 10000
	}
	return c, nil
}

// Realm returns the Digest realm of the device's last challenge, or "" before
// the first exchange.
func (c *Client) Realm() string { return c.digest.Realm() }

// formatDuration renders an xs:duration in seconds ("PT60S", "PT1.500S").
func formatDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return "PT" + strconv.FormatInt(int64(d/time.Second), 10) + "S"
	}
	return "PT" + strconv.FormatFloat(d.Seconds(), 'f', 3, 64) + "S"
}

// Do sends one request with the given header (Action, ResourceURI and
// Selectors filled in by the caller) and body, and returns the parsed
// reply. A SOAP fault comes back as a *Fault error, a 401 after the Digest
// retry as ErrUnauthorized.
func (c *Client) Do(ctx context.Context, h Header, body any) (*Message, error) {
	h.To = c.to
	h.MessageID = newMessageID()
	h.ReplyTo = AddressAnonymous
	h.OperationTimeout = c.opTO
	var buf bytes.Buffer
	if err := writeEnvelope(&buf, &h, body); err != nil {
		return nil, err
	}
	debug := c.log.Enabled(ctx, slog.LevelDebug)
	if debug {
		c.log.DebugContext(ctx, "wsman request", "action", shortAction(h.Action), "class", className(h.ResourceURI),
			"message_id", h.MessageID, "envelope", MaskSecrets(buf.Bytes()))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(buf.Bytes()))
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Content-Type", "application/soap+xml; charset=utf-8")
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.maxResp+1))
	if err != nil {
		return nil, fmt.Errorf("reading reply: %w", err)
	}
	if int64(len(data)) > c.maxResp {
		return nil, fmt.Errorf("%w: reply larger than %d bytes", ErrMalformed, c.maxResp)
	}
	if debug {
		c.log.DebugContext(ctx, "wsman response", "action", shortAction(h.Action), "class", className(h.ResourceURI),
			"status", resp.StatusCode, "elapsed", time.Since(start), "envelope", MaskSecrets(data))
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, ErrUnauthorized
	}
	msg, perr := ParseMessage(data)
	if perr == nil && msg.Body != nil && msg.Body.Name == (xml.Name{Space: NSSOAP, Local: "Fault"}) {
		f := parseFault(msg.Body)
		f.HTTPStatus = resp.StatusCode
		return nil, f
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &HTTPError{StatusCode: resp.StatusCode, Status: resp.Status}
	}
	if perr != nil {
		return nil, perr
	}
	if msg.RelatesTo != "" && msg.RelatesTo != h.MessageID {
		return nil, fmt.Errorf("%w: reply relates to %q, not to request %q", ErrMalformed, msg.RelatesTo, h.MessageID)
	}
	return msg, nil
}

// named encodes v as an element called name (its fields become children in
// name's namespace). v nil → an empty element.
type named struct {
	name xml.Name
	v    any
}

func (n named) MarshalXML(enc *xml.Encoder, _ xml.StartElement) error {
	start := xml.StartElement{Name: n.name}
	if n.v == nil {
		if err := enc.EncodeToken(start); err != nil {
			return err
		}
		return enc.EncodeToken(start.End())
	}
	return enc.EncodeElement(n.v, start)
}

func opError(op, uri string, err error) error {
	return fmt.Errorf("wsman %s %s: %w", op, className(uri), err)
}

// Get reads one instance and decodes it into out (a struct whose fields are
// tagged with the property names, or *Element).
func (c *Client) Get(ctx context.Context, uri string, sel SelectorSet, out any) error {
	m, err := c.Do(ctx, Header{Action: ActionGet, ResourceURI: uri, Selectors: sel}, nil)
	if err != nil {
		return opError("get", uri, err)
	}
	if err := decodeBody(m, out); err != nil {
		return opError("get", uri, err)
	}
	return nil
}

// Put replaces an instance with in (whose fields become the class's
// properties) and decodes the instance the device returns into out (nil to
// ignore it).
func (c *Client) Put(ctx context.Context, uri string, sel SelectorSet, in, out any) error {
	body := named{name: xml.Name{Space: uri, Local: className(uri)}, v: in}
	m, err := c.Do(ctx, Header{Action: ActionPut, ResourceURI: uri, Selectors: sel}, body)
	if err != nil {
		return opError("put", uri, err)
	}
	if out != nil && m.Body != nil {
		if err := m.Body.Decode(out); err != nil {
			return opError("put", uri, err)
		}
	}
	return nil
}

// Create makes a new instance from in and returns the reference the device
// assigned (ResourceCreated).
func (c *Client) Create(ctx context.Context, uri string, in any) (*EndpointReference, error) {
	body := named{name: xml.Name{Space: uri, Local: className(uri)}, v: in}
	m, err := c.Do(ctx, Header{Action: ActionCreate, ResourceURI: uri}, body)
	if err != nil {
		return nil, opError("create", uri, err)
	}
	if m.Body == nil || m.Body.Name.Local != "ResourceCreated" {
		return nil, opError("create", uri, fmt.Errorf("%w: reply has no ResourceCreated", ErrMalformed))
	}
	var ref EndpointReference
	if err := m.Body.Decode(&ref); err != nil {
		return nil, opError("create", uri, err)
	}
	return &ref, nil
}

// Delete removes the instance sel names.
func (c *Client) Delete(ctx context.Context, uri string, sel SelectorSet) error {
	if _, err := c.Do(ctx, Header{Action: ActionDelete, ResourceURI: uri, Selectors: sel}, nil); err != nil {
		return opError("delete", uri, err)
	}
	return nil
}

type enumerateBody struct {
	XMLName xml.Name `xml:"http://schemas.xmlsoap.org/ws/2004/09/enumeration Enumerate"`
}

type pullBody struct {
	XMLName            xml.Name `xml:"http://schemas.xmlsoap.org/ws/2004/09/enumeration Pull"`
	EnumerationContext string   `xml:"EnumerationContext"`
	MaxElements        int      `xml:"MaxElements,omitempty"`
}

// Enumerate lists every instance of a class: Enumerate, then Pull until
// EndOfSequence. Each item is returned as an *Element; decode with
// Element.Decode or use EnumerateAs.
func (c *Client) Enumerate(ctx context.Context, uri string, sel SelectorSet) ([]*Element, error) {
	m, err := c.Do(ctx, Header{Action: ActionEnumerate, ResourceURI: uri, Selectors: sel}, enumerateBody{})
	if err != nil {
		return nil, opError("enumerate", uri, err)
	}
	if m.Body == nil || m.Body.Name.Local != "EnumerateResponse" {
		return nil, opError("enumerate", uri, fmt.Errorf("%w: reply is not an EnumerateResponse", ErrMalformed))
	}
	ctxID := m.Body.ChildText("EnumerationContext")
	var items []*Element
	for ctxID != "" {
		items, ctxID, err = c.Pull(ctx, uri, ctxID, items)
		if err != nil {
			return nil, err
		}
		if len(items) > c.maxItems {
			return nil, opError("enumerate", uri, fmt.Errorf("%w: more than %d items", ErrMalformed, c.maxItems))
		}
	}
	return items, nil
}

// Pull fetches the next batch of an enumeration, appends its items to items
// and returns the context for the next Pull ("" at EndOfSequence).
func (c *Client) Pull(ctx context.Context, uri, enumContext string, items []*Element) ([]*Element, string, error) {
	m, err := c.Do(ctx, Header{Action: ActionPull, ResourceURI: uri},
		pullBody{EnumerationContext: enumContext, MaxElements: c.maxElem})
	if err != nil {
		return items, "", opError("pull", uri, err)
	}
	if m.Body == nil || m.Body.Name.Local != "PullResponse" {
		return items, "", opError("pull", uri, fmt.Errorf("%w: reply is not a PullResponse", ErrMalformed))
	}
	if it := m.Body.Child("Items"); it != nil {
		items = append(items, it.Children...)
	}
	if m.Body.Child("EndOfSequence") != nil {
		return items, "", nil
	}
	next := m.Body.ChildText("EnumerationContext")
	if next == "" {
		return items, "", nil
	}
	return items, next, nil
}

// EnumerateAs enumerates a class and decodes every item into a T.
func EnumerateAs[T any](ctx context.Context, c *Client, uri string, sel SelectorSet) ([]T, error) {
	items, err := c.Enumerate(ctx, uri, sel)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(items))
	for _, it := range items {
		var v T
		if err := it.Decode(&v); err != nil {
			return nil, opError("enumerate", uri, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// Invoke calls method on the class at uri. in's fields become the children
// of <method>_INPUT (nil → no arguments); the reply must be
// <method>_OUTPUT, whose ReturnValue, when not 0, comes back as a
// *MethodError wrapping the Status. out (may be nil) receives the output.
func (c *Client) Invoke(ctx context.Context, uri, method string, sel SelectorSet, in, out any) error {
	body := named{name: xml.Name{Space: uri, Local: method + "_INPUT"}, v: in}
	m, err := c.Do(ctx, Header{Action: uri + "/" + method, ResourceURI: uri, Selectors: sel}, body)
	if err != nil {
		return fmt.Errorf("wsman %s.%s: %w", className(uri), method, err)
	}
	if m.Body == nil || m.Body.Name.Local != method+"_OUTPUT" {
		return fmt.Errorf("wsman %s.%s: %w: reply is not %s_OUTPUT", className(uri), method, ErrMalformed, method)
	}
	rv := m.Body.Child("ReturnValue")
	if rv == nil {
		return fmt.Errorf("wsman %s.%s: %w: no ReturnValue", className(uri), method, ErrMalformed)
	}
	n, err := strconv.ParseUint(rv.Text, 10, 32)
	if err != nil {
		return fmt.Errorf("wsman %s.%s: %w: ReturnValue %q", className(uri), method, ErrMalformed, rv.Text)
	}
	if n != 0 {
		return &MethodError{Class: className(uri), Method: method, Status: Status(n)}
	}
	if out != nil {
		if err := m.Body.Decode(out); err != nil {
			return fmt.Errorf("wsman %s.%s: %w", className(uri), method, err)
		}
	}
	return nil
}

func decodeBody(m *Message, out any) error {
	if m.Body == nil {
		return fmt.Errorf("%w: empty reply body", ErrMalformed)
	}
	if out == nil {
		return nil
	}
	if e, ok := out.(**Element); ok {
		*e = m.Body
		return nil
	}
	return m.Body.Decode(out)
}
