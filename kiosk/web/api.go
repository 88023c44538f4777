package web

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/provstick/provstick/kiosk/store"
)

// apiRoutes registers /api/v1: the same content as the pages, as JSON.
//
//	GET  /api/v1/dashboard
//	GET  /api/v1/machines?q=&state=
//	GET  /api/v1/machines/{uuid}          machine and timeline
//	GET  /api/v1/sticks
//	GET  /api/v1/pool
//	GET  /api/v1/discrepancies
//	GET  /api/v1/discrepancies/{id}
//	POST /api/v1/ledgers                  multipart field "ledger", or the raw ledger as the body (?name=)
//	GET  /api/v1/settings
//	GET  /api/v1/audit?format=json|csv&after=&since=&until=&limit=
func (s *Server) apiRoutes(mux *http.ServeMux) {
	get := func(path string, f func(r *http.Request) (any, error)) {
		mux.HandleFunc("GET /api/v1/"+path, s.guard(kindAPI, func(w http.ResponseWriter, r *http.Request) {
			v, err := f(r)
			if err != nil {
				s.apiFail(w, r, err)
				return
			}
			writeJSON(w, http.StatusOK, v)
		}))
	}
	get("dashboard", func(r *http.Request) (any, error) { return s.dashboard(r.Context()) })
	get("machines", func(r *http.Request) (any, error) {
		return s.machineList(r.Context(), r.URL.Query().Get("q"), r.URL.Query().Get("state"))
	})
	get("machines/{uuid}", func(r *http.Request) (any, error) { return s.machineDetail(r.Context(), r.PathValue("uuid")) })
	get("sticks", func(r *http.Request) (any, error) { return s.sticks(r.Context()) })
	get("pool", func(r *http.Request) (any, error) { return s.pool(r.Context()) })
	get("discrepancies", func(r *http.Request) (any, error) { return s.discrepancies(r.Context()) })
	get("discrepancies/{id}", func(r *http.Request) (any, error) { return s.discrepancy(r.Context(), r.PathValue("id")) })
	get("settings", func(r *http.Request) (any, error) { return s.settings(), nil })
	mux.HandleFunc("GET /api/v1/audit", s.guard(kindAPI, s.auditExport))
	mux.Handle("POST /api/v1/ledgers", s.limitBody(s.guard(kindAPI, func(w http.ResponseWriter, r *http.Request) {
		res, err := s.importLedger(r)
		if err != nil {
			s.apiFail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, http.StatusNotFound, "no such API endpoint")
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, "internal error")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Write(append(b, '\n'))
}

func (s *Server) apiFail(w http.ResponseWriter, r *http.Request, err error) {
	var mb *http.MaxBytesError
	switch {
	case errors.Is(err, errNotFound):
		writeJSONError(w, http.StatusNotFound, err.Error())
	case errors.As(err, &mb):
		writeJSONError(w, http.StatusRequestEntityTooLarge, err.Error())
	case errors.Is(err, errBadRequest), errors.Is(err, errImport):
		writeJSONError(w, http.StatusBadRequest, err.Error())
	default:
		s.log.Error("web API request", "path", r.URL.Path, "err", err)
		writeJSONError(w, http.StatusInternalServerError, "the kiosk could not read its store; see its log")
	}
}

// errImport marks a ledger the reconciler refused.
var errImport = errors.New("ledger import")

// sanitizeName keeps a printable base name of at most 200 bytes.
func sanitizeName(n string) string {
	n = filepath.Base(strings.ReplaceAll(n, `\`, "/"))
	n = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, n)
	if len(n) > 200 {
		n = n[:200]
	}
	if n == "" || n == "." || n == "/" {
		n = "upload"
	}
	return n
}

// importLedger reads the uploaded ledger (multipart field "ledger", else
// the body) within MaxLedgerBytes and hands it to the reconciler.
func (s *Server) importLedger(r *http.Request) (ImportResult, error) {
	if s.o.Reconciler == nil {
		return ImportResult{}, fmt.Errorf("%w: reconciliation is not configured on this kiosk", errBadRequest)
	}
	var name string
	var data []byte
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		if err := r.ParseMultipartForm(s.o.MaxLedgerBytes + 64<<10); err != nil {
			var mb *http.MaxBytesError
			if errors.As(err, &mb) {
				return ImportResult{}, fmt.Errorf("%w: the upload is larger than %s", errBadRequest, byteSize(s.o.MaxLedgerBytes))
			}
			return ImportResult{}, fmt.Errorf("%w: reading the upload: %w", errBadRequest, err)
		}
		f, fh, err := r.FormFile("ledger")
		if err != nil {
			return ImportResult{}, fmt.Errorf("%w: no file in the form field \"ledger\"", errBadRequest)
		}
		defer f.Close()
		if fh.Size > s.o.MaxLedgerBytes {
			return ImportResult{}, fmt.Errorf("%w: %s is larger than %s", errBadRequest, sanitizeName(fh.Filename), byteSize(s.o.MaxLedgerBytes))
		}
		name = sanitizeName(fh.Filename)
		if data, err = io.ReadAll(io.LimitReader(f, s.o.MaxLedgerBytes+1)); err != nil {
			return ImportResult{}, fmt.Errorf("%w: reading %s: %w", errBadRequest, name, err)
		}
	} else {
		name = sanitizeName(r.URL.Query().Get("name"))
		var err error
		if data, err = io.ReadAll(io.LimitReader(r.Body, s.o.MaxLedgerBytes+1)); err != nil {
			var mb *http.MaxBytesError
			if errors.As(err, &mb) {
				return ImportResult{}, fmt.Errorf("%w: the upload is larger than %s", errBadRequest, byteSize(s.o.MaxLedgerBytes))
			}
			return ImportResult{}, fmt.Errorf("%w: reading the upload: %w", errBadRequest, err)
		}
	}
	if int64(len(data)) > s.o.MaxLedgerBytes {
		return ImportResult{}, fmt.Errorf("%w: %s is larger than %s", errBadRequest, name, byteSize(s.o.MaxLedgerBytes))
	}
	if len(data) == 0 {
		return ImportResult{}, fmt.Errorf("%w: %s is empty", errBadRequest, name)
	}
	res, err := s.o.Reconciler.ImportLedger(r.Context(), name, bytes.NewReader(data))
	if err != nil {
		s.log.Warn("ledger import refused", "source", name, "user", who(r).user, "err", err)
		return ImportResult{}, fmt.Errorf("%w: %s: %w", errImport, name, err)
	}
	if res.Source == "" {
		res.Source = name
	}
	s.log.Info("ledger imported", "source", name, "stick", res.Stick, "records", res.Records, "discrepancies", res.Discrepancies, "user", who(r).user)
	return res, nil
}

// auditHeader is the CSV export's first line.
var auditHeader = []string{"id", "at", "pid", "from", "to", "station", "actor", "reason", "stick", "record", "machine"}

// csvCell defuses a cell a spreadsheet would run as a formula.
func csvCell(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}

func parseTimeParam(q, name string) (time.Time, error) {
	if q == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, q)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %s=%q: want an RFC 3339 time", errBadRequest, name, truncate(q, 40))
	}
	return t, nil
}

// auditExport streams the store's event history as CSV or JSON (an array),
// oldest first: the audit log of every state change and provisioning step.
func (s *Server) auditExport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	format := q.Get("format")
	if format == "" {
		format = "json"
	}
	var aq store.WebAuditQuery
	var err error
	if v := q.Get("after"); v != "" {
		if aq.AfterID, err = strconv.ParseInt(v, 10, 64); err != nil || aq.AfterID < 0 {
			s.auditBad(w, r, fmt.Errorf("%w: after=%q: want an event id", errBadRequest, truncate(v, 20)))
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		if aq.Limit, err = strconv.Atoi(v); err != nil || aq.Limit < 0 {
			s.auditBad(w, r, fmt.Errorf("%w: limit=%q: want a count", errBadRequest, truncate(v, 20)))
			return
		}
	}
	if aq.Since, err = parseTimeParam(q.Get("since"), "since"); err != nil {
		s.auditBad(w, r, err)
		return
	}
	if aq.Until, err = parseTimeParam(q.Get("until"), "until"); err != nil {
		s.auditBad(w, r, err)
		return
	}
	stamp := s.o.Now().UTC().Format("20060102-150405")
	// A failure after the first byte cannot change the status any more:
	// the stream then ends early and the error is logged.
	switch format {
	case "csv":
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="provstick-audit-`+stamp+`.csv"`)
		cw := csv.NewWriter(w)
		cw.Write(auditHeader)
		err = s.o.Store.WebAuditEvents(r.Context(), aq, func(ev store.WebEvent) error {
			return cw.Write([]string{strconv.FormatInt(ev.ID, 10), ev.At.UTC().Format(time.RFC3339Nano), displayPID(ev.PID), string(ev.From), string(ev.To),
				csvCell(ev.Station), csvCell(ev.Actor), csvCell(ev.Reason), csvCell(ev.Stick), strconv.Itoa(ev.Record), ev.Machine})
		})
		cw.Flush()
	case "json":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Disposition", `attachment; filename="provstick-audit-`+stamp+`.json"`)
		io.WriteString(w, "[")
		first := true
		err = s.o.Store.WebAuditEvents(r.Context(), aq, func(ev store.WebEvent) error {
			b, err := json.Marshal(eventView(ev))
			if err != nil {
				return err
			}
			if !first {
				io.WriteString(w, ",\n")
			}
			first = false
			_, err = w.Write(b)
			return err
		})
		io.WriteString(w, "]\n")
	default:
		s.auditBad(w, r, fmt.Errorf("%w: format=%q: want csv or json", errBadRequest, truncate(format, 20)))
		return
	}
	if err != nil {
		s.log.Error("exporting the audit log", "err", err)
	}
}

func (s *Server) auditBad(w http.ResponseWriter, r *http.Request, err error) {
	if strings.HasPrefix(r.URL.Path, "/api/") {
		s.apiFail(w, r, err)
		return
	}
	s.fail(w, r, err)
}
