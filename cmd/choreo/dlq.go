package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/schema"
)

// The `choreo dlq` commands: list, show, stats and redrive a service's
// dead letters. They read the dead-letter topic with a client of their
// own that joins no group and commits nothing, from the start (or --since)
// to the end offsets taken when they start (or on, with --follow).

func newDLQCmd() *cobra.Command {
	return newGroupCmd("dlq", "Inspect and redrive a service's dead letters",
		newDLQListCmd(), newDLQShowCmd(), newDLQStatsCmd(), newDLQRedriveCmd())
}

// Time limits of the dlq commands: an unreachable broker or registry fails
// within them, with one line.
var (
	dlqConnectTimeout  = 5 * time.Second // first answer from the cluster
	dlqRegistryTimeout = 5 * time.Second // each registry request
)

// dlqNow is the clock of the dlq commands (the reference of --since 2h, the
// time of a redrive); tests set it.
var dlqNow = time.Now

// dlqWho names the person redriving, user@host, for the redrive log; tests
// set it.
var dlqWho = func() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" {
		name = "unknown"
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		name += "@" + h
	}
	return name
}

// dlqFlags are the flags every dlq command takes: where the cluster and
// the registry are, and which topic.
type dlqFlags struct {
	kafka    *kafkaFlags
	registry *registryFlags
	topic    string
}

// addDLQFlags defines --brokers, --registry and --topic on cmd.
func addDLQFlags(cmd *cobra.Command) *dlqFlags {
	f := &dlqFlags{kafka: addKafkaFlags(cmd), registry: addRegistryFlag(cmd)}
	cmd.Flags().StringVar(&f.topic, "topic", "", "read this dead-letter topic instead of SERVICE's (<service>.dlq)")
	cmd.ValidArgsFunction = cobra.NoFileCompletions
	return f
}

// target is what the SERVICE argument and --topic name: the dead-letter
// topic, and the service (group) whose redrive topic takes its dead
// letters back ("" when only --topic names a topic that is not
// "<group>.dlq").
type target struct {
	topic, group string
}

// target works out the topic and the group from the SERVICE argument (may
// be empty) and --topic.
func (f *dlqFlags) target(service string) (target, error) {
	var t target
	if service != "" {
		topic, err := dlq.TopicFor(service)
		if err != nil {
			return t, usagef("service %q: not a consumer group name a dead-letter topic can be made of: %v", service, err)
		}
		t = target{topic: topic, group: service}
	}
	if f.topic != "" {
		t.topic = f.topic
		if service == "" {
			t.group, _ = strings.CutSuffix(f.topic, dlq.Suffix)
			if t.group == f.topic {
				t.group = ""
			}
		}
	}
	if t.topic == "" {
		return t, usageError{msg: "want the SERVICE (consumer group) whose dead letters to read, or --topic", showUsage: true}
	}
	return t, nil
}

// serviceArgs checks the positional arguments: SERVICE, optional with
// --topic, then up to max more.
func serviceArgs(more int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > 1+more && more >= 0 {
			return usageError{msg: fmt.Sprintf("want SERVICE%s, got %d arguments", what, len(args)), showUsage: true}
		}
		return nil
	}
}

// dlqEnv is an open connection to the cluster (and registry) for a dlq
// command.
type dlqEnv struct {
	target
	brokers string
	opts    []kgo.Opt // connection options (seed brokers, SASL, TLS, timeouts)
	cl      *kgo.Client
	adm     *kadm.Client
	parts   []int32          // partitions of the topic
	reg     *schema.Registry // nil: no registry configured
	codec   *schema.Codec    // nil with reg
}

// close closes the client.
func (e *dlqEnv) close() { e.cl.Close() }

// open connects for a dlq command: it checks that the cluster answers
// (within dlqConnectTimeout) and that the topic exists, naming the
// dead-letter topics there are when it does not. With needRegistry a
// missing registry setting is a usage error; otherwise it only means no
// envelope is decoded.
func (f *dlqFlags) open(ctx context.Context, t target, needRegistry bool) (*dlqEnv, error) {
	cfg, err := f.kafka.needConfig()
	if err != nil {
		return nil, err
	}
	base, err := cfg.ClientOptions()
	if err != nil {
		return nil, usagef("%v", err)
	}
	e := &dlqEnv{target: t, brokers: strings.Join(cfg.Brokers, ",")}
	e.opts = append(base,
		kgo.DialTimeout(3*time.Second),
		kgo.RequestTimeoutOverhead(5*time.Second),
		kgo.RetryTimeout(10*time.Second),
		kgo.ProducerBatchMaxBytes(16<<20), // a redrive carries a whole original
	)
	if strings.TrimSpace(f.registry.url) != "" {
		reg, err := f.registryClient()
		if err != nil {
			return nil, err
		}
		e.reg = reg
		e.codec = schema.NewCodec(reg, schema.MaxBytesLength(64<<20))
	} else if needRegistry {
		return nil, f.registry.check()
	}
	e.cl, err = kgo.NewClient(e.opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	e.adm = kadm.NewClient(e.cl)
	cctx, cancel := context.WithTimeout(ctx, dlqConnectTimeout)
	defer cancel()
	all, err := e.adm.ListTopics(cctx)
	if err != nil {
		e.close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, unreachable(cfg, e.cl, err, dlqConnectTimeout)
	}
	d, ok := all[t.topic]
	if !ok || d.Err != nil {
		e.close()
		return nil, missingTopicError(t, all.Names())
	}
	for _, p := range d.Partitions.Sorted() {
		e.parts = append(e.parts, p.Partition)
	}
	return e, nil
}

// registryClient returns the registry client with the dlq commands' short
// timeout.
func (f *dlqFlags) registryClient() (*schema.Registry, error) {
	opts := []schema.RegistryOption{schema.Timeout(dlqRegistryTimeout)}
	if u := os.Getenv(envRegistryUser); u != "" {
		opts = append(opts, schema.BasicAuth(u, os.Getenv(envRegistryPassword)))
	}
	reg, err := schema.NewRegistry(strings.Split(f.registry.url, ","), opts...)
	if err != nil {
		return nil, usagef("--registry %s: %v", f.registry.url, err)
	}
	return reg, nil
}

// missingTopicError says that t's topic does not exist, and which
// dead-letter topics do.
func missingTopicError(t target, names []string) error {
	var dlqs []string
	for _, n := range names {
		if strings.HasSuffix(n, dlq.Suffix) {
			dlqs = append(dlqs, n)
		}
	}
	sort.Strings(dlqs)
	msg := fmt.Sprintf("topic %s does not exist", t.topic)
	if t.group != "" && t.topic == dlq.Topic(t.group) {
		msg = fmt.Sprintf("no dead-letter topic %s: service %q has never run here, or has another name", t.topic, t.group)
	}
	switch {
	case len(dlqs) == 0:
		msg += " (there are no dead-letter topics)"
	case len(dlqs) <= 10:
		msg += " (dead-letter topics: " + strings.Join(dlqs, ", ") + ")"
	default:
		msg += fmt.Sprintf(" (%d dead-letter topics, such as %s)", len(dlqs), strings.Join(dlqs[:5], ", "))
	}
	return errors.New(msg)
}

// filterFlags are the filters of list, stats and redrive.
type filterFlags struct {
	kinds         []string
	types         []string
	key           string
	correlationID string
	since, until  string
	grep          string
}

// addFilterFlags defines the filters on cmd.
func addFilterFlags(cmd *cobra.Command) *filterFlags {
	f := &filterFlags{}
	fs := cmd.Flags()
	fs.StringSliceVar(&f.kinds, "kind", nil, "only these error kinds (permanent, retries_exhausted, …; invalid for records that are not dead letters); repeat or comma-separate")
	fs.StringSliceVar(&f.types, "type", nil, "only these event types: a full name (shop.OrderPlaced) or its last part (OrderPlaced)")
	fs.StringVar(&f.key, "key", "", "only dead letters of this record key")
	fs.StringVar(&f.correlationID, "correlation-id", "", "only dead letters of this business transaction")
	fs.StringVar(&f.since, "since", "", "only dead letters written at or after this time: RFC 3339 (2024-05-01T10:00:00Z) or a duration ago (2h, 30m, 7d)")
	fs.StringVar(&f.until, "until", "", "only dead letters written before this time: RFC 3339 or a duration ago")
	fs.StringVar(&f.grep, "grep", "", "only dead letters whose error message matches this regular expression ((?i) for any case)")
	return f
}

// filter is the parsed filters.
type filter struct {
	kinds         map[string]bool
	types         []string
	key           *string
	correlationID string
	since, until  time.Time
	grep          *regexp.Regexp
}

// any reports whether a filter is set (invalid records are shown only
// without one, or with --kind invalid).
func (f *filter) any() bool {
	return len(f.kinds) > 0 || len(f.types) > 0 || f.key != nil || f.correlationID != "" || !f.since.IsZero() || !f.until.IsZero() || f.grep != nil
}

// parse checks the filter flags; a bad value is a usage error.
func (f *filterFlags) parse(cmd *cobra.Command) (*filter, error) {
	out := &filter{}
	for _, k := range f.kinds {
		if k = strings.TrimSpace(k); k != "" {
			if out.kinds == nil {
				out.kinds = map[string]bool{}
			}
			out.kinds[k] = true
		}
	}
	for _, t := range f.types {
		if t = strings.TrimSpace(t); t != "" {
			out.types = append(out.types, t)
		}
	}
	if cmd.Flags().Changed("key") {
		k := f.key
		out.key = &k
	}
	out.correlationID = f.correlationID
	var err error
	if out.since, err = parseWhen("--since", f.since); err != nil {
		return nil, err
	}
	if out.until, err = parseWhen("--until", f.until); err != nil {
		return nil, err
	}
	if !out.since.IsZero() && !out.until.IsZero() && !out.until.After(out.since) {
		return nil, usagef("--until %s is not after --since %s", f.until, f.since)
	}
	if f.grep != "" {
		re, err := regexp.Compile(f.grep)
		if err != nil {
			return nil, usagef("--grep: %v", err)
		}
		out.grep = re
	}
	return out, nil
}

// parseWhen reads a time flag: RFC 3339, or a duration before now (Go's
// syntax, plus d for days).
func parseWhen(flag, s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := parseAgo(s)
	if err != nil || d < 0 {
		return time.Time{}, usagef("%s %q: want an RFC 3339 time (2024-05-01T10:00:00Z) or a duration ago (90s, 30m, 2h, 7d)", flag, s)
	}
	return dlqNow().Add(-d), nil
}

// parseAgo parses a Go duration, or a whole number of days "7d".
func parseAgo(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 || days > 100000 {
			return 0, fmt.Errorf("bad days %q", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// match reports whether e passes the filter.
func (f *filter) match(e *entry) bool {
	if e.invalid != "" {
		return !f.any() || (f.kinds["invalid"] && len(f.kinds) > 0)
	}
	if len(f.kinds) > 0 && !f.kinds[string(e.sum.Kind)] {
		return false
	}
	if len(f.types) > 0 {
		ok := false
		for _, t := range f.types {
			if e.sum.EventType == t || strings.HasSuffix(e.sum.EventType, "."+t) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if f.key != nil && string(e.key) != *f.key {
		return false
	}
	if f.correlationID != "" && e.sum.CorrelationID != f.correlationID {
		return false
	}
	if !f.since.IsZero() && e.time.Before(f.since) {
		return false
	}
	if !f.until.IsZero() && !e.time.Before(f.until) {
		return false
	}
	if f.grep != nil && !f.grep.MatchString(e.sum.Message) {
		return false
	}
	return true
}

// parseCoords reads PARTITION:OFFSET; a bad one is a usage error.
func parseCoords(s string) (int32, int64, error) {
	p, o, ok := strings.Cut(s, ":")
	part, err1 := strconv.ParseInt(p, 10, 32)
	off, err2 := strconv.ParseInt(o, 10, 64)
	if !ok || err1 != nil || err2 != nil || part < 0 || off < 0 {
		return 0, 0, usagef("bad dead letter %q: want PARTITION:OFFSET, such as 0:12 (the first column of choreo dlq list)", s)
	}
	return int32(part), off, nil
}
