package flows

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/choreokit/choreo/dlq"
)

//go:embed web/*.tmpl web/static/*
var webFS embed.FS

// Page serves the flow index as a small web page: HTML rendered on the
// server from the same View the JSON API answers from, a stylesheet and a
// little JavaScript (copy buttons, local times, rows of the diagram and
// its table lit together), all embedded in the binary. Every page works
// without JavaScript.
//
//	GET  /                                     flows, the most recently active first, with filters (status, type, service, key, since, limit)
//	GET  /find?q=ID|KEY                        the flow a correlation id, event id or key names (or a list when several)
//	GET  /flows/{id}                           one flow as a sequence diagram: a lane per service, an arrow per event and consumer
//	GET  /catalog                              services and event types as a graph, and as a table
//	GET  /services                             services, with their dead letters
//	GET  /services/{group}/deadletters?limit=  a service's dead letters, with the commands that redrive them
//	GET  /services/{group}/deadletters/{partition}/{offset}
//	GET  /services/{group}/deadletters/{partition}/{offset}/redrive   asks to confirm a redrive (WithRedrive)
//	POST /services/{group}/deadletters/{partition}/{offset}/redrive   redrives it (WithRedrive; same-origin only)
//	GET  /static/{file}
//
// A bad parameter is answered with a 400 page saying what is wrong, an
// unknown flow or route with a 404 page. Mount it at "/" beside the
// API's Handler (which takes /api/, /metrics and /healthz).
type Page struct {
	view    *View
	log     *slog.Logger
	redrive RedriveFunc
	pages   map[string]*template.Template
	mux     *http.ServeMux

	redriving sync.Mutex // one redrive at a time
}

// RedriveFunc sends one dead letter of a service (consumer group) back to
// it: the dead letter at partition and offset of the group's dead-letter
// topic. It returns what it did, as text for a person (the command's
// report). `choreo flows --allow-redrive` runs `choreo dlq redrive GROUP
// PARTITION:OFFSET --yes` with it.
type RedriveFunc func(ctx context.Context, group string, partition int32, offset int64) (report string, err error)

// PageOption configures NewPage.
type PageOption func(*Page)

// WithRedrive lets the page redrive a dead letter: the dead letter's page
// gets a button, a confirmation page and a POST that calls f. POSTs from
// another origin are refused (http.CrossOriginProtection). Without it
// the page only shows the commands to copy.
func WithRedrive(f RedriveFunc) PageOption { return func(p *Page) { p.redrive = f } }

// PageLogger sets the logger of request failures (slog.Default()).
func PageLogger(l *slog.Logger) PageOption { return func(p *Page) { p.log = l } }

// Bounds of the page's inputs.
const (
	maxParamLen   = 256  // one query parameter or path segment
	maxQueryLen   = 4096 // the whole query string
	maxListLimit  = 1000 // flows or dead letters on one page
	redriveTimout = 2 * time.Minute
)

// NewPage returns the web page over v.
func NewPage(v *View, opts ...PageOption) *Page {
	p := &Page{view: v, log: slog.Default(), mux: http.NewServeMux()}
	for _, o := range opts {
		o(p)
	}
	p.pages = map[string]*template.Template{}
	for _, name := range []string{"list", "find", "flow", "catalog", "services", "deadletters", "deadletter", "redrive", "error"} {
		p.pages[name] = template.Must(template.New(name).Funcs(pageFuncs).ParseFS(webFS, "web/layout.tmpl", "web/"+name+".tmpl"))
	}
	static, err := fs.Sub(webFS, "web/static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix("/static", http.FileServerFS(static))
	m := p.mux
	m.HandleFunc("GET /{$}", p.list)
	m.HandleFunc("GET /find", p.find)
	m.HandleFunc("GET /flows/{id}", p.flow)
	m.HandleFunc("GET /catalog", p.catalog)
	m.HandleFunc("GET /services", p.services)
	m.HandleFunc("GET /services/{group}/deadletters", p.deadLetters)
	m.HandleFunc("GET /services/{group}/deadletters/{partition}/{offset}", p.deadLetter)
	m.HandleFunc("GET /services/{group}/deadletters/{partition}/{offset}/redrive", p.confirmRedrive)
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.errorPage(w, http.StatusForbidden, "Refused",
			"This request came from another site (its Origin or Sec-Fetch-Site header says so): a redrive is only accepted from this page itself.")
	}))
	m.Handle("POST /services/{group}/deadletters/{partition}/{offset}/redrive", cop.Handler(http.HandlerFunc(p.runRedrive)))
	m.HandleFunc("GET /static/{file}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		files.ServeHTTP(w, r)
	})
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		p.errorPage(w, http.StatusNotFound, "Not found", fmt.Sprintf("There is no page %s %s here.", r.Method, r.URL.Path))
	})
	return p
}

// ServeHTTP serves the page.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Everything is served from here: no inline script or style, no
	// other origin, no framing.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	if len(r.URL.RawQuery) > maxQueryLen {
		p.errorPage(w, http.StatusBadRequest, "Bad request", fmt.Sprintf("The query string is %d bytes long; at most %d are read.", len(r.URL.RawQuery), maxQueryLen))
		return
	}
	p.mux.ServeHTTP(w, r)
}

// webCommon is what every page's layout reads.
type webCommon struct {
	Title   string
	Nav     string // the current view: flows, stuck, catalog, services
	Redrive bool   // the page may redrive dead letters
}

func (p *Page) base(title, nav string) webCommon {
	return webCommon{Title: title, Nav: nav, Redrive: p.redrive != nil}
}

// render writes a page; a template failure is a 500 with nothing half
// written.
func (p *Page) render(w http.ResponseWriter, status int, name string, data any) {
	var b bytes.Buffer
	if err := p.pages[name].ExecuteTemplate(&b, "layout", data); err != nil {
		p.log.Error("flows page: render failed", "page", name, "err", err)
		http.Error(w, "the page could not be rendered: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// errorData is the error page's.
type errorData struct {
	webCommon
	Status  int
	Message string
}

func (p *Page) errorPage(w http.ResponseWriter, status int, title, msg string) {
	p.render(w, status, "error", errorData{webCommon: webCommon{Title: title, Redrive: p.redrive != nil}, Status: status, Message: msg})
}

// fail answers err: a 400 page for a bad parameter, 404 for ErrNotFound,
// 500 otherwise.
func (p *Page) fail(w http.ResponseWriter, r *http.Request, err error) {
	var br badRequest
	switch {
	case errors.As(err, &br):
		p.errorPage(w, http.StatusBadRequest, "Bad request", br.msg)
	case errors.Is(err, ErrNotFound):
		p.errorPage(w, http.StatusNotFound, "Not found", err.Error())
	case r.Context().Err() != nil:
		// the browser went away
	default:
		p.log.Error("flows page: request failed", "path", r.URL.Path, "err", err)
		p.errorPage(w, http.StatusInternalServerError, "The index did not answer", err.Error())
	}
}

// params checks that q has only the parameters named, each at most once.
func webParams(q url.Values, names ...string) error {
	for k, vs := range q {
		if !slices.Contains(names, k) {
			return badf("unknown parameter %q: this page takes %s", webCut(k, 40), strings.Join(names, ", "))
		}
		if len(vs) > 1 {
			return badf("parameter %q is given %d times: give it once", k, len(vs))
		}
	}
	return nil
}

// text checks a parameter or path segment: printable UTF-8 text of at most
// maxParamLen bytes, spaces trimmed.
func webText(name, s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) > maxParamLen {
		return "", badf("%s is %d bytes long: at most %d", name, len(s), maxParamLen)
	}
	if !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl) {
		return "", badf("%s %q is not printable text", name, s)
	}
	return s, nil
}

// limit reads the limit parameter: 1 to most, def when absent.
func webLimit(q url.Values, def, most int) (int, error) {
	s := strings.TrimSpace(q.Get("limit"))
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > most {
		return 0, badf("limit %q: want a number from 1 to %d", webCut(s, 40), most)
	}
	return n, nil
}

// cut shortens s to n runes, with an ellipsis.
func webCut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// webOption is one choice of a select.
type webOption struct {
	Value, Label string
	Selected     bool
}

func webOptions(current string, pairs ...string) []webOption {
	var out []webOption
	found := false
	for i := 0; i+1 < len(pairs); i += 2 {
		sel := pairs[i] == current
		found = found || sel
		out = append(out, webOption{Value: pairs[i], Label: pairs[i+1], Selected: sel})
	}
	if !found && current != "" { // a value typed in the URL: keep it
		out = append(out, webOption{Value: current, Label: current, Selected: true})
	}
	return out
}

// listFilter is the list's filters as given.
type listFilter struct {
	Status, Type, Service, Key, Since string
	Limit                             int
}

// Active reports whether any filter narrows the list.
func (f listFilter) Active() bool {
	return f.Status != "" || f.Type != "" || f.Service != "" || f.Key != "" || f.Since != ""
}

type listData struct {
	webCommon
	Filter      listFilter
	Statuses    []webOption
	Sinces      []webOption
	Limits      []webOption
	Types       []string // for the filter's suggestions
	Services    []string
	Flows       []FlowItem
	Criteria    Criteria
	Stuck       int // flows stuck now, all of them
	DeadLetters int // of which with a dead letter
	Records     int64
	FlowCount   int64
	More        bool // the list was cut at the limit
	Now         time.Time
}

func (p *Page) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := webParams(q, "status", "type", "service", "key", "since", "limit"); err != nil {
		p.fail(w, r, err)
		return
	}
	var f listFilter
	var err error
	for _, x := range []struct {
		name string
		dst  *string
	}{{"status", &f.Status}, {"type", &f.Type}, {"service", &f.Service}, {"key", &f.Key}, {"since", &f.Since}} {
		if *x.dst, err = webText(x.name, q.Get(x.name)); err != nil {
			p.fail(w, r, err)
			return
		}
	}
	if f.Limit, err = webLimit(q, 100, maxListLimit); err != nil {
		p.fail(w, r, err)
		return
	}
	o := ListOptions{FlowFilter: FlowFilter{Type: f.Type, Service: f.Service, Key: f.Key, Limit: f.Limit}}
	switch s := Status(f.Status); s {
	case "", StatusRunning, StatusCompleted, StatusStuck, StatusDeadLetter:
		o.Status = s
	default:
		p.fail(w, r, badf("status %q: want running, completed, stuck or dead_letter (or nothing, for every flow)", f.Status))
		return
	}
	now := p.view.now()
	if o.Since, err = ParseSince(f.Since, now); err != nil {
		p.fail(w, r, badf("since %v", err))
		return
	}
	ctx := r.Context()
	list, err := p.view.Flows(ctx, o)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	l, err := p.view.learn(ctx)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	svcs, err := p.view.Services(ctx)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	stuck, err := p.view.Stuck(ctx, Thresholds{}, 0)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	recs, nflows, err := p.view.store.Counts(ctx)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	title, nav := "Flows", "flows"
	if o.Status == StatusStuck {
		title, nav = "Stuck flows", "stuck"
	}
	d := listData{webCommon: p.base(title, nav), Filter: f, Flows: list.Flows, Criteria: list.Criteria,
		Types: l.seen, Records: recs, FlowCount: nflows, More: len(list.Flows) == f.Limit, Now: now,
		Statuses: webOptions(f.Status, "", "any", "running", "running", "completed", "completed", "stuck", "stuck", "dead_letter", "with a dead letter"),
		Sinces:   webOptions(f.Since, "", "any time", "15m", "last 15 minutes", "1h", "last hour", "6h", "last 6 hours", "24h", "last 24 hours", "168h", "last 7 days"),
		Limits:   webOptions(strconv.Itoa(f.Limit), "20", "20", "100", "100", "500", "500", "1000", "1000"),
	}
	for _, s := range svcs {
		d.Services = append(d.Services, s.Name)
	}
	for _, it := range stuck.Flows {
		d.Stuck++
		if it.Status == StatusDeadLetter {
			d.DeadLetters++
		}
	}
	p.render(w, http.StatusOK, "list", d)
}

type findData struct {
	webCommon
	Query   string
	Matches []Match
}

func (p *Page) find(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := webParams(q, "q"); err != nil {
		p.fail(w, r, err)
		return
	}
	s, err := webText("q", q.Get("q"))
	if err != nil {
		p.fail(w, r, err)
		return
	}
	if s == "" {
		p.fail(w, r, badf("q: give a correlation id, an event id or a key (an order id) to find"))
		return
	}
	ms, err := p.view.Lookup(r.Context(), s, 50)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	switch len(ms) {
	case 0:
		p.errorPage(w, http.StatusNotFound, "Not found", fmt.Sprintf("No flow, event or key %q in the index.", s))
	case 1:
		http.Redirect(w, r, flowHref(ms[0].CorrelationID), http.StatusSeeOther)
	default:
		p.render(w, http.StatusOK, "find", findData{webCommon: p.base("Find "+webCut(s, 40), ""), Query: s, Matches: ms})
	}
}

// flowData is the flow page's.
type flowData struct {
	webCommon
	Flow    Flow
	Diagram diagram
	Now     time.Time
}

func (p *Page) flow(w http.ResponseWriter, r *http.Request) {
	if err := webParams(r.URL.Query()); err != nil {
		p.fail(w, r, err)
		return
	}
	id, err := webText("flow id", r.PathValue("id"))
	if err != nil {
		p.fail(w, r, err)
		return
	}
	f, err := p.view.Flow(r.Context(), id, Thresholds{})
	if errors.Is(err, ErrNotFound) {
		p.errorPage(w, http.StatusNotFound, "Not found",
			fmt.Sprintf("No flow %q in the index: it may be older than the retention, or not a correlation id (the search box takes event ids and keys too).", id))
		return
	}
	if err != nil {
		p.fail(w, r, err)
		return
	}
	title := "Flow " + webCut(id, 16)
	if f.RootType != "" {
		title = shortType(f.RootType) + " " + webCut(f.RootKey, 24)
	}
	p.render(w, http.StatusOK, "flow", flowData{webCommon: p.base(title, ""), Flow: f, Diagram: buildDiagram(f), Now: p.view.now()})
}

type catalogData struct {
	webCommon
	Catalog Catalog
	Graph   graphView
}

func (p *Page) catalog(w http.ResponseWriter, r *http.Request) {
	if err := webParams(r.URL.Query()); err != nil {
		p.fail(w, r, err)
		return
	}
	c, err := p.view.Catalog(r.Context(), false)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	p.render(w, http.StatusOK, "catalog", catalogData{webCommon: p.base("Catalog", "catalog"), Catalog: c, Graph: buildGraph(c)})
}

type servicesData struct {
	webCommon
	Services []ServiceInfo
}

func (p *Page) services(w http.ResponseWriter, r *http.Request) {
	if err := webParams(r.URL.Query()); err != nil {
		p.fail(w, r, err)
		return
	}
	s, err := p.view.Services(r.Context())
	if err != nil {
		p.fail(w, r, err)
		return
	}
	p.render(w, http.StatusOK, "services", servicesData{webCommon: p.base("Services", "services"), Services: s})
}

// group reads the {group} path segment: a consumer group name that a
// dead-letter topic can be made of.
func webGroup(r *http.Request) (string, error) {
	g, err := webText("service", r.PathValue("group"))
	if err != nil {
		return "", err
	}
	if _, err := dlq.TopicFor(g); err != nil {
		return "", badf("service %q: not a consumer group name a dead-letter topic can be made of: %v", g, err)
	}
	return g, nil
}

type deadLettersData struct {
	webCommon
	Group       string
	Topic       string
	DeadLetters []DeadLetter
	Open        int // not redriven
	Limit       int
	More        bool
}

func (p *Page) deadLetters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := webParams(q, "limit"); err != nil {
		p.fail(w, r, err)
		return
	}
	g, err := webGroup(r)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	n, err := webLimit(q, 100, maxListLimit)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	dls, err := p.view.DeadLetters(r.Context(), g, n)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	d := deadLettersData{webCommon: p.base("Dead letters of "+g, "services"), Group: g, Topic: dlq.Topic(g), DeadLetters: dls,
		Limit: n, More: len(dls) == n}
	for _, x := range dls {
		if !x.Redriven {
			d.Open++
		}
	}
	p.render(w, http.StatusOK, "deadletters", d)
}

// maxDeadLetterScan is how many of a service's most recent dead letters
// the page of one dead letter looks among.
const maxDeadLetterScan = 10000

// findDeadLetter reads the path of one dead letter and finds it.
func (p *Page) findDeadLetter(r *http.Request) (DeadLetter, error) {
	g, err := webGroup(r)
	if err != nil {
		return DeadLetter{}, err
	}
	ps, os := r.PathValue("partition"), r.PathValue("offset")
	part, err := strconv.ParseInt(ps, 10, 32)
	if err != nil || part < 0 {
		return DeadLetter{}, badf("partition %q: want a number from 0", webCut(ps, 40))
	}
	off, err := strconv.ParseInt(os, 10, 64)
	if err != nil || off < 0 {
		return DeadLetter{}, badf("offset %q: want a number from 0", webCut(os, 40))
	}
	dls, err := p.view.DeadLetters(r.Context(), g, maxDeadLetterScan)
	if err != nil {
		return DeadLetter{}, err
	}
	for _, d := range dls {
		if d.Partition == int32(part) && d.Offset == off {
			return d, nil
		}
	}
	return DeadLetter{}, fmt.Errorf("no dead letter of %s at %s partition %d offset %d in the index (among its %d most recent): %w",
		g, dlq.Topic(g), part, off, maxDeadLetterScan, ErrNotFound)
}

type deadLetterData struct {
	webCommon
	DL     DeadLetter
	Href   string // of the dead letter's page
	Topic  string // the redrive topic
	Report string // what a redrive did
	Err    string // why it failed
}

func (p *Page) deadLetter(w http.ResponseWriter, r *http.Request) {
	if err := webParams(r.URL.Query()); err != nil {
		p.fail(w, r, err)
		return
	}
	d, err := p.findDeadLetter(r)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	p.render(w, http.StatusOK, "deadletter", p.deadLetterData(d, "Dead letter"))
}

func (p *Page) deadLetterData(d DeadLetter, title string) deadLetterData {
	return deadLetterData{webCommon: p.base(fmt.Sprintf("%s %s %d:%d", title, d.Group, d.Partition, d.Offset), "services"),
		DL: d, Href: dlHref(d.Group, d.Partition, d.Offset), Topic: dlq.RedriveTopic(d.Group)}
}

// redriveOff answers a redrive request when the page may not redrive.
func (p *Page) redriveOff(w http.ResponseWriter) {
	p.errorPage(w, http.StatusForbidden, "Redrive is off",
		"This choreo flows does not redrive from the page: start it with --allow-redrive, or run the command shown on the dead letter's page.")
}

func (p *Page) confirmRedrive(w http.ResponseWriter, r *http.Request) {
	if p.redrive == nil {
		p.redriveOff(w)
		return
	}
	if err := webParams(r.URL.Query()); err != nil {
		p.fail(w, r, err)
		return
	}
	d, err := p.findDeadLetter(r)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	p.render(w, http.StatusOK, "redrive", p.deadLetterData(d, "Redrive"))
}

func (p *Page) runRedrive(w http.ResponseWriter, r *http.Request) {
	if p.redrive == nil {
		p.redriveOff(w)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		p.fail(w, r, badf("the form could not be read: %v", err))
		return
	}
	if r.PostForm.Get("confirm") != "yes" {
		p.fail(w, r, badf("the redrive was not confirmed (confirm=yes): nothing sent"))
		return
	}
	d, err := p.findDeadLetter(r)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	if !p.redriving.TryLock() {
		p.errorPage(w, http.StatusConflict, "A redrive is running", "Another redrive is running from this page: wait for it, then try again.")
		return
	}
	defer p.redriving.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), redriveTimout)
	defer cancel()
	data := p.deadLetterData(d, "Redrive of")
	report, err := p.redrive(ctx, d.Group, d.Partition, d.Offset)
	data.Report = strings.TrimSpace(report)
	status := http.StatusOK
	if err != nil {
		data.Err = err.Error()
		status = http.StatusInternalServerError
		p.log.Warn("flows page: redrive failed", "group", d.Group, "partition", d.Partition, "offset", d.Offset, "err", err)
	} else {
		p.log.Info("flows page: redrove a dead letter", "group", d.Group, "partition", d.Partition, "offset", d.Offset)
	}
	p.render(w, status, "redrive", data)
}

// Links between the views.

func flowHref(id string) string { return "/flows/" + url.PathEscape(id) }

func dlHref(group string, partition int32, offset int64) string {
	return fmt.Sprintf("/services/%s/deadletters/%d/%d", url.PathEscape(group), partition, offset)
}

func listHref(kv ...string) string {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	return "/?" + q.Encode()
}

// pageFuncs are the templates' functions.
var pageFuncs = template.FuncMap{
	"short":       shortType,
	"cut":         webCut,
	"flowHref":    flowHref,
	"apiFlowHref": func(id string) string { return "/api/flows/" + url.PathEscape(id) },
	"dlHref":      dlHref,
	"dlsHref":     func(group string) string { return "/services/" + url.PathEscape(group) + "/deadletters" },
	"listHref":    listHref,
	"iso":         func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
	"clock": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05.000") + " UTC"
	},
	"ago":      agoText,
	"offset":   offsetText,
	"duration": func(ms float64) string { return durationText(time.Duration(ms * float64(time.Millisecond))) },
	"statusText": func(s Status) string {
		if s == StatusDeadLetter {
			return "dead letter"
		}
		return string(s)
	},
	"consText": consumptionText,
	"plural": func(n int, one, many string) string {
		if n == 1 {
			return "1 " + one
		}
		return strconv.Itoa(n) + " " + many
	},
	// errText is an error message without the kind it starts with (the
	// page shows the kind beside it).
	"errText": func(kind, msg string) string {
		if m, ok := strings.CutPrefix(msg, kind+": "); ok && kind != "" {
			return m
		}
		return msg
	},
	"glyph": webGlyph,
	"join":  strings.Join,
	"rate":  func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
	"ints": func(xs []int) string {
		s := make([]string, len(xs))
		for i, x := range xs {
			s[i] = strconv.Itoa(x)
		}
		return strings.Join(s, ", ")
	},
	"contains": slices.Contains[[]string],
	"sortedReasons": func(rs []Reason) []Reason {
		out := slices.Clone(rs)
		sort.SliceStable(out, func(i, j int) bool { return out[i].Kind < out[j].Kind })
		return out
	},
}

// agoText says how long before now t was.
func agoText(now, t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	d := now.Sub(t)
	if d < time.Second {
		return "just now"
	}
	return durationText(d) + " ago"
}

// durationText writes d for a person: 850 ms, 2.4 s, 3m20s, 5h12m, 3d4h.
func durationText(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + durationText(-d)
	case d == 0:
		return "0 ms"
	case d < time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + " ms"
	case d < 10*time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + " ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s"
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	default:
		days := int(d / (24 * time.Hour))
		return fmt.Sprintf("%dd%dh", days, int((d-time.Duration(days)*24*time.Hour)/time.Hour))
	}
}

// offsetText is a time since the flow's start: +0, +12 ms, +1.2 s.
func offsetText(ms float64) string {
	if ms == 0 {
		return "+0"
	}
	return "+" + durationText(time.Duration(ms*float64(time.Millisecond)))
}

// consumptionText words a consumption status.
func consumptionText(status string) string {
	switch status {
	case "consumed":
		return "consumed"
	case "pending":
		return "not consumed yet"
	case "retrying":
		return "failed it, retrying"
	case "dead_letter":
		return "dead-lettered it"
	case "redriven":
		return "dead-lettered it, redriven since"
	}
	return status
}

// webGlyph marks a consumption status in the diagram.
func webGlyph(status string) string {
	switch status {
	case "consumed":
		return "✓"
	case "pending":
		return "…"
	case "retrying":
		return "↻"
	case "dead_letter":
		return "✕"
	case "redriven":
		return "↺"
	}
	return "?"
}
