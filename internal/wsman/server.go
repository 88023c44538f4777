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
	"strconv"
	"sync"
	"time"
)

// ServerOptions configure a Server.
type ServerOptions struct {
	// Realm is the Digest realm, "Digest:" and 32 upper-case hex digits on
	// AMT (spec §4). SetRealm changes it later.
	Realm string
	// Credentials returns the stored HA1 of a user. Required unless
	// Unauthenticated is set.
	Credentials CredentialFunc
	// Unauthenticated serves requests without Digest (tests only).
	Unauthenticated bool
	// Authorize, if set, runs after authentication and routing and before
	// the handler; a non-nil error refuses the request with a
	// wsman:AccessDenied fault (or the *Fault it returns), e.g. a non-admin
	// ACL user calling an admin-only method.
	Authorize func(ctx context.Context, r *Request) error
	// Logger receives envelopes at debug level (secrets masked) and
	// authentication failures at info level. nil → discard.
	Logger *slog.Logger
	// ServerHeader is sent as the HTTP Server header, e.g.
	// "Intel(R) Active Management Technology 7.1.20". "" → none.
	ServerHeader string
	// NonceLifetime is how long a Digest nonce stays fresh; 0 → 5 minutes.
	// Older nonces get 401 with stale=true.
	NonceLifetime time.Duration
	// MaxNonces bounds the remembered nonces (oldest dropped); 0 → 64.
	MaxNonces int
	// MaxEnumerations bounds open enumeration contexts; 0 → 16.
	MaxEnumerations int
	// MaxPullElements caps the items one Pull returns whatever the client
	// asks; 0 → no cap beyond the client's MaxElements.
	MaxPullElements int
	// MaxRequestBytes caps a request body; 0 → DefaultMaxMessageBytes.
	MaxRequestBytes int64
	// Now is the clock (tests); nil → time.Now.
	Now func() time.Time
}

// Request is a parsed, authenticated request as a handler sees it.
type Request struct {
	Header
	// Body is the first element of soap:Body (nil when empty).
	Body *Element
	// Username is the Digest user that sent it ("" when unauthenticated).
	Username string
	// HTTP is the underlying request (remote address, TLS state).
	HTTP *http.Request
}

// Decode unmarshals the request body into v. An empty body is a
// SchemaValidationError fault.
func (r *Request) Decode(v any) error {
	if r.Body == nil {
		return ErrSchemaValidation.WithReason("empty body")
	}
	if err := r.Body.Decode(v); err != nil {
		// The decoder's message may quote values; a reply carries none.
		return ErrSchemaValidation.WithReason("body " + r.Body.Name.Local + " does not match the class schema")
	}
	return nil
}

// Selector returns the value of a required selector, or an
// InvalidSelectors fault naming the one missing.
func (r *Request) Selector(name string) (string, error) {
	v, ok := r.Selectors.Get(name)
	if !ok {
		return "", ErrInvalidSelectors.WithReason("missing selector " + name)
	}
	return v, nil
}

// Handler answers one (resource URI, action) pair. It returns the body of
// the reply (nil for none; *Element or a value encoding/xml marshals) or an
// error: a *Fault is sent as such; ErrDropConnection closes the connection
// without a reply; anything else becomes a wsman:InternalError fault.
type Handler func(ctx context.Context, r *Request) (any, error)

// MethodFunc answers a method call. out's fields become the children of
// <Method>_OUTPUT, followed by ReturnValue = rv. out may be nil.
type MethodFunc func(ctx context.Context, r *Request) (out any, rv Status, err error)

// ErrDropConnection, returned by a handler, makes the server close the
// connection without answering (fault injection in the simulator).
var ErrDropConnection = errors.New("wsman: drop connection")

// Server is an http.Handler answering WS-Management requests for the
// resource URIs registered on it. Register before serving.
type Server struct {
	opts   ServerOptions
	log    *slog.Logger
	digest *digestVerifier

	mu     sync.RWMutex
	realm  string
	routes map[string]map[string]Handler // resource URI → action → handler

	enumMu sync.Mutex
	enums  map[string]*enumState
	order  []string
}

type enumState struct {
	uri     string
	items   []any
	created time.Time
}

// NewServer returns a Server with no resources registered.
func NewServer(o ServerOptions) *Server {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.NonceLifetime <= 0 {
		o.NonceLifetime = 5 * time.Minute
	}
	if o.MaxNonces <= 0 {
		o.MaxNonces = 64
	}
	if o.MaxEnumerations <= 0 {
		o.MaxEnumerations = 16
	}
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxMessageBytes
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		opts:   o,
		log:    log,
		realm:  o.Realm,
		digest: &digestVerifier{lifetime: o.NonceLifetime, max: o.MaxNonces, now: o.Now},
		routes: make(map[string]map[string]Handler),
	}
}

// Realm returns the current Digest realm.
func (s *Server) Realm() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.realm
}

// SetRealm changes the Digest realm (a device whose realm changed).
func (s *Server) SetRealm(realm string) {
	s.mu.Lock()
	s.realm = realm
	s.mu.Unlock()
}

// Handle registers h for action on uri, replacing any earlier handler.
func (s *Server) Handle(uri, action string, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.routes[uri]
	if m == nil {
		m = make(map[string]Handler)
		s.routes[uri] = m
	}
	m[action] = h
}

// HandleGet registers a Get handler; its result is sent as the instance
// (named after the class at the end of uri).
func (s *Server) HandleGet(uri string, h Handler) {
	s.Handle(uri, ActionGet, func(ctx context.Context, r *Request) (any, error) {
		v, err := h(ctx, r)
		if err != nil || v == nil {
			return v, err
		}
		return InstanceOf(uri, v), nil
	})
}

// HandlePut registers a Put handler; the request body is the new instance
// (r.Decode), the result the instance as stored.
func (s *Server) HandlePut(uri string, h Handler) {
	s.Handle(uri, ActionPut, func(ctx context.Context, r *Request) (any, error) {
		v, err := h(ctx, r)
		if err != nil || v == nil {
			return v, err
		}
		return InstanceOf(uri, v), nil
	})
}

// HandleCreate registers a Create handler returning the new instance's
// reference, sent as ResourceCreated.
func (s *Server) HandleCreate(uri string, h func(ctx context.Context, r *Request) (*EndpointReference, error)) {
	s.Handle(uri, ActionCreate, func(ctx context.Context, r *Request) (any, error) {
		ref, err := h(ctx, r)
		if err != nil {
			return nil, err
		}
		if ref == nil {
			return nil, ErrInternal.WithReason("create handler returned no reference")
		}
		return named{name: xml.Name{Space: NSTransfer, Local: "ResourceCreated"}, v: *ref}, nil
	})
}

// HandleDelete registers a Delete handler.
func (s *Server) HandleDelete(uri string, h func(ctx context.Context, r *Request) error) {
	s.Handle(uri, ActionDelete, func(ctx context.Context, r *Request) (any, error) {
		return nil, h(ctx, r)
	})
}

// HandleEnumerate registers an enumeration: h lists the instances when the
// Enumerate arrives; the server keeps them and hands them out on Pull.
func (s *Server) HandleEnumerate(uri string, h func(ctx context.Context, r *Request) ([]any, error)) {
	s.Handle(uri, ActionEnumerate, func(ctx context.Context, r *Request) (any, error) {
		items, err := h(ctx, r)
		if err != nil {
			return nil, err
		}
		wrapped := make([]any, len(items))
		for i, v := range items {
			wrapped[i] = InstanceOf(uri, v)
		}
		id := s.openEnum(uri, wrapped)
		return enumerateResponse{Context: id}, nil
	})
	s.Handle(uri, ActionPull, s.pull)
	s.Handle(uri, ActionRelease, s.release)
}

// HandleMethod registers a method of the class at uri (action
// "<uri>/<method>").
func (s *Server) HandleMethod(uri, method string, h MethodFunc) {
	s.Handle(uri, uri+"/"+method, func(ctx context.Context, r *Request) (any, error) {
		if r.Body == nil || r.Body.Name.Local != method+"_INPUT" {
			return nil, ErrSchemaValidation.WithReason("body is not " + method + "_INPUT")
		}
		out, rv, err := h(ctx, r)
		if err != nil {
			return nil, err
		}
		name := xml.Name{Space: uri, Local: method + "_OUTPUT"}
		el := &Element{Name: name}
		if out != nil {
			b, err := xml.Marshal(named{name: name, v: out})
			if err != nil {
				return nil, fmt.Errorf("encoding %s output: %w", method, err)
			}
			if el, err = ParseElement(bytes.NewReader(b)); err != nil {
				return nil, fmt.Errorf("encoding %s output: %w", method, err)
			}
		}
		el.Children = append(el.Children, &Element{Name: xml.Name{Space: uri, Local: "ReturnValue"}, Text: strconv.FormatUint(uint64(rv), 10)})
		return el, nil
	})
}

// InstanceOf names v as an instance of the class at the end of uri, in the
// class namespace, for a reply or an enumeration item. *Element values keep
// their own name.
func InstanceOf(uri string, v any) any {
	if e, ok := v.(*Element); ok {
		return e
	}
	return named{name: xml.Name{Space: uri, Local: className(uri)}, v: v}
}

type enumerateResponse struct {
	XMLName xml.Name `xml:"http://schemas.xmlsoap.org/ws/2004/09/enumeration EnumerateResponse"`
	Context string   `xml:"EnumerationContext"`
}

type pullResponse struct {
	XMLName       xml.Name  `xml:"http://schemas.xmlsoap.org/ws/2004/09/enumeration PullResponse"`
	Items         pullItems `xml:"Items"`
	Context       string    `xml:"EnumerationContext,omitempty"`
	EndOfSequence *struct{} `xml:"EndOfSequence"`
}

type pullItems []any

func (p pullItems) MarshalXML(enc *xml.Encoder, start xml.StartElement) error {
	if err := enc.EncodeToken(start); err != nil {
		return err
	}
	for _, it := range p {
		if err := enc.Encode(it); err != nil {
			return err
		}
	}
	return enc.EncodeToken(start.End())
}

func (s *Server) openEnum(uri string, items []any) string {
	id := newMessageID()
	s.enumMu.Lock()
	defer s.enumMu.Unlock()
	if s.enums == nil {
		s.enums = make(map[string]*enumState)
	}
	for len(s.order) >= s.opts.MaxEnumerations {
		delete(s.enums, s.order[0])
		s.order = s.order[1:]
	}
	s.enums[id] = &enumState{uri: uri, items: items, created: s.opts.Now()}
	s.order = append(s.order, id)
	return id
}

func (s *Server) closeEnum(id string) {
	delete(s.enums, id)
	for i, x := range s.order {
		if x == id {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
}

type pullRequest struct {
	Context     string `xml:"EnumerationContext"`
	MaxElements int    `xml:"MaxElements"`
}

func (s *Server) pull(_ context.Context, r *Request) (any, error) {
	var p pullRequest
	if err := r.Decode(&p); err != nil {
		return nil, err
	}
	n := p.MaxElements
	if n <= 0 {
		n = 1 // DSP0226: MaxElements defaults to 1
	}
	if m := s.opts.MaxPullElements; m > 0 && n > m {
		n = m
	}
	s.enumMu.Lock()
	defer s.enumMu.Unlock()
	st := s.enums[p.Context]
	if st == nil || st.uri != r.ResourceURI {
		return nil, ErrInvalidEnumContext.WithReason("unknown enumeration context")
	}
	if n > len(st.items) {
		n = len(st.items)
	}
	resp := pullResponse{Items: pullItems(st.items[:n])}
	st.items = st.items[n:]
	if len(st.items) == 0 {
		resp.EndOfSequence = &struct{}{}
		s.closeEnum(p.Context)
	} else {
		resp.Context = p.Context
	}
	return resp, nil
}

func (s *Server) release(_ context.Context, r *Request) (any, error) {
	var p pullRequest
	if err := r.Decode(&p); err != nil {
		return nil, err
	}
	s.enumMu.Lock()
	defer s.enumMu.Unlock()
	if st := s.enums[p.Context]; st == nil || st.uri != r.ResourceURI {
		return nil, ErrInvalidEnumContext.WithReason("unknown enumeration context")
	}
	s.closeEnum(p.Context)
	return nil, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, hr *http.Request) {
	ctx := hr.Context()
	if s.opts.ServerHeader != "" {
		w.Header().Set("Server", s.opts.ServerHeader)
	}
	var user string
	if !s.opts.Unauthenticated {
		realm := s.Realm()
		var res authResult
		if s.opts.Credentials == nil {
			res = authBadCredentials
		} else {
			user, res = s.digest.verify(hr, realm, s.opts.Credentials)
		}
		if res != authOK {
			if res != authMissing {
				s.log.InfoContext(ctx, "wsman digest refused", "remote", hr.RemoteAddr, "user", user, "reason", res.String())
			}
			w.Header().Set("WWW-Authenticate", s.digest.challengeHeader(realm, res == authStale))
			w.Header().Set("Content-Length", "0")
			_, _ = io.Copy(io.Discard, io.LimitReader(hr.Body, s.opts.MaxRequestBytes))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	}
	if hr.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	data, err := io.ReadAll(io.LimitReader(hr.Body, s.opts.MaxRequestBytes+1))
	if err != nil {
		return
	}
	if int64(len(data)) > s.opts.MaxRequestBytes {
		s.writeFault(ctx, w, &Header{}, &Fault{Subcode: xml.Name{Space: NSWSMan, Local: "EncodingLimit"}, Reason: "request too large", HTTPStatus: http.StatusRequestEntityTooLarge})
		return
	}
	msg, err := ParseMessage(data)
	if err != nil {
		s.log.DebugContext(ctx, "wsman unparseable request", "remote", hr.RemoteAddr, "bytes", len(data), "envelope", MaskSecrets(data))
		s.writeFault(ctx, w, &Header{}, ErrSchemaValidation.WithReason("request is not a SOAP 1.2 envelope"))
		return
	}
	s.log.DebugContext(ctx, "wsman request", "remote", hr.RemoteAddr, "user", user, "action", shortAction(msg.Action),
		"class", className(msg.ResourceURI), "envelope", MaskSecrets(data))

	s.mu.RLock()
	actions, ok := s.routes[msg.ResourceURI]
	h := actions[msg.Action]
	s.mu.RUnlock()
	var body any
	switch {
	case msg.Action == "":
		err = &Fault{Subcode: xml.Name{Space: NSAddressing, Local: "MessageInformationHeaderRequired"}, Reason: "no Action header"}
	case !ok:
		err = ErrDestinationUnreachable.WithReason("no resource " + msg.ResourceURI)
	case h == nil:
		err = ErrActionNotSupported.WithReason("action " + msg.Action + " not supported on " + className(msg.ResourceURI))
	default:
		req := &Request{Header: msg.Header, Body: msg.Body, Username: user, HTTP: hr}
		if s.opts.Authorize != nil {
			if aerr := s.opts.Authorize(ctx, req); aerr != nil {
				if _, isFault := errors.AsType[*Fault](aerr); !isFault {
					aerr = ErrAccessDenied.WithReason("access denied")
				}
				err = aerr
				break
			}
		}
		body, err = h(ctx, req)
	}
	if errors.Is(err, ErrDropConnection) {
		s.log.DebugContext(ctx, "wsman dropping connection", "action", shortAction(msg.Action))
		panic(http.ErrAbortHandler)
	}
	if err != nil {
		var f *Fault
		if !errors.As(err, &f) {
			s.log.WarnContext(ctx, "wsman handler failed", "action", msg.Action, "class", className(msg.ResourceURI), "err", err)
			f = ErrInternal.WithReason("internal error")
		}
		s.writeFault(ctx, w, &msg.Header, f)
		return
	}
	s.write(ctx, w, http.StatusOK, &Header{
		Action:      msg.Action + "Response",
		To:          AddressAnonymous,
		RelatesTo:   msg.MessageID,
		MessageID:   newMessageID(),
		ResourceURI: msg.ResourceURI,
	}, body)
}

// faultElement builds a soap:Fault. The subcode QName's prefix is declared
// on its own Value element, so it resolves whatever the writer assigns.
func faultElement(f *Fault) *Element {
	soap := func(local string, children ...*Element) *Element {
		return &Element{Name: xml.Name{Space: NSSOAP, Local: local}, Children: children}
	}
	code := soap("Code", &Element{Name: xml.Name{Space: NSSOAP, Local: "Value"}, Text: "s:" + f.code().Local})
	if f.Subcode.Local != "" {
		v := &Element{Name: xml.Name{Space: NSSOAP, Local: "Value"}, Text: f.Subcode.Local}
		if f.Subcode.Space != "" {
			v.Attr = []xml.Attr{attr("xmlns:f", f.Subcode.Space)}
			v.Text = "f:" + f.Subcode.Local
		}
		code.Children = append(code.Children, soap("Subcode", v))
	}
	text := &Element{Name: xml.Name{Space: NSSOAP, Local: "Text"}, Text: f.Reason,
		Attr: []xml.Attr{{Name: xml.Name{Space: xmlNamespace, Local: "lang"}, Value: "en-US"}}}
	fault := soap("Fault", code, soap("Reason", text))
	if f.Detail != "" {
		d := soap("Detail")
		d.Text = f.Detail
		fault.Children = append(fault.Children, d)
	}
	return fault
}

func (s *Server) writeFault(ctx context.Context, w http.ResponseWriter, req *Header, f *Fault) {
	action := ActionFault
	if f.Subcode.Space == NSWSMan {
		action = ActionWSManFault
	}
	s.write(ctx, w, f.status(), &Header{
		Action:    action,
		To:        AddressAnonymous,
		RelatesTo: req.MessageID,
		MessageID: newMessageID(),
	}, faultElement(f))
}

func (s *Server) write(ctx context.Context, w http.ResponseWriter, status int, h *Header, body any) {
	var buf bytes.Buffer
	if err := writeEnvelope(&buf, h, body); err != nil {
		s.log.WarnContext(ctx, "wsman encoding reply", "err", err)
		buf.Reset()
		status = http.StatusInternalServerError
		_ = writeEnvelope(&buf, &Header{Action: ActionFault, To: AddressAnonymous, MessageID: newMessageID(), RelatesTo: h.RelatesTo},
			faultElement(ErrInternal.WithReason("encoding reply")))
	}
	s.log.DebugContext(ctx, "wsman response", "status", status, "action", shortAction(h.Action), "envelope", MaskSecrets(buf.Bytes()))
	w.Header().Set("Content-Type", "application/soap+xml;charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
