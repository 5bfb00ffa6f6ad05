package flows

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/schema"
)

// DefaultGroup is the consumer group of the flow index.
const DefaultGroup = "choreo-flows"

// DefaultRetention is how long the index keeps a flow after its last
// activity.
const DefaultRetention = 7 * 24 * time.Hour

// DefaultExcludeTopics keeps topics whose names start with an underscore
// out of the index: the brokers' internal topics (__consumer_offsets …)
// and the schema registry's (_schemas), which carry no events.
const DefaultExcludeTopics = "^_"

// indexConfig is the Indexer's configuration, set by Options.
type indexConfig struct {
	group      string
	ignore     string
	topics     string
	exclude    string
	registry   *schema.Registry
	refresh    time.Duration
	retention  time.Duration
	prune      time.Duration
	batch      int
	logger     *slog.Logger
	clientOpts []kgo.Opt
}

// Option configures NewIndexer.
type Option func(*indexConfig)

// ConsumerGroup sets the indexer's consumer group (DefaultGroup). Its
// committed offsets are where a restarted indexer goes on; it is never
// counted among the consumers of the topics it reads.
func ConsumerGroup(name string) Option { return func(c *indexConfig) { c.group = name } }

// DefaultIgnoreGroups are the consumer groups not counted as consumers:
// flow indexes (the default group and any other whose name starts with it,
// as another `choreo flows --group choreo-flows-test` makes), which read
// every topic and react to nothing.
const DefaultIgnoreGroups = "^" + DefaultGroup

// IgnoreGroups sets the regular expression of the consumer groups not
// counted as consumers of the topics they read (DefaultIgnoreGroups);
// the indexer's own group is never counted. "" counts every other group.
func IgnoreGroups(regex string) Option { return func(c *indexConfig) { c.ignore = regex } }

// Topics sets the regular expression (Go syntax, matched anywhere in the
// name, as Kafka clients do) of the topics to index. The default, ".*",
// is every topic that is not internal: the services' source topics and
// their retry, dead-letter and redrive topics. New topics that match are
// picked up within the metadata refresh (10s).
func Topics(regex string) Option { return func(c *indexConfig) { c.topics = regex } }

// ExcludeTopics sets the regular expression of topics not to index
// (DefaultExcludeTopics).
func ExcludeTopics(regex string) Option { return func(c *indexConfig) { c.exclude = regex } }

// Registry gives the indexer a schema registry, with which it decodes
// dead-letter envelopes for what their headers do not say (the source,
// time and causation of the event that failed, the service's name).
// Without one, dead letters are indexed from their readable headers.
func Registry(r *schema.Registry) Option { return func(c *indexConfig) { c.registry = r } }

// RefreshInterval sets how often the consumer groups' subscriptions and
// committed offsets are read (5s).
func RefreshInterval(d time.Duration) Option { return func(c *indexConfig) { c.refresh = d } }

// Retention sets how long a flow is kept after its last activity
// (DefaultRetention); 0 keeps everything.
func Retention(d time.Duration) Option { return func(c *indexConfig) { c.retention = d } }

// BatchSize sets the most records written to the store at once (5000).
func BatchSize(n int) Option { return func(c *indexConfig) { c.batch = n } }

// Logger sets the logger (slog.Default()).
func Logger(l *slog.Logger) Option { return func(c *indexConfig) { c.logger = l } }

// ClientOptions adds franz-go client options (after the indexer's own).
func ClientOptions(opts ...kgo.Opt) Option {
	return func(c *indexConfig) { c.clientOpts = append(c.clientOpts, opts...) }
}

// Indexer reads every topic carrying choreo events in a consumer group of
// its own and writes what each record says about its event (never the
// payload) to a Store; it reads the other groups' subscriptions and
// committed offsets every RefreshInterval. The services do no work for
// it.
//
// It commits its offsets only after the store has the records: a crash
// between the two makes it index the same records again, which the
// store's idempotent writes absorb (at-least-once indexing, no
// duplicates).
type Indexer struct {
	conn  connection.Config
	store Store
	cfg   indexConfig
	codec *schema.Codec

	excludeRE, ignoreRE *regexp.Regexp

	indexed, skipped, writeErrors, refreshes, refreshErrors, pruned atomic.Int64
	skipReasons                                                     sync.Map // reason -> *atomic.Int64
	lastWrite, lastRefresh                                          atomic.Int64
	groupsMu                                                        sync.Mutex
	refreshNow                                                      chan chan error
}

// ErrBadTopics is wrapped by NewIndexer's error for a topic regular
// expression that does not compile.
var ErrBadTopics = errors.New("bad topic regular expression")

// NewIndexer returns an indexer of the cluster conn names into store.
func NewIndexer(conn connection.Config, store Store, opts ...Option) (*Indexer, error) {
	cfg := indexConfig{group: DefaultGroup, ignore: DefaultIgnoreGroups, topics: ".*", exclude: DefaultExcludeTopics, refresh: 5 * time.Second,
		retention: DefaultRetention, batch: 5000, logger: slog.Default()}
	for _, o := range opts {
		o(&cfg)
	}
	if store == nil {
		return nil, errors.New("flows: indexer without a store")
	}
	if cfg.group == "" {
		return nil, errors.New("flows: indexer with an empty consumer group")
	}
	if cfg.refresh <= 0 {
		return nil, fmt.Errorf("flows: refresh interval %v: want more than 0", cfg.refresh)
	}
	if cfg.retention < 0 {
		return nil, fmt.Errorf("flows: retention %v: want 0 (keep everything) or more", cfg.retention)
	}
	if cfg.batch <= 0 {
		cfg.batch = 5000
	}
	cfg.prune = min(max(cfg.retention/100, time.Minute), time.Hour)
	ix := &Indexer{conn: conn, store: store, cfg: cfg, refreshNow: make(chan chan error)}
	if _, err := regexp.Compile(cfg.topics); err != nil {
		return nil, fmt.Errorf("flows: topics %q: %w: %w", cfg.topics, ErrBadTopics, err)
	}
	var err error
	if cfg.ignore != "" {
		if ix.ignoreRE, err = regexp.Compile(cfg.ignore); err != nil {
			return nil, fmt.Errorf("flows: ignored groups %q: %w", cfg.ignore, err)
		}
	}
	if cfg.exclude != "" {
		if ix.excludeRE, err = regexp.Compile(cfg.exclude); err != nil {
			return nil, fmt.Errorf("flows: excluded topics %q: %w: %w", cfg.exclude, ErrBadTopics, err)
		}
	}
	if cfg.registry != nil {
		ix.codec = schema.NewCodec(cfg.registry)
	}
	return ix, nil
}

// Group returns the indexer's consumer group.
func (ix *Indexer) Group() string { return ix.cfg.group }

// Run indexes until ctx is done, then commits what it wrote and returns
// nil; or returns an error that stops it (the cluster cannot be reached
// at start).
func (ix *Indexer) Run(ctx context.Context) error {
	base, err := ix.conn.ClientOptions()
	if err != nil {
		return fmt.Errorf("flows: %w", err)
	}
	opts := append(base,
		kgo.ConsumerGroup(ix.cfg.group),
		kgo.ConsumeRegex(),
		kgo.ConsumeTopics(ix.cfg.topics),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.MetadataMaxAge(10*time.Second),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	if ix.cfg.exclude != "" {
		opts = append(opts, kgo.ConsumeExcludeTopics(ix.cfg.exclude))
	}
	opts = append(opts, ix.cfg.clientOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("flows: client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = adm.BrokerMetadata(pctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("flows: cannot reach Kafka at %v: %w", ix.conn.Brokers, err)
	}
	ix.cfg.logger.Info("flow index started", "group", ix.cfg.group, "topics", ix.cfg.topics, "exclude", ix.cfg.exclude)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); ix.refreshLoop(ctx, adm) }()
	go func() { defer wg.Done(); ix.pruneLoop(ctx) }()
	ix.consume(ctx, cl)
	wg.Wait()
	// Commit what was written, on a context of its own: ctx is done.
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cl.CommitUncommittedOffsets(cctx); err != nil {
		ix.cfg.logger.Warn("flow index: last commit failed; the records since the previous one will be indexed again", "err", err)
	}
	return nil
}

// consume polls, writes each poll's records to the store, then commits
// them.
func (ix *Indexer) consume(ctx context.Context, cl *kgo.Client) {
	for {
		fetches := cl.PollRecords(ctx, ix.cfg.batch)
		if ctx.Err() != nil {
			cl.AllowRebalance()
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				ix.cfg.logger.Warn("flow index: fetch error", "topic", topic, "partition", p, "err", err)
			}
		})
		var recs []Record
		fetches.EachRecord(func(rec *kgo.Record) {
			if ix.excludeRE != nil && ix.excludeRE.MatchString(rec.Topic) {
				return
			}
			r, ok, reason := Parse(ctx, rec, ix.codec)
			if !ok {
				ix.skip(reason)
				return
			}
			recs = append(recs, r)
		})
		if len(recs) > 0 && !ix.write(ctx, recs) {
			cl.AllowRebalance()
			return // ctx done before the store took them: not committed
		}
		if fetches.NumRecords() > 0 {
			if err := cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
				ix.cfg.logger.Warn("flow index: commit failed; will be retried with the next", "err", err)
			}
		}
		cl.AllowRebalance()
	}
}

// write writes recs, retrying with back-off until the store takes them
// or ctx is done; it reports whether they were written.
func (ix *Indexer) write(ctx context.Context, recs []Record) bool {
	delay := 100 * time.Millisecond
	for {
		err := ix.store.Write(ctx, recs)
		if err == nil {
			ix.indexed.Add(int64(len(recs)))
			ix.lastWrite.Store(time.Now().UnixNano())
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		ix.writeErrors.Add(1)
		ix.cfg.logger.Error("flow index: store write failed; retrying", "records", len(recs), "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
		delay = min(delay*2, 10*time.Second)
	}
}

func (ix *Indexer) skip(reason string) {
	ix.skipped.Add(1)
	c, _ := ix.skipReasons.LoadOrStore(reason, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
}

// refreshLoop reads the groups' state every refresh interval, and when
// asked through RefreshGroups.
func (ix *Indexer) refreshLoop(ctx context.Context, adm *kadm.Client) {
	t := time.NewTicker(ix.cfg.refresh)
	defer t.Stop()
	do := func() error {
		err := ix.refresh(ctx, adm)
		ix.refreshes.Add(1)
		if err != nil && ctx.Err() == nil {
			ix.refreshErrors.Add(1)
			ix.cfg.logger.Warn("flow index: reading the consumer groups failed", "err", err)
		}
		return err
	}
	_ = do()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = do()
		case reply := <-ix.refreshNow:
			reply <- do()
		}
	}
}

// RefreshGroups reads the consumer groups' state now, while Run runs, and
// returns when the store has it.
func (ix *Indexer) RefreshGroups(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case ix.refreshNow <- reply:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refresh reads every consumer group but the indexer's own: state,
// members' subscriptions, committed offsets.
func (ix *Indexer) refresh(ctx context.Context, adm *kadm.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return fmt.Errorf("list groups: %w", err)
	}
	var names []string
	for _, g := range listed.Sorted() {
		if g.Group == ix.cfg.group || (ix.ignoreRE != nil && ix.ignoreRE.MatchString(g.Group)) ||
			(g.ProtocolType != "" && g.ProtocolType != "consumer") {
			continue
		}
		names = append(names, g.Group)
	}
	now := time.Now().UTC()
	groups := make([]Group, 0, len(names))
	if len(names) > 0 {
		described, err := adm.DescribeGroups(ctx, names...)
		if err != nil && len(described) == 0 {
			return fmt.Errorf("describe groups: %w", err)
		}
		fetched := adm.FetchManyOffsets(ctx, names...)
		for _, name := range names {
			g := Group{Name: name, State: listed[name].State, Offsets: map[string]map[int32]int64{}, UpdatedAt: now}
			topics := map[string]bool{}
			if d, ok := described[name]; ok && d.Err == nil {
				g.State, g.Members = d.State, len(d.Members)
				for _, m := range d.Members {
					if md, ok := m.Join.AsConsumer(); ok {
						for _, t := range md.Topics {
							topics[t] = true
						}
					}
				}
			}
			if f, ok := fetched[name]; ok && f.Err == nil {
				f.Fetched.Each(func(o kadm.OffsetResponse) {
					if o.Err != nil || o.At < 0 {
						return
					}
					if g.Offsets[o.Topic] == nil {
						g.Offsets[o.Topic] = map[int32]int64{}
					}
					g.Offsets[o.Topic][o.Partition] = o.At
					topics[o.Topic] = true
				})
			}
			for t := range topics {
				g.Topics = append(g.Topics, t)
			}
			sort.Strings(g.Topics)
			groups = append(groups, g)
		}
	}
	ix.groupsMu.Lock()
	defer ix.groupsMu.Unlock()
	if err := ix.store.SetGroups(ctx, groups); err != nil {
		return fmt.Errorf("store groups: %w", err)
	}
	ix.lastRefresh.Store(now.UnixNano())
	return nil
}

// pruneLoop deletes what is past the retention, now and then.
func (ix *Indexer) pruneLoop(ctx context.Context) {
	if ix.cfg.retention == 0 {
		return
	}
	t := time.NewTicker(ix.cfg.prune)
	defer t.Stop()
	for {
		n, err := ix.store.Prune(ctx, time.Now().Add(-ix.cfg.retention))
		if err != nil && ctx.Err() == nil {
			ix.cfg.logger.Warn("flow index: pruning failed", "err", err)
		}
		if n > 0 {
			ix.pruned.Add(n)
			ix.cfg.logger.Info("flow index: pruned records past the retention", "records", n, "retention", ix.cfg.retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// IndexerStats are an indexer's counters since it started.
type IndexerStats struct {
	Indexed       int64            `json:"indexed"`       // records written to the store
	Skipped       int64            `json:"skipped"`       // records not indexed (see SkipReasons)
	SkipReasons   map[string]int64 `json:"skipReasons"`   // by reason: no_ce_id, bad_envelope
	WriteErrors   int64            `json:"writeErrors"`   // failed store writes (retried)
	Refreshes     int64            `json:"refreshes"`     // reads of the consumer groups
	RefreshErrors int64            `json:"refreshErrors"` // failed ones
	Pruned        int64            `json:"pruned"`        // records deleted past the retention
	LastWrite     time.Time        `json:"lastWrite,omitzero"`
	LastRefresh   time.Time        `json:"lastRefresh,omitzero"`
}

// Stats returns the indexer's counters.
func (ix *Indexer) Stats() IndexerStats {
	s := IndexerStats{
		Indexed: ix.indexed.Load(), Skipped: ix.skipped.Load(), WriteErrors: ix.writeErrors.Load(),
		Refreshes: ix.refreshes.Load(), RefreshErrors: ix.refreshErrors.Load(), Pruned: ix.pruned.Load(),
		SkipReasons: map[string]int64{},
	}
	ix.skipReasons.Range(func(k, v any) bool {
		s.SkipReasons[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	if n := ix.lastWrite.Load(); n != 0 {
		s.LastWrite = time.Unix(0, n).UTC()
	}
	if n := ix.lastRefresh.Load(); n != 0 {
		s.LastRefresh = time.Unix(0, n).UTC()
	}
	return s
}
