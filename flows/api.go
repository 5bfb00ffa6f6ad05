package flows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// StuckMetric is the name of the gauge of stuck flows on GET /metrics: the
// number of flows that `choreo flows stuck` lists now. Alerting rules
// (deploy/flows/prometheusrule.yaml) and checks of deployment files use
// this name.
const StuckMetric = "choreo_flows_stuck"

// Handler serves the flow index's HTTP JSON API (see docs/FLOWS.md):
//
//	GET /api/flows?status=&type=&service=&key=&since=&before=&limit=&after=&terminal=
//	GET /api/flows/{correlationId}          one flow: status, causal tree, lanes, records
//	GET /api/events/{eventId}               one event and its records
//	GET /api/lookup?q=ID|KEY                the flows a correlation id, event id or key names
//	GET /api/catalog                        event types × producers × consumers, services, graph
//	GET /api/catalog/asyncapi?format=yaml|json
//	GET /api/stuck?after=&terminal=&limit=  stuck flows with reasons
//	GET /api/services                       services (groups and producers)
//	GET /api/services/{group}/deadletters?limit=
//	GET /api/groups                         consumer groups: subscriptions, committed offsets
//	GET /api/stats                          indexer counters and index size
//	GET /metrics                            Prometheus text: choreo_flows_stuck and the indexer's counters
//	GET /healthz                            200 when the store answers
//
// Errors are JSON {"error": "..."} with status 400 (a bad parameter), 404
// (no such flow, event or route) or 500.
type Handler struct {
	view  *View
	stats func() IndexerStats
	log   *slog.Logger
	mux   *http.ServeMux

	metricsMu sync.Mutex
	metricsAt time.Time
	stuckN    int
	stuckBy   map[string]int
	stuckCrit Criteria
}

// HandlerOption configures NewHandler.
type HandlerOption func(*Handler)

// WithIndexer adds the indexer's counters to /api/stats and /metrics.
func WithIndexer(ix *Indexer) HandlerOption { return func(h *Handler) { h.stats = ix.Stats } }

// HandlerLogger sets the logger of request failures (slog.Default()).
func HandlerLogger(l *slog.Logger) HandlerOption { return func(h *Handler) { h.log = l } }

// NewHandler returns the API over v.
func NewHandler(v *View, opts ...HandlerOption) *Handler {
	h := &Handler{view: v, log: slog.Default(), mux: http.NewServeMux()}
	for _, o := range opts {
		o(h)
	}
	m := h.mux
	m.HandleFunc("GET /api/flows", h.flows)
	m.HandleFunc("GET /api/flows/{id}", h.flow)
	m.HandleFunc("GET /api/events/{id}", h.event)
	m.HandleFunc("GET /api/lookup", h.lookup)
	m.HandleFunc("GET /api/catalog", h.catalog)
	m.HandleFunc("GET /api/catalog/asyncapi", h.asyncapi)
	m.HandleFunc("GET /api/stuck", h.stuck)
	m.HandleFunc("GET /api/services", h.services)
	m.HandleFunc("GET /api/services/{group}/deadletters", h.deadLetters)
	m.HandleFunc("GET /api/groups", h.groups)
	m.HandleFunc("GET /api/stats", h.statsJSON)
	m.HandleFunc("GET /metrics", h.metrics)
	m.HandleFunc("GET /healthz", h.healthz)
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no API route %s %s (see docs/FLOWS.md)", r.Method, r.URL.Path))
	})
	return h
}

// ServeHTTP serves the API.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// View returns the view the handler serves.
func (h *Handler) View() *View { return h.view }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// apiError is the body of an error answer.
type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Error: msg})
}

// fail answers err: 404 for ErrNotFound, 400 for a badRequest, else 500.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var br badRequest
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.As(err, &br):
		writeError(w, http.StatusBadRequest, br.msg)
	case r.Context().Err() != nil:
		// the client went away
	default:
		h.log.Error("flows API: request failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

type badRequest struct{ msg string }

func (b badRequest) Error() string { return b.msg }

func badf(format string, args ...any) error { return badRequest{msg: fmt.Sprintf(format, args...)} }

// ParseSince reads a since parameter: an RFC 3339 time, or a duration
// back from now ("1h" is the last hour).
func ParseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time or a duration such as 1h", s)
}

// thresholds reads after and terminal.
func thresholds(q url.Values) (Thresholds, error) {
	var th Thresholds
	if s := q.Get("after"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return th, badf("after %q: want a positive duration such as 2m", s)
		}
		th.After = d
	}
	if q.Has("terminal") {
		th.Terminal = []string{}
		for _, t := range strings.Split(q.Get("terminal"), ",") {
			if t = strings.TrimSpace(t); t != "" {
				th.Terminal = append(th.Terminal, t)
			}
		}
	}
	return th, nil
}

func limitParam(q url.Values, def, most int) (int, error) {
	s := q.Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > most {
		return 0, badf("limit %q: want 1 to %d", s, most)
	}
	return n, nil
}

func (h *Handler) flows(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var o ListOptions
	var err error
	if o.Thresholds, err = thresholds(q); err != nil {
		h.fail(w, r, err)
		return
	}
	if o.Limit, err = limitParam(q, 100, 10000); err != nil {
		h.fail(w, r, err)
		return
	}
	now := h.view.now()
	if o.Since, err = ParseSince(q.Get("since"), now); err != nil {
		h.fail(w, r, badf("since %v", err))
		return
	}
	if o.Before, err = ParseSince(q.Get("before"), now); err != nil {
		h.fail(w, r, badf("before %v", err))
		return
	}
	switch s := Status(q.Get("status")); s {
	case "", StatusRunning, StatusCompleted, StatusStuck, StatusDeadLetter:
		o.Status = s
	default:
		h.fail(w, r, badf("status %q: want running, completed, stuck or dead_letter", s))
		return
	}
	o.Type, o.Service, o.Key = q.Get("type"), q.Get("service"), q.Get("key")
	list, err := h.view.Flows(r.Context(), o)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (h *Handler) flow(w http.ResponseWriter, r *http.Request) {
	th, err := thresholds(r.URL.Query())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	f, err := h.view.Flow(r.Context(), r.PathValue("id"), th)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, f)
}

func (h *Handler) event(w http.ResponseWriter, r *http.Request) {
	e, err := h.view.Event(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

// LookupResult is the answer of GET /api/lookup.
type LookupResult struct {
	Query   string  `json:"query"`
	Matches []Match `json:"matches"`
}

func (h *Handler) lookup(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := limitParam(q, 20, 1000)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	s := strings.TrimSpace(q.Get("q"))
	if s == "" {
		h.fail(w, r, badf("q: want a correlation id, an event id or a key"))
		return
	}
	ms, err := h.view.Lookup(r.Context(), s, limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, LookupResult{Query: s, Matches: ms})
}

func (h *Handler) catalog(w http.ResponseWriter, r *http.Request) {
	c, err := h.view.Catalog(r.Context(), false)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (h *Handler) asyncapi(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	format := q.Get("format")
	if format == "" {
		format = "yaml"
	}
	if format != "yaml" && format != "json" {
		h.fail(w, r, badf("format %q: want yaml or json", format))
		return
	}
	c, err := h.view.Catalog(r.Context(), true)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	doc := c.AsyncAPIDocument(q.Get("title"), q.Get("version"))
	var b []byte
	if format == "json" {
		b, err = doc.JSON()
		w.Header().Set("Content-Type", "application/json")
	} else {
		b, err = doc.YAML()
		w.Header().Set("Content-Type", "application/yaml")
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	_, _ = w.Write(b)
}

func (h *Handler) stuck(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	th, err := thresholds(q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	limit, err := limitParam(q, 1000, 10000)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	rep, err := h.view.Stuck(r.Context(), th, limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (h *Handler) services(w http.ResponseWriter, r *http.Request) {
	s, err := h.view.Services(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

// DeadLetterList is the answer of GET /api/services/{group}/deadletters.
type DeadLetterList struct {
	Group       string       `json:"group"`
	Topic       string       `json:"topic"`
	DeadLetters []DeadLetter `json:"deadLetters"`
}

func (h *Handler) deadLetters(w http.ResponseWriter, r *http.Request) {
	limit, err := limitParam(r.URL.Query(), 100, 10000)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	g := r.PathValue("group")
	dls, err := h.view.DeadLetters(r.Context(), g, limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, DeadLetterList{Group: g, Topic: g + ".dlq", DeadLetters: dls})
}

func (h *Handler) groups(w http.ResponseWriter, r *http.Request) {
	gs, err := h.view.store.Groups(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if gs == nil {
		gs = []Group{}
	}
	writeJSON(w, http.StatusOK, gs)
}

// Stats is the answer of GET /api/stats.
type Stats struct {
	Records int64         `json:"records"` // in the index
	Flows   int64         `json:"flows"`
	Indexer *IndexerStats `json:"indexer,omitempty"`
}

func (h *Handler) statsJSON(w http.ResponseWriter, r *http.Request) {
	recs, fl, err := h.view.store.Counts(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	s := Stats{Records: recs, Flows: fl}
	if h.stats != nil {
		st := h.stats()
		s.Indexer = &st
	}
	writeJSON(w, http.StatusOK, s)
}

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if _, _, err := h.view.store.Counts(ctx); err != nil {
		writeError(w, http.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

// metricsTTL is how long the stuck count of /metrics is reused.
const metricsTTL = 5 * time.Second

func (h *Handler) metrics(w http.ResponseWriter, r *http.Request) {
	h.metricsMu.Lock()
	if now := time.Now(); now.Sub(h.metricsAt) > metricsTTL {
		rep, err := h.view.Stuck(r.Context(), Thresholds{}, 10000)
		if err != nil {
			h.metricsMu.Unlock()
			h.fail(w, r, err)
			return
		}
		h.stuckN, h.stuckBy, h.stuckCrit, h.metricsAt = len(rep.Flows), map[string]int{}, rep.Criteria, now
		for _, f := range rep.Flows {
			kinds := map[string]bool{}
			for _, re := range f.Reasons {
				kinds[re.Kind] = true
			}
			for k := range kinds {
				h.stuckBy[k]++
			}
		}
	}
	stuckN, stuckBy, crit := h.stuckN, h.stuckBy, h.stuckCrit
	h.metricsMu.Unlock()
	recs, fl, err := h.view.store.Counts(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var b strings.Builder
	metric := func(name, typ, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	metric(StuckMetric, "gauge", "Flows stuck now: no event within the threshold and the last not terminal, an event a subscribed group has not consumed within it, or a dead letter.")
	fmt.Fprintf(&b, "%s %d\n", StuckMetric, stuckN)
	metric(StuckMetric+"_by_reason", "gauge", "Stuck flows by reason (a flow can have several).")
	for _, k := range []string{ReasonStalled, ReasonUnconsumed, ReasonDeadLetter} {
		fmt.Fprintf(&b, "%s_by_reason{reason=%q} %d\n", StuckMetric, k, stuckBy[k])
	}
	metric("choreo_flows_stuck_threshold_seconds", "gauge", "The threshold after which a flow is stuck, learned or set.")
	fmt.Fprintf(&b, "choreo_flows_stuck_threshold_seconds %g\n", crit.AfterSeconds)
	metric("choreo_flows_index_records", "gauge", "Records in the index.")
	fmt.Fprintf(&b, "choreo_flows_index_records %d\n", recs)
	metric("choreo_flows_index_flows", "gauge", "Flows in the index.")
	fmt.Fprintf(&b, "choreo_flows_index_flows %d\n", fl)
	if h.stats != nil {
		st := h.stats()
		metric("choreo_flows_indexed_records_total", "counter", "Records written to the index since start.")
		fmt.Fprintf(&b, "choreo_flows_indexed_records_total %d\n", st.Indexed)
		metric("choreo_flows_skipped_records_total", "counter", "Records not indexed since start, by reason (no_ce_id, bad_envelope).")
		reasons := []string{SkipNoEventID, SkipBadDeadLeter}
		for k := range st.SkipReasons {
			if k != SkipNoEventID && k != SkipBadDeadLeter {
				reasons = append(reasons, k)
			}
		}
		sort.Strings(reasons[2:])
		for _, k := range reasons {
			fmt.Fprintf(&b, "choreo_flows_skipped_records_total{reason=%q} %d\n", k, st.SkipReasons[k])
		}
		metric("choreo_flows_store_write_errors_total", "counter", "Failed index writes (retried).")
		fmt.Fprintf(&b, "choreo_flows_store_write_errors_total %d\n", st.WriteErrors)
		metric("choreo_flows_group_refreshes_total", "counter", "Reads of the consumer groups' offsets.")
		fmt.Fprintf(&b, "choreo_flows_group_refreshes_total %d\n", st.Refreshes)
		metric("choreo_flows_group_refresh_errors_total", "counter", "Failed reads of the consumer groups' offsets.")
		fmt.Fprintf(&b, "choreo_flows_group_refresh_errors_total %d\n", st.RefreshErrors)
		metric("choreo_flows_pruned_records_total", "counter", "Records deleted past the retention.")
		fmt.Fprintf(&b, "choreo_flows_pruned_records_total %d\n", st.Pruned)
		if !st.LastWrite.IsZero() {
			metric("choreo_flows_last_write_timestamp_seconds", "gauge", "When the index was last written.")
			fmt.Fprintf(&b, "choreo_flows_last_write_timestamp_seconds %d\n", st.LastWrite.Unix())
		}
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = io.WriteString(w, b.String())
}

// Client asks a running flow index (`choreo flows`) over its HTTP API.
type Client struct {
	base string
	http *http.Client
}

// ErrUnreachable is wrapped by the Client's errors when the flow index
// does not answer.
var ErrUnreachable = errors.New("flow index not reachable")

// UnreachableError is the Client's error when the flow index does not
// answer; it matches ErrUnreachable.
type UnreachableError struct {
	URL string
	Err error // why: connection refused, a timeout …
}

// Error says what could not be reached, and why.
func (e *UnreachableError) Error() string {
	return fmt.Sprintf("%v at %s: %v", ErrUnreachable, e.URL, e.Err)
}

// Unwrap returns the cause.
func (e *UnreachableError) Unwrap() error { return e.Err }

// Is makes the error match ErrUnreachable.
func (e *UnreachableError) Is(target error) bool { return target == ErrUnreachable }

// NewClient returns a client of the API at baseURL (http://host:port).
func NewClient(baseURL string) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("flows: %q: want an http:// or https:// URL such as http://127.0.0.1:8080", baseURL)
	}
	return &Client{
		base: strings.TrimSuffix(u.String(), "/"),
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
			ResponseHeaderTimeout: 30 * time.Second,
		}},
	}, nil
}

// URL returns the client's base URL.
func (c *Client) URL() string { return c.base }

// APIError is an error answer of the API.
type APIError struct {
	Status  int
	Message string
}

// Error returns the API's message and status.
func (e *APIError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

// Unwrap makes a 404 match ErrNotFound.
func (e *APIError) Unwrap() error {
	if e.Status == http.StatusNotFound {
		return ErrNotFound
	}
	return nil
}

// get fetches path and decodes its JSON into v (or, v being *[]byte, the
// body as it is).
func (c *Client) get(ctx context.Context, path string, q url.Values, v any) error {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("flows: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &UnreachableError{URL: c.base, Err: unwrapURL(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("flows: read %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var ae apiError
		if json.Unmarshal(body, &ae) != nil || ae.Error == "" {
			ae.Error = strings.TrimSpace(string(body))
			if len(ae.Error) > 200 {
				ae.Error = ae.Error[:200]
			}
			if ae.Error == "" {
				ae.Error = resp.Status
			}
		}
		return &APIError{Status: resp.StatusCode, Message: ae.Error}
	}
	if b, ok := v.(*[]byte); ok {
		*b = body
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("flows: %s answered something else than the flow index's JSON: %w", u, err)
	}
	return nil
}

// unwrapURL drops the *url.Error layer, whose URL the message has already.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func thresholdQuery(th Thresholds) url.Values {
	q := url.Values{}
	if th.After > 0 {
		q.Set("after", th.After.String())
	}
	if th.Terminal != nil {
		q.Set("terminal", strings.Join(th.Terminal, ","))
	}
	return q
}

// Lookup returns the flows that q names (a correlation id, event id or key).
func (c *Client) Lookup(ctx context.Context, q string, limit int) ([]Match, error) {
	var res LookupResult
	if err := c.get(ctx, "/api/lookup", url.Values{"q": {q}, "limit": {strconv.Itoa(limit)}}, &res); err != nil {
		return nil, err
	}
	return res.Matches, nil
}

// Flow returns one flow.
func (c *Client) Flow(ctx context.Context, correlationID string, th Thresholds) (Flow, error) {
	var f Flow
	err := c.get(ctx, "/api/flows/"+url.PathEscape(correlationID), thresholdQuery(th), &f)
	f.Criteria.After = time.Duration(f.Criteria.AfterSeconds * float64(time.Second))
	return f, err
}

// Stuck returns the stuck flows.
func (c *Client) Stuck(ctx context.Context, th Thresholds, limit int) (StuckReport, error) {
	q := thresholdQuery(th)
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var rep StuckReport
	err := c.get(ctx, "/api/stuck", q, &rep)
	rep.Criteria.After = time.Duration(rep.Criteria.AfterSeconds * float64(time.Second))
	return rep, err
}

// Catalog returns the catalog.
func (c *Client) Catalog(ctx context.Context) (Catalog, error) {
	var cat Catalog
	err := c.get(ctx, "/api/catalog", nil, &cat)
	return cat, err
}

// AsyncAPI returns the AsyncAPI document in format yaml or json.
func (c *Client) AsyncAPI(ctx context.Context, format string) ([]byte, error) {
	var b []byte
	err := c.get(ctx, "/api/catalog/asyncapi", url.Values{"format": {format}}, &b)
	return b, err
}

// Stats returns the index's size and the indexer's counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	err := c.get(ctx, "/api/stats", nil, &s)
	return s, err
}
