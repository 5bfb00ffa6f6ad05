package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/flows"
	"github.com/choreokit/choreo/flows/sqlstore"
	"github.com/choreokit/choreo/schema"
)

// The `choreo flows` commands: the flow index (a long-running consumer
// group of its own, an HTTP JSON API), and `flows stuck`, `trace` and
// `catalog`, which ask a running index over that API.

// envFlowsURL names the flow index the asking commands reach.
const envFlowsURL = "CHOREO_FLOWS_URL"

// defaultFlowsURL is where `choreo flows` listens by default.
const defaultFlowsURL = "http://127.0.0.1:8080"

// flowsOptions are the flags of `choreo flows`.
type flowsOptions struct {
	http        string
	dataDir     string
	databaseURL string
	topics      string
	exclude     string
	retention   time.Duration
	group       string
	ignore      string
	refresh     time.Duration
	// the web page (flowsweb.go)
	allowRedrive bool
	registryURL  string
	allowHosts   []string // Host names answered besides loopback ones (hostguard.go)
}

func newFlowsCmd() *cobra.Command {
	var o flowsOptions
	var kafka *kafkaFlags
	var reg *registryFlags
	cmd := &cobra.Command{
		Use:   "flows",
		Short: "Index every flow on the cluster and serve it over HTTP (trace, catalog and stuck ask it)",
		Long: `Index the choreography: read every topic carrying choreo events (the
services' topics and their retry, dead-letter and redrive topics; --topics)
in a consumer group of its own (--group, choreo-flows), keep each event's
metadata (never its payload) in an embedded SQLite file under --data-dir,
or in PostgreSQL when DATABASE_URL (--database-url) is set, and read the
other groups' committed offsets every few seconds to know who has consumed
what. Serve the index as a JSON API and Prometheus metrics on --http until
interrupted. 'choreo trace', 'choreo catalog' and 'choreo flows stuck' ask
it; docs/FLOWS.md describes the API.

The default data directory is choreo/flows/<cluster id> in the user cache
directory ($XDG_CACHE_HOME or ~/.cache on Linux), so the index of one
cluster is never mixed with another's. Offsets are committed after the
index has the records: a restart goes on where it stopped.`,
		Args: usageArgs(cobra.NoArgs, func(args []string) string {
			return fmt.Sprintf("unexpected argument %q (subcommand: stuck)", args[0])
		}),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := kafka.needConfig()
			if err != nil {
				return err
			}
			if err := o.check(); err != nil {
				return err
			}
			o.registryURL = reg.url
			var r *schema.Registry
			if strings.TrimSpace(reg.url) != "" {
				if r, err = reg.client(); err != nil {
					return err
				}
			}
			return runFlows(cmd.Context(), o, conn, r, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	kafka = addKafkaFlags(cmd)
	reg = addRegistryFlag(cmd)
	fs := cmd.Flags()
	fs.StringVar(&o.http, "http", "127.0.0.1:8080", "address of the HTTP API")
	fs.StringVar(&o.dataDir, "data-dir", "", "directory of the embedded index (default: choreo/flows/<cluster id> in the user cache directory)")
	fs.StringVar(&o.databaseURL, "database-url", os.Getenv("DATABASE_URL"), "keep the index in PostgreSQL instead (env DATABASE_URL)")
	fs.StringVar(&o.topics, "topics", ".*", "regular expression of the topics to index (Go syntax, matched anywhere in the name)")
	fs.StringVar(&o.exclude, "exclude-topics", flows.DefaultExcludeTopics, "regular expression of topics not to index")
	fs.DurationVar(&o.retention, "retention", flows.DefaultRetention, "keep a flow this long after its last event (0: for ever)")
	fs.StringVar(&o.group, "group", flows.DefaultGroup, "the index's own consumer group")
	fs.StringVar(&o.ignore, "ignore-groups", flows.DefaultIgnoreGroups, "regular expression of consumer groups not counted as consumers (other flow indexes)")
	fs.DurationVar(&o.refresh, "refresh", 5*time.Second, "how often the groups' committed offsets are read")
	fs.BoolVar(&o.allowRedrive, "allow-redrive", false, allowRedriveUsage)
	fs.StringSliceVar(&o.allowHosts, "allow-host", nil, "a Host name to answer besides localhost and loopback addresses, when --http is on loopback (for a proxy that keeps its Host header; repeatable)")
	_ = cmd.MarkFlagDirname("data-dir")
	cmd.AddCommand(newFlowsStuckCmd())
	// flows runs itself and holds a subcommand: cobra's own usage, which
	// shows both lines (the root's shows only "[command]" for groups).
	cmd.SetUsageTemplate((&cobra.Command{}).UsageTemplate())
	return cmd
}

// check reports a bad flag value as a usage error.
func (o *flowsOptions) check() error {
	if _, err := regexp.Compile(o.topics); err != nil {
		return usagef("--topics %q: not a regular expression: %v", o.topics, err)
	}
	if _, err := regexp.Compile(o.exclude); err != nil {
		return usagef("--exclude-topics %q: not a regular expression: %v", o.exclude, err)
	}
	if _, err := regexp.Compile(o.ignore); err != nil {
		return usagef("--ignore-groups %q: not a regular expression: %v", o.ignore, err)
	}
	if o.retention < 0 {
		return usagef("--retention %v: want 0 (keep everything) or more", o.retention)
	}
	if o.refresh <= 0 {
		return usagef("--refresh %v: want more than 0", o.refresh)
	}
	if strings.TrimSpace(o.group) == "" {
		return usagef("--group: want a consumer group name")
	}
	addr, err := checkListenAddr("http", o.http)
	if err != nil {
		return err
	}
	o.http = addr
	return nil
}

// flowsTestHooks lets tests shorten the index's waits.
var flowsTestHooks struct {
	clientOpts []kgo.Opt
	viewOpts   []flows.ViewOption
}

// runFlows runs the index and its API until ctx is done.
func runFlows(ctx context.Context, o flowsOptions, conn connection.Config, reg *schema.Registry, stdout, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	store, where, err := openFlowStore(ctx, o, conn)
	if err != nil {
		return err
	}
	defer store.Close()
	opts := []flows.Option{flows.ConsumerGroup(o.group), flows.IgnoreGroups(o.ignore), flows.Topics(o.topics), flows.ExcludeTopics(o.exclude),
		flows.Retention(o.retention), flows.RefreshInterval(o.refresh), flows.Logger(log),
		flows.ClientOptions(flowsTestHooks.clientOpts...)}
	viewOpts := append([]flows.ViewOption{}, flowsTestHooks.viewOpts...)
	if reg != nil {
		opts = append(opts, flows.Registry(reg))
		viewOpts = append(viewOpts, flows.WithRegistry(reg))
	}
	if o.retention > 0 {
		viewOpts = append(viewOpts, flows.LearnWindow(o.retention))
	}
	ix, err := flows.NewIndexer(conn, store, opts...)
	if err != nil {
		return usagef("%v", err)
	}
	ln, err := listen("http", o.http)
	if err != nil {
		return err
	}
	api := flows.NewHandler(flows.NewView(store, viewOpts...), flows.WithIndexer(ix), flows.HandlerLogger(log))
	mux := http.NewServeMux()
	mux.Handle("/api/", api)
	mux.Handle("/metrics", api)
	mux.Handle("/healthz", api)
	mux.Handle("/", flowsPage(api.View(), o, conn, log))
	srv := &http.Server{Handler: loopbackHostGuard(ln.Addr(), o.allowHosts, mux), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	url := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "choreo flows: indexing %s into %s\n", strings.Join(conn.Brokers, ","), where)
	fmt.Fprintf(stdout, "choreo flows: web page and API on %s (choreo trace, catalog and flows stuck: --flows %s or %s=%s)\n", url, url, envFlowsURL, url)

	ictx, stop := context.WithCancel(ctx)
	defer stop()
	ixErr := make(chan error, 1)
	go func() { ixErr <- ix.Run(ictx) }()
	var runErr error
	select {
	case runErr = <-ixErr:
	case err := <-serveErr:
		runErr = fmt.Errorf("HTTP API: %w", err)
		stop()
		<-ixErr
	case <-ctx.Done():
		runErr = <-ixErr
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if runErr == nil {
		fmt.Fprintln(stdout, "choreo flows: stopped")
	}
	return runErr
}

const flowsIndexText = `choreo flows: the flow index
JSON API (docs/FLOWS.md):
  GET /api/flows?status=&type=&service=&key=&since=&limit=
  GET /api/flows/{correlationId}
  GET /api/events/{eventId}
  GET /api/lookup?q=ID-OR-KEY
  GET /api/catalog
  GET /api/catalog/asyncapi?format=yaml|json
  GET /api/stuck?after=&terminal=
  GET /api/services
  GET /api/services/{group}/deadletters
  GET /api/groups
  GET /api/stats
  GET /metrics
  GET /healthz
`

// openFlowStore opens PostgreSQL (--database-url) or the SQLite file in
// the data directory, by default one per cluster in the user cache
// directory. It returns the store and a description of where it is.
func openFlowStore(ctx context.Context, o flowsOptions, conn connection.Config) (*sqlstore.Store, string, error) {
	if o.databaseURL != "" {
		st, err := sqlstore.OpenPostgres(ctx, o.databaseURL)
		if err != nil {
			return nil, "", err
		}
		return st, "PostgreSQL", nil
	}
	dir := o.dataDir
	if dir == "" {
		id, err := clusterID(ctx, conn)
		if err != nil {
			return nil, "", err
		}
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		dir = filepath.Join(base, "choreo", "flows", id)
	}
	if err := checkDataDir(dir); err != nil {
		return nil, "", err
	}
	st, err := sqlstore.OpenSQLite(ctx, dir)
	if err != nil {
		return nil, "", err
	}
	return st, filepath.Join(dir, sqlstore.FileName), nil
}

// clusterID asks the cluster for its id (a name safe for a directory),
// failing within 15 seconds when it does not answer.
func clusterID(ctx context.Context, conn connection.Config) (string, error) {
	opts, err := conn.ClientOptions()
	if err != nil {
		return "", usagef("%v", err)
	}
	cl, err := kgo.NewClient(append(opts, flowsTestHooks.clientOpts...)...)
	if err != nil {
		return "", fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	md, err := kadm.NewClient(cl).BrokerMetadata(ctx)
	if err != nil {
		return "", unreachable(conn, cl, err, 15*time.Second)
	}
	id := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, md.Cluster)
	if id == "" || id == "." || id == ".." {
		id = "default"
	}
	return id, nil
}

// flowsClientFlag is --flows, the URL of a running `choreo flows`.
type flowsClientFlag struct {
	url string
}

// addFlowsFlag defines --flows on cmd.
func addFlowsFlag(cmd *cobra.Command) *flowsClientFlag {
	f := &flowsClientFlag{}
	def := os.Getenv(envFlowsURL)
	if def == "" {
		def = defaultFlowsURL
	}
	cmd.Flags().StringVar(&f.url, "flows", def, "URL of a running 'choreo flows' (env "+envFlowsURL+")")
	return f
}

// client returns the API client; a bad URL is a usage error.
func (f *flowsClientFlag) client() (*flows.Client, error) {
	cl, err := flows.NewClient(f.url)
	if err != nil {
		return nil, usagef("--flows %q: want an http:// URL such as %s", f.url, defaultFlowsURL)
	}
	return cl, nil
}

// flowsError words an API client's error for the command line.
func flowsError(cl *flows.Client, err error) error {
	var ue *flows.UnreachableError
	if errors.As(err, &ue) {
		return fmt.Errorf("cannot reach choreo flows at %s: %w (start it with 'choreo flows', or point --flows or %s at it)",
			ue.URL, ue.Err, envFlowsURL)
	}
	return err
}

// thresholdFlags are --after and --terminal.
type thresholdFlags struct {
	after    string
	terminal []string
}

func addThresholdFlags(cmd *cobra.Command) *thresholdFlags {
	f := &thresholdFlags{}
	cmd.Flags().StringVar(&f.after, "after", "", "a flow with no event for this long is stuck (default: learned, p99 of finished flows × 3, at least 30s)")
	cmd.Flags().StringSliceVar(&f.terminal, "terminal", nil, "event types that end a flow, comma-separated (default: learned, the types no service reacts to)")
	return f
}

// thresholds parses the flags; a bad --after is a usage error.
func (f *thresholdFlags) thresholds(cmd *cobra.Command) (flows.Thresholds, error) {
	var th flows.Thresholds
	if f.after != "" {
		d, err := time.ParseDuration(f.after)
		if err != nil || d <= 0 {
			return th, usagef("--after %q: want a positive duration such as 2m or 90s", f.after)
		}
		th.After = d
	}
	if cmd.Flags().Changed("terminal") {
		th.Terminal = []string{}
		for _, t := range f.terminal {
			if t = strings.TrimSpace(t); t != "" {
				th.Terminal = append(th.Terminal, t)
			}
		}
	}
	return th, nil
}

func newFlowsStuckCmd() *cobra.Command {
	var fl *flowsClientFlag
	var th *thresholdFlags
	var out *outputFlag
	var limit int
	cmd := &cobra.Command{
		Use:   "stuck",
		Short: "List the flows that started and did not finish, with why and who they wait on",
		Long: `Ask a running 'choreo flows' for the stuck flows: those whose last event is
not of a terminal type and older than --after, those with an event a
subscribed consumer group has not consumed within --after, and those with a
dead letter not redriven since. Each comes with the reason, the service it
waits on and the command to look closer. --after and the terminal types are
learned from the traffic unless given.`,
		Args: usageArgs(cobra.NoArgs, func(args []string) string {
			return fmt.Sprintf("unexpected argument %q", args[0])
		}),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := th.thresholds(cmd)
			if err != nil {
				return err
			}
			if limit < 1 {
				return usagef("--limit %d: want at least 1", limit)
			}
			cl, err := fl.client()
			if err != nil {
				return err
			}
			rep, err := cl.Stuck(cmd.Context(), t, limit)
			if err != nil {
				return flowsError(cl, err)
			}
			return writeStuck(cmd.OutOrStdout(), out, rep)
		},
	}
	fl = addFlowsFlag(cmd)
	th = addThresholdFlags(cmd)
	out = addOutputFlag(cmd)
	cmd.Flags().IntVar(&limit, "limit", 100, "list at most this many flows")
	return cmd
}

// stuckRow is one reason of one stuck flow, a line of the table.
type stuckRow struct {
	flow   flows.FlowItem
	reason flows.Reason
	first  bool
}

// writeStuck prints the report: a line with the thresholds, then a row
// per reason (table), or the flows (json, jsonl).
func writeStuck(w io.Writer, out *outputFlag, rep flows.StuckReport) error {
	if out.format != outputTable {
		return writeOutput(w, out, nil, rep.Flows, nil)
	}
	c := rep.Criteria
	how := "set with --after"
	if c.AfterLearned {
		how = "learned: " + c.AfterBasis
	}
	terms := strings.Join(c.Terminal, ", ")
	if terms == "" {
		terms = "none"
	}
	tsrc := "set with --terminal"
	if c.TerminalLearned {
		tsrc = "learned: no service reacts to them"
	}
	fmt.Fprintf(w, "Stuck after %s (%s). Terminal types (%s): %s.\n", c.AfterText, how, tsrc, terms)
	if len(rep.Flows) == 0 {
		fmt.Fprintln(w, "No stuck flows.")
		return nil
	}
	if len(rep.Flows) == 1 {
		fmt.Fprint(w, "1 stuck flow:\n\n")
	} else {
		fmt.Fprintf(w, "%d stuck flows:\n\n", len(rep.Flows))
	}
	var rows []stuckRow
	for _, f := range rep.Flows {
		for i, r := range f.Reasons {
			rows = append(rows, stuckRow{flow: f, reason: r, first: i == 0})
		}
	}
	now := rep.GeneratedAt
	return writeOutput(w, out, []string{"FLOW", "KEY", "STARTED", "REASON", "WAITING ON", "SINCE", "LOOK CLOSER"}, rows, func(r stuckRow) []string {
		flow, key, started := "", "", ""
		if r.first {
			flow, key, started = r.flow.CorrelationID, r.flow.RootKey, shortType(r.flow.RootType)+" "+ago(now, r.flow.Start)
		}
		waiting := strings.Join(r.reason.WaitingOn, ", ")
		if waiting == "" {
			waiting = "-"
		}
		return []string{flow, key, started, r.reason.Kind + ": " + r.reason.Detail, waiting, ago(now, r.reason.Since), r.reason.Command}
	})
}

// ago writes how long before now t was: "3m20s ago".
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Second:
		return d.Round(time.Millisecond).String() + " ago"
	case d < time.Hour:
		return d.Round(time.Second).String() + " ago"
	default:
		return d.Round(time.Minute).String() + " ago"
	}
}
