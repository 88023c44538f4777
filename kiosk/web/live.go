package web

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// live streams the dashboard as Server-Sent Events: an event "dashboard"
// with the JSON of /api/v1/dashboard at once and whenever it changes
// (checked every LiveInterval), and a comment every 15 s to keep proxies
// and the connection awake. The browser's EventSource reconnects by
// itself; the stream ends with the request or the server.
func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{}) // a stream outlives the server's write timeout
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: %d\n\n", max(1000, s.o.LiveInterval.Milliseconds()))
	rc.Flush()
	tick := time.NewTicker(s.o.LiveInterval)
	defer tick.Stop()
	var last []byte
	lastWrite := time.Now()
	for {
		d, err := s.sharedDashboard(r.Context())
		if err != nil {
			if r.Context().Err() != nil {
				return
			}
			s.log.Error("live dashboard", "err", err)
		} else if b, err := json.Marshal(d); err == nil && !bytes.Equal(b, last) {
			last = b
			if _, err := fmt.Fprintf(w, "event: dashboard\ndata: %s\n\n", b); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
			lastWrite = time.Now()
		}
		if time.Since(lastWrite) > 15*time.Second {
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
			lastWrite = time.Now()
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

// sharedDashboard is the dashboard, read at most once per half
// LiveInterval whatever the number of open streams, so that browser tabs
// left open do not multiply the load on the store.
func (s *Server) sharedDashboard(ctx context.Context) (Dashboard, error) {
	s.dashMu.Lock()
	defer s.dashMu.Unlock()
	if !s.dashAt.IsZero() && time.Since(s.dashAt) < s.o.LiveInterval/2 {
		return s.dash, nil
	}
	d, err := s.dashboard(ctx)
	if err != nil {
		return Dashboard{}, err
	}
	s.dash, s.dashAt = d, time.Now()
	return d, nil
}
