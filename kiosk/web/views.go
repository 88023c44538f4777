package web

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/provstick/provstick/kiosk/store"
)

// The view types are what the pages render and the API returns: plain
// values with JSON names, no secret among them.

// StateCount is how many entries are in one state.
type StateCount struct {
	State string `json:"state"`
	N     int64  `json:"n"`
}

// Event is one line of history: an entry's state change or note, or a
// hello (Hello true, Reason holds what the kiosk made of it).
type Event struct {
	ID      int64     `json:"id,omitempty"`
	At      time.Time `json:"at"`
	PID     string    `json:"pid"` // display form, XXXX-XXXX
	From    string    `json:"from"`
	To      string    `json:"to"`
	Station string    `json:"station,omitempty"`
	Actor   string    `json:"actor,omitempty"`
	Reason  string    `json:"reason"`
	Stick   string    `json:"stick,omitempty"`
	Record  int       `json:"record,omitempty"`
	Machine string    `json:"machine,omitempty"`
	Hello   bool      `json:"hello,omitempty"`
	Peer    string    `json:"peer,omitempty"`
	Retry   int       `json:"retry,omitempty"`
}

// Dashboard is the dashboard's content.
type Dashboard struct {
	// States counts entries in every state, summed over profiles, in life
	// order (zeros included, so the page's cards never move).
	States        []StateCount `json:"states"`
	Machines      int64        `json:"machines"`
	Sticks        int64        `json:"sticks"`
	Hellos        int64        `json:"hellos"`
	Events        int64        `json:"events"`
	Discrepancies int          `json:"discrepancies"` // -1: no reconciler
	Counters      *Counters    `json:"counters,omitempty"`
	Recent        []Event      `json:"recent"`
	At            time.Time    `json:"-"`
}

// Machine is a machine row.
type Machine struct {
	UUID              string    `json:"uuid"`
	Serial            string    `json:"serial"`
	Model             string    `json:"model"`
	Vendor            string    `json:"vendor"`
	AMTVersion        string    `json:"amt_version"`
	ControlMode       string    `json:"control_mode"`
	ProvisioningState string    `json:"provisioning_state"`
	PID               string    `json:"pid"`
	State             string    `json:"state"`
	Reason            string    `json:"reason"`
	Stick             string    `json:"stick"`
	Record            int       `json:"record"`
	UpdatedAt         time.Time `json:"updated_at"`
}

// MachineList is the machines page.
type MachineList struct {
	Query     string    `json:"query"`
	State     string    `json:"state"`
	Machines  []Machine `json:"machines"`
	Truncated bool      `json:"truncated"`
	States    []string  `json:"-"`
}

// MachineInfo is what the store knows of one machine.
type MachineInfo struct {
	UUID              string   `json:"uuid"`
	PID               string   `json:"pid"`
	Serial            string   `json:"serial"`
	Model             string   `json:"model"`
	Vendor            string   `json:"vendor"`
	MACs              []string `json:"macs"`
	EKHash            string   `json:"ek_hash"`
	AMTVersion        string   `json:"amt_version"`
	ControlMode       string   `json:"control_mode"`
	ProvisioningState string   `json:"provisioning_state"`
}

// MachineDetail is one machine's page.
type MachineDetail struct {
	Machine  MachineInfo `json:"machine"`
	Timeline []Event     `json:"timeline"`
}

// Stick is a stick row.
type Stick struct {
	Label            string     `json:"label"`
	Recipe           string     `json:"recipe"`
	Profile          string     `json:"profile"`
	Records          int        `json:"records"`
	Left             int        `json:"left"` // records not yet known consumed
	Low              bool       `json:"low"`
	CreatedAt        time.Time  `json:"created_at"`
	Station          string     `json:"station"`
	BuiltAt          *time.Time `json:"built_at"`
	WrittenAt        *time.Time `json:"written_at"`
	LedgerImportedAt *time.Time `json:"ledger_imported_at"`
	ImageHash        string     `json:"image_hash,omitempty"`
}

// Count is entries of one profile in one state.
type Count struct {
	Profile string `json:"profile"`
	State   string `json:"state"`
	N       int64  `json:"n"`
}

// Pool is the pool page.
type Pool struct {
	Totals []StateCount `json:"totals"`
	Counts []Count      `json:"counts"`
	Low    []Stick      `json:"low"`
}

// DiscrepancyList is the discrepancies page.
type DiscrepancyList struct {
	Enabled  bool          `json:"enabled"`
	List     []Discrepancy `json:"discrepancies"`
	MaxBytes string        `json:"-"`
	Flash    *ImportResult `json:"-"`
	FlashErr string        `json:"-"`
}

func displayPID(p string) string {
	if len(p) == 8 {
		return p[:4] + "-" + p[4:]
	}
	return p
}

func eventView(ev store.WebEvent) Event {
	return Event{ID: ev.ID, At: ev.At, PID: displayPID(ev.PID), From: string(ev.From), To: string(ev.To), Station: ev.Station,
		Actor: ev.Actor, Reason: ev.Reason, Stick: ev.Stick, Record: ev.Record, Machine: ev.Machine}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func stickView(s store.Stick) Stick {
	return Stick{Label: s.Label, Recipe: s.Recipe, Profile: s.Profile, Records: s.Records, Left: s.Unconsumed,
		Low: s.Unconsumed*100 < s.Records*store.LowPercent, CreatedAt: s.CreatedAt, Station: s.Station,
		BuiltAt: timePtr(s.BuiltAt), WrittenAt: timePtr(s.WrittenAt), LedgerImportedAt: timePtr(s.LedgerImportedAt), ImageHash: s.ImageHash}
}

func totals(st store.Status) []StateCount {
	sum := map[store.State]int64{}
	for _, c := range st.Counts {
		sum[c.State] += c.N
	}
	out := make([]StateCount, 0, len(store.States))
	for _, s := range store.States {
		out = append(out, StateCount{State: string(s), N: sum[s]})
	}
	return out
}

// dashboard reads the dashboard's content.
func (s *Server) dashboard(ctx context.Context) (Dashboard, error) {
	st, err := s.o.Store.Status(ctx)
	if err != nil {
		return Dashboard{}, err
	}
	tot, err := s.o.Store.WebTotals(ctx)
	if err != nil {
		return Dashboard{}, err
	}
	evs, err := s.o.Store.WebRecentEvents(ctx, 15)
	if err != nil {
		return Dashboard{}, err
	}
	d := Dashboard{States: totals(st), Machines: tot.Machines, Sticks: tot.Sticks, Hellos: tot.Hellos, Events: tot.Events,
		Discrepancies: -1, Recent: make([]Event, 0, len(evs)), At: s.o.Now().UTC()}
	for _, ev := range evs {
		d.Recent = append(d.Recent, eventView(ev))
	}
	if s.o.Reconciler != nil {
		ds, err := s.o.Reconciler.Discrepancies(ctx)
		if err != nil {
			return Dashboard{}, fmt.Errorf("reading discrepancies: %w", err)
		}
		d.Discrepancies = len(ds)
	}
	if s.o.Counters != nil {
		c := s.o.Counters()
		d.Counters = &c
	}
	return d, nil
}

// machineList searches machines.
func (s *Server) machineList(ctx context.Context, q, state string) (MachineList, error) {
	if len(q) > 200 {
		q = q[:200]
	}
	ml := MachineList{Query: q, State: state, Machines: []Machine{}}
	for _, st := range store.States {
		ml.States = append(ml.States, string(st))
	}
	if state != "" && !slices.Contains(ml.States, state) {
		return ml, fmt.Errorf("%w: state %q: want one of %s", errBadRequest, truncate(state, 20), strings.Join(ml.States, ", "))
	}
	const limit = 500
	ms, err := s.o.Store.WebMachines(ctx, store.WebMachineQuery{Search: q, State: store.State(state), Limit: limit + 1})
	if err != nil {
		return ml, err
	}
	if len(ms) > limit {
		ms, ml.Truncated = ms[:limit], true
	}
	for _, m := range ms {
		ml.Machines = append(ml.Machines, Machine{UUID: m.UUID, Serial: m.DMISerial, Model: m.DMIModel, Vendor: m.DMIVendor,
			AMTVersion: m.AMTVersion, ControlMode: m.ControlMode, ProvisioningState: m.ProvisioningState, PID: displayPID(m.PID),
			State: string(m.State), Reason: m.Reason, Stick: m.Stick, Record: m.Record, UpdatedAt: m.UpdatedAt})
	}
	return ml, nil
}

// machineDetail reads one machine's page; unknown: errNotFound.
func (s *Server) machineDetail(ctx context.Context, uuid string) (MachineDetail, error) {
	if len(uuid) != 36 {
		return MachineDetail{}, fmt.Errorf("%w: machine UUID: want the 36-character form", errNotFound)
	}
	m, items, err := s.o.Store.WebTimeline(ctx, uuid, 200)
	if errors.Is(err, store.ErrNotFound) {
		return MachineDetail{}, fmt.Errorf("%w: no machine %s", errNotFound, uuid)
	}
	if err != nil {
		return MachineDetail{}, err
	}
	d := MachineDetail{Machine: MachineInfo{UUID: m.UUID, PID: displayPID(m.PID), Serial: m.DMISerial, Model: m.DMIModel, Vendor: m.DMIVendor,
		MACs: m.MACs, EKHash: m.EKHash, AMTVersion: m.AMTVersion, ControlMode: m.ControlMode, ProvisioningState: m.ProvisioningState},
		Timeline: make([]Event, 0, len(items))}
	if d.Machine.MACs == nil {
		d.Machine.MACs = []string{}
	}
	for _, it := range items {
		ev := eventView(it.WebEvent)
		ev.Hello, ev.Peer, ev.Retry = it.Hello, it.Peer, it.Retry
		d.Timeline = append(d.Timeline, ev)
	}
	return d, nil
}

func (s *Server) sticks(ctx context.Context) ([]Stick, error) {
	ss, err := s.o.Store.WebSticks(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Stick, 0, len(ss))
	for _, st := range ss {
		out = append(out, stickView(st))
	}
	return out, nil
}

func (s *Server) pool(ctx context.Context) (Pool, error) {
	st, err := s.o.Store.Status(ctx)
	if err != nil {
		return Pool{}, err
	}
	p := Pool{Totals: totals(st), Counts: make([]Count, 0, len(st.Counts)), Low: make([]Stick, 0, len(st.Low))}
	for _, c := range st.Counts {
		p.Counts = append(p.Counts, Count{Profile: c.Profile, State: string(c.State), N: c.N})
	}
	for _, k := range st.Low {
		p.Low = append(p.Low, stickView(k))
	}
	return p, nil
}

func (s *Server) discrepancies(ctx context.Context) (DiscrepancyList, error) {
	dl := DiscrepancyList{Enabled: s.o.Reconciler != nil, List: []Discrepancy{}, MaxBytes: byteSize(s.o.MaxLedgerBytes)}
	if s.o.Reconciler == nil {
		return dl, nil
	}
	ds, err := s.o.Reconciler.Discrepancies(ctx)
	if err != nil {
		return dl, fmt.Errorf("reading discrepancies: %w", err)
	}
	dl.List = append(dl.List, withIDs(ds)...)
	return dl, nil
}

func (s *Server) discrepancy(ctx context.Context, id string) (Discrepancy, error) {
	dl, err := s.discrepancies(ctx)
	if err != nil {
		return Discrepancy{}, err
	}
	for _, d := range dl.List {
		if d.ID == id {
			return d, nil
		}
	}
	return Discrepancy{}, fmt.Errorf("%w: no discrepancy %q", errNotFound, truncate(id, 64))
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
