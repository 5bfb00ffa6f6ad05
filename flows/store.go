package flows

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"time"
)

// Store keeps the index: the records, a summary per flow (correlation id)
// and the consumer groups' subscriptions and committed offsets. Package
// flows/sqlstore has two implementations, embedded SQLite and PostgreSQL;
// they pass the same tests (sqlstore's).
//
// Writes are idempotent: writing a record again (same topic, partition
// and offset) replaces it, so an indexer that crashed after writing and
// before committing its offsets indexes the same records again with no
// duplicates.
type Store interface {
	// Write stores recs and brings the summaries of the flows they belong
	// to up to date, in one transaction.
	Write(ctx context.Context, recs []Record) error
	// SetGroups replaces the consumer groups' state.
	SetGroups(ctx context.Context, groups []Group) error
	// Groups returns the consumer groups' state, sorted by name.
	Groups(ctx context.Context) ([]Group, error)

	// Flows returns flow summaries matching f, the most recently active
	// first.
	Flows(ctx context.Context, f FlowFilter) ([]FlowSummary, error)
	// Flow returns the summary of one flow, and ErrNotFound if the index
	// has none with that correlation id.
	Flow(ctx context.Context, correlationID string) (FlowSummary, error)
	// FlowRecords returns every record of a flow, by time then position.
	FlowRecords(ctx context.Context, correlationID string) ([]Record, error)
	// EventRecords returns the records carrying the event id, by time
	// then position.
	EventRecords(ctx context.Context, eventID string) ([]Record, error)
	// CorrelationsByKey returns the correlation ids of the flows with an
	// event keyed key, the most recent first, at most limit.
	CorrelationsByKey(ctx context.Context, key string, limit int) ([]string, error)
	// DeadLetters returns the dead letters of a group (all groups for ""),
	// the most recent first, at most limit.
	DeadLetters(ctx context.Context, group string, limit int) ([]Record, error)
	// RecordsOfKind returns records of one kind whose flow is among ids.
	RecordsOfKind(ctx context.Context, kind Kind, correlationIDs []string) ([]Record, error)
	// Unconsumed returns events (KindEvent, KindRetry and KindRedrive
	// records) due before dueBefore that a group subscribed to their topic
	// has not consumed: its committed offset on their partition is at or
	// below their offset. Only partitions where the group has a committed
	// offset count. At most limit, the oldest first.
	Unconsumed(ctx context.Context, dueBefore time.Time, limit int) ([]Pending, error)

	// TypeStats returns, per event type, topic, source and schema id, the
	// events seen (KindEvent records): counts, first and last seen, and
	// how many since recentSince.
	TypeStats(ctx context.Context, recentSince time.Time) ([]TypeStat, error)
	// Reactions returns, per event type, the types and sources of events
	// caused by events of that type: the edges of the choreography.
	Reactions(ctx context.Context) ([]Reaction, error)
	// Durations returns the durations (last event time less first) of the
	// flows whose last event is of one of the types, active since since,
	// at most limit of them.
	Durations(ctx context.Context, lastTypes []string, since time.Time, limit int) ([]time.Duration, error)

	// Prune deletes the flows (and their records) with no activity since
	// before, and the records outside any flow older than before. It
	// returns the number of records deleted.
	Prune(ctx context.Context, before time.Time) (int64, error)
	// Counts returns the number of records and flows indexed.
	Counts(ctx context.Context) (records, flows int64, err error)
	// Close releases the store.
	Close() error
}

// ErrNotFound is returned (wrapped) when the index has no such flow or
// event.
var ErrNotFound = errors.New("not found")

// Group is a consumer group as the brokers describe it: its members'
// subscriptions and its committed offsets.
type Group struct {
	Name    string `json:"name"`
	State   string `json:"state"`   // Stable, Empty, PreparingRebalance … as the broker says
	Members int    `json:"members"` // members now
	// Topics the group consumes: its members' subscriptions and the topics
	// it has committed offsets for (a stopped service's group has no
	// members, but its offsets say what it reads).
	Topics []string `json:"topics"`
	// Offsets are its committed offsets: topic, then partition, to the
	// offset of the next record it will read.
	Offsets   map[string]map[int32]int64 `json:"offsets,omitempty"`
	UpdatedAt time.Time                  `json:"updatedAt"`
}

// Subscribes reports whether the group consumes topic.
func (g *Group) Subscribes(topic string) bool { return slices.Contains(g.Topics, topic) }

// Committed returns the group's committed offset on a partition, and
// false when it has none.
func (g *Group) Committed(topic string, partition int32) (int64, bool) {
	o, ok := g.Offsets[topic][partition]
	return o, ok
}

// FlowSummary is what the index keeps about one flow (one business
// transaction: the events sharing a correlation id), kept up to date as
// its records are written.
type FlowSummary struct {
	CorrelationID string    `json:"correlationId"`
	Start         time.Time `json:"start"`        // time of its first event
	End           time.Time `json:"end"`          // time of its last event
	LastActivity  time.Time `json:"lastActivity"` // of its last record of any kind (a retry, a dead letter …)
	Events        int       `json:"events"`       // distinct event ids
	Records       int       `json:"records"`
	RootType      string    `json:"rootType"`   // type of its first event
	RootKey       string    `json:"rootKey"`    // key of its first event (an order id …)
	RootSource    string    `json:"rootSource"` // who published the first event
	LastType      string    `json:"lastType"`   // type of its last event
	LastEventID   string    `json:"lastEventId"`
	LastSource    string    `json:"lastSource"`
	LastTopic     string    `json:"lastTopic"`
	LastPartition int32     `json:"lastPartition"`
	LastOffset    int64     `json:"lastOffset"`
	Retries       int       `json:"retries"`     // retry-topic forwards
	DeadLetters   int       `json:"deadLetters"` // dead letters
	Redrives      int       `json:"redrives"`
	Services      []string  `json:"services"` // publishers and failing groups, sorted
	Types         []string  `json:"types"`    // event types, sorted
}

// Duration is the time from the flow's first event to its last.
func (s *FlowSummary) Duration() time.Duration { return s.End.Sub(s.Start) }

// FlowFilter selects flows. Zero fields select everything.
type FlowFilter struct {
	Type    string    // an event of this type is in the flow
	Service string    // this service published an event of the flow, or failed one
	Key     string    // the flow's first event has this key
	Since   time.Time // active at or after
	Before  time.Time // active before (for paging: the LastActivity of the last flow seen)
	// NotLastTypes leaves out flows whose last event is of one of these
	// types (the terminal ones, to find flows that did not finish).
	NotLastTypes []string
	// DeadLettered keeps only flows with a dead letter.
	DeadLettered bool
	Limit        int // at most this many; 0 means 100
}

// Summarize computes the summary of a flow from its records (any order).
// Stores call it after writing; it is exported so that every store
// summarizes alike.
func Summarize(correlationID string, recs []Record) FlowSummary {
	s := FlowSummary{CorrelationID: correlationID, LastPartition: -1, LastOffset: -1}
	sorted := slices.Clone(recs)
	SortRecords(sorted)
	ids := map[string]bool{}
	services := map[string]bool{}
	types := map[string]bool{}
	var first, last *Record
	for i := range sorted {
		r := &sorted[i]
		s.Records++
		if r.Time.After(s.LastActivity) {
			s.LastActivity = r.Time
		}
		if r.FailedAt.After(s.LastActivity) {
			s.LastActivity = r.FailedAt
		}
		if r.Timestamp.After(s.LastActivity) && r.Kind != KindEvent {
			s.LastActivity = r.Timestamp
		}
		switch r.Kind {
		case KindRetry:
			s.Retries++
		case KindDeadLetter:
			s.DeadLetters++
		case KindRedrive:
			s.Redrives++
		}
		if r.Group != "" {
			services[r.Group] = true
		}
		if r.EventID != "" {
			ids[r.EventID] = true
		}
		if r.Kind != KindEvent {
			continue
		}
		if r.Source != "" {
			services[r.Source] = true
		}
		if r.Type != "" {
			types[r.Type] = true
		}
		if first == nil {
			first = r
		}
		last = r
	}
	if first == nil && len(sorted) > 0 { // only copies seen: a retry or a dead letter
		first, last = &sorted[0], &sorted[len(sorted)-1]
		if last.Type != "" {
			types[last.Type] = true
		}
	}
	s.Events = len(ids)
	if first != nil {
		s.Start, s.RootType, s.RootKey, s.RootSource = first.Time, first.Type, first.Key, first.Source
		s.End, s.LastType, s.LastEventID, s.LastSource = last.Time, last.Type, last.EventID, last.Source
		s.LastTopic, s.LastPartition, s.LastOffset = last.Topic, last.Partition, last.Offset
	}
	s.Services = sortedKeys(services)
	s.Types = sortedKeys(types)
	return s
}

// SortRecords sorts records by time, then topic, partition and offset.
func SortRecords(recs []Record) {
	sort.SliceStable(recs, func(i, j int) bool {
		a, b := &recs[i], &recs[j]
		if !a.Time.Equal(b.Time) {
			return a.Time.Before(b.Time)
		}
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Offset < b.Offset
	})
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Pending is an event a subscribed group has not consumed (see
// Store.Unconsumed).
type Pending struct {
	Record
	Waiting   string `json:"waiting"`   // the group that has not consumed it
	Committed int64  `json:"committed"` // the group's committed offset on the partition
}

// TypeStat is one row of Store.TypeStats.
type TypeStat struct {
	Type      string
	Topic     string
	Source    string
	SchemaID  int
	Count     int64
	Recent    int64 // since the recentSince given
	FirstSeen time.Time
	LastSeen  time.Time
}

// Reaction is one edge of the choreography: events of type Cause led
// Source to publish events of type Effect (Effect's causation id is a
// Cause event's id), Count times.
type Reaction struct {
	Cause  string `json:"cause"`
	Effect string `json:"effect"`
	Source string `json:"source"`
	Count  int64  `json:"count"`
}

// SplitList is the inverse of the list encoding stores use for
// FlowSummary.Services and Types and Group.Topics: names joined by commas.
func SplitList(s string) []string {
	if s == "" {
		return []string{}
	}
	return strings.Split(s, ",")
}

// JoinList joins names with commas, as stores keep lists in one column.
func JoinList(l []string) string { return strings.Join(l, ",") }
