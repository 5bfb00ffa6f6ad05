// Package sqlstore keeps the flow index (package flows) in SQL: an
// embedded SQLite file (modernc.org/sqlite, pure Go, nothing to install),
// the default of `choreo flows`, or PostgreSQL (through pgx), for a team
// that shares one index. Both are one Store over database/sql; the SQL is
// the subset the two share (ON CONFLICT upserts, times as integer
// nanoseconds, lists as comma-joined text), and the same tests run against
// both.
//
// Tables, all prefixed choreo_flows_: records (one row per indexed Kafka
// record, keyed by topic, partition and offset), summaries (one row per
// flow), groups and group_offsets (the consumer groups' state).
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // the "sqlite" database/sql driver

	"github.com/choreokit/choreo/flows"
)

// Store is a flows.Store in SQLite or PostgreSQL. Make one with
// OpenSQLite or OpenPostgres. It is safe for concurrent use.
type Store struct {
	db       *sql.DB
	postgres bool
	what     string // for messages: the file, or "PostgreSQL"
}

var _ flows.Store = (*Store)(nil)

// FileName is the name of the SQLite file in the data directory.
const FileName = "flows.db"

// OpenSQLite opens (creating if needed) the index in dir/flows.db.
func OpenSQLite(ctx context.Context, dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sqlstore: data directory: %w", err)
	}
	path := filepath.Join(dir, FileName)
	dsn := "file:" + path + "?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(OFF)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	s := &Store{db: db, what: path}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// OpenPostgres opens the index in the PostgreSQL database at url (a
// postgres:// URL or a keyword/value string, as pgx takes; parameters it
// does not know, such as search_path, are sent to the server), creating
// its tables if needed.
func OpenPostgres(ctx context.Context, url string) (*Store, error) {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: open PostgreSQL: %w", err)
	}
	db.SetMaxOpenConns(8)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlstore: connect to PostgreSQL: %w", err)
	}
	s := &Store{db: db, postgres: true, what: "PostgreSQL"}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// String names the store: the SQLite file, or PostgreSQL.
func (s *Store) String() string {
	if s.postgres {
		return "PostgreSQL"
	}
	return "SQLite " + s.what
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

const schemaSQL = `
CREATE TABLE IF NOT EXISTS choreo_flows_records (
	topic TEXT NOT NULL,
	part INTEGER NOT NULL,
	off BIGINT NOT NULL,
	kind TEXT NOT NULL,
	event_id TEXT NOT NULL,
	type TEXT NOT NULL,
	source TEXT NOT NULL,
	time_ns BIGINT NOT NULL,
	ts_ns BIGINT NOT NULL,
	due_ns BIGINT NOT NULL,
	correlation_id TEXT NOT NULL,
	causation_id TEXT NOT NULL,
	rkey TEXT NOT NULL,
	schema_id INTEGER NOT NULL,
	grp TEXT NOT NULL,
	service TEXT NOT NULL,
	error_kind TEXT NOT NULL,
	error_message TEXT NOT NULL,
	attempt INTEGER NOT NULL,
	failed_ns BIGINT NOT NULL,
	not_before_ns BIGINT NOT NULL,
	replayed_from TEXT NOT NULL,
	orig_topic TEXT NOT NULL,
	orig_part INTEGER NOT NULL,
	orig_off BIGINT NOT NULL,
	PRIMARY KEY (topic, part, off)
);
CREATE INDEX IF NOT EXISTS choreo_flows_records_corr ON choreo_flows_records (correlation_id);
CREATE INDEX IF NOT EXISTS choreo_flows_records_event ON choreo_flows_records (event_id);
CREATE INDEX IF NOT EXISTS choreo_flows_records_cause ON choreo_flows_records (causation_id);
CREATE INDEX IF NOT EXISTS choreo_flows_records_key ON choreo_flows_records (rkey);
CREATE INDEX IF NOT EXISTS choreo_flows_records_kind ON choreo_flows_records (kind, grp, ts_ns);
CREATE TABLE IF NOT EXISTS choreo_flows_summaries (
	correlation_id TEXT PRIMARY KEY,
	start_ns BIGINT NOT NULL,
	end_ns BIGINT NOT NULL,
	last_activity_ns BIGINT NOT NULL,
	events INTEGER NOT NULL,
	records INTEGER NOT NULL,
	root_type TEXT NOT NULL,
	root_key TEXT NOT NULL,
	root_source TEXT NOT NULL,
	last_type TEXT NOT NULL,
	last_event_id TEXT NOT NULL,
	last_source TEXT NOT NULL,
	last_topic TEXT NOT NULL,
	last_part INTEGER NOT NULL,
	last_off BIGINT NOT NULL,
	retries INTEGER NOT NULL,
	dead_letters INTEGER NOT NULL,
	redrives INTEGER NOT NULL,
	services TEXT NOT NULL,
	types TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS choreo_flows_summaries_activity ON choreo_flows_summaries (last_activity_ns);
CREATE INDEX IF NOT EXISTS choreo_flows_summaries_key ON choreo_flows_summaries (root_key);
CREATE TABLE IF NOT EXISTS choreo_flows_groups (
	grp TEXT PRIMARY KEY,
	state TEXT NOT NULL,
	members INTEGER NOT NULL,
	topics TEXT NOT NULL,
	updated_ns BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS choreo_flows_group_offsets (
	grp TEXT NOT NULL,
	topic TEXT NOT NULL,
	part INTEGER NOT NULL,
	off BIGINT NOT NULL,
	PRIMARY KEY (grp, topic, part)
);
CREATE INDEX IF NOT EXISTS choreo_flows_group_offsets_tp ON choreo_flows_group_offsets (topic, part);
`

// migrate creates the tables. PostgreSQL runs the statements one by one
// under an advisory lock, so two indexers starting together do not race.
func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlstore: create tables: %w", err)
	}
	defer tx.Rollback()
	if s.postgres {
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7336210411)"); err != nil {
			return fmt.Errorf("sqlstore: create tables: %w", err)
		}
	}
	for _, stmt := range strings.Split(schemaSQL, ";") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("sqlstore: create tables: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlstore: create tables: %w", err)
	}
	return nil
}

// q rewrites the ? placeholders of query for the database: $1, $2 … for
// PostgreSQL. No query here has a ? elsewhere.
func (s *Store) q(query string) string {
	if !s.postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

const recordColumns = `topic, part, off, kind, event_id, type, source, time_ns, ts_ns, due_ns,
	correlation_id, causation_id, rkey, schema_id, grp, service, error_kind, error_message, attempt,
	failed_ns, not_before_ns, replayed_from, orig_topic, orig_part, orig_off`

const upsertRecord = `INSERT INTO choreo_flows_records (` + recordColumns + `)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (topic, part, off) DO UPDATE SET
	kind = excluded.kind, event_id = excluded.event_id, type = excluded.type, source = excluded.source,
	time_ns = excluded.time_ns, ts_ns = excluded.ts_ns, due_ns = excluded.due_ns,
	correlation_id = excluded.correlation_id, causation_id = excluded.causation_id, rkey = excluded.rkey,
	schema_id = excluded.schema_id, grp = excluded.grp, service = excluded.service,
	error_kind = excluded.error_kind, error_message = excluded.error_message, attempt = excluded.attempt,
	failed_ns = excluded.failed_ns, not_before_ns = excluded.not_before_ns, replayed_from = excluded.replayed_from,
	orig_topic = excluded.orig_topic, orig_part = excluded.orig_part, orig_off = excluded.orig_off`

const summaryColumns = `correlation_id, start_ns, end_ns, last_activity_ns, events, records, root_type, root_key,
	root_source, last_type, last_event_id, last_source, last_topic, last_part, last_off, retries,
	dead_letters, redrives, services, types`

const upsertSummary = `INSERT INTO choreo_flows_summaries (` + summaryColumns + `)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (correlation_id) DO UPDATE SET
	start_ns = excluded.start_ns, end_ns = excluded.end_ns, last_activity_ns = excluded.last_activity_ns,
	events = excluded.events, records = excluded.records, root_type = excluded.root_type,
	root_key = excluded.root_key, root_source = excluded.root_source, last_type = excluded.last_type,
	last_event_id = excluded.last_event_id, last_source = excluded.last_source, last_topic = excluded.last_topic,
	last_part = excluded.last_part, last_off = excluded.last_off, retries = excluded.retries,
	dead_letters = excluded.dead_letters, redrives = excluded.redrives, services = excluded.services,
	types = excluded.types`

// ns and fromNS store times as integer nanoseconds since the Unix epoch,
// 0 for the zero time.
func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNS(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// inChunk is how many values one IN (…) list holds.
const inChunk = 500

// Write stores recs and updates the summaries of their flows, in one
// transaction.
func (s *Store) Write(ctx context.Context, recs []flows.Record) error {
	if len(recs) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlstore: write: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, s.q(upsertRecord))
	if err != nil {
		return fmt.Errorf("sqlstore: write: %w", err)
	}
	defer stmt.Close()
	touched := map[string]bool{}
	for i := range recs {
		r := &recs[i]
		if _, err := stmt.ExecContext(ctx, r.Topic, r.Partition, r.Offset, string(r.Kind), r.EventID, r.Type, r.Source,
			ns(r.Time), ns(r.Timestamp), ns(r.Due()), r.CorrelationID, r.CausationID, r.Key, r.SchemaID, r.Group,
			r.Service, r.ErrorKind, r.ErrorMessage, r.Attempt, ns(r.FailedAt), ns(r.NotBefore), r.ReplayedFrom,
			r.OriginalTopic, r.OriginalPartition, r.OriginalOffset); err != nil {
			return fmt.Errorf("sqlstore: write %s: %w", r.Coordinates(), err)
		}
		if r.CorrelationID != "" {
			touched[r.CorrelationID] = true
		}
	}
	if err := s.summarize(ctx, tx, touched); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlstore: write: commit: %w", err)
	}
	return nil
}

// summarize recomputes the summaries of the flows named in ids from their
// records, inside tx.
func (s *Store) summarize(ctx context.Context, tx *sql.Tx, ids map[string]bool) error {
	all := make([]string, 0, len(ids))
	for id := range ids {
		all = append(all, id)
	}
	byFlow := map[string][]flows.Record{}
	for start := 0; start < len(all); start += inChunk {
		chunk := all[start:min(start+inChunk, len(all))]
		rows, err := tx.QueryContext(ctx, s.q("SELECT "+recordColumns+" FROM choreo_flows_records WHERE correlation_id IN ("+placeholders(len(chunk))+")"), anys(chunk)...)
		if err != nil {
			return fmt.Errorf("sqlstore: summarize flows: %w", err)
		}
		recs, err := scanRecords(rows)
		if err != nil {
			return fmt.Errorf("sqlstore: summarize flows: %w", err)
		}
		for _, r := range recs {
			byFlow[r.CorrelationID] = append(byFlow[r.CorrelationID], r)
		}
	}
	stmt, err := tx.PrepareContext(ctx, s.q(upsertSummary))
	if err != nil {
		return fmt.Errorf("sqlstore: summarize flows: %w", err)
	}
	defer stmt.Close()
	for id, recs := range byFlow {
		f := flows.Summarize(id, recs)
		if _, err := stmt.ExecContext(ctx, f.CorrelationID, ns(f.Start), ns(f.End), ns(f.LastActivity), f.Events, f.Records,
			f.RootType, f.RootKey, f.RootSource, f.LastType, f.LastEventID, f.LastSource, f.LastTopic, f.LastPartition,
			f.LastOffset, f.Retries, f.DeadLetters, f.Redrives, flows.JoinList(f.Services), flows.JoinList(f.Types)); err != nil {
			return fmt.Errorf("sqlstore: summarize flow %s: %w", id, err)
		}
	}
	return nil
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

func anys[T any](l []T) []any {
	out := make([]any, len(l))
	for i, v := range l {
		out[i] = v
	}
	return out
}

// scanRecords reads rows of recordColumns and closes them.
func scanRecords(rows *sql.Rows) ([]flows.Record, error) {
	defer rows.Close()
	var out []flows.Record
	for rows.Next() {
		var r flows.Record
		var kind string
		var t, ts, due, failed, nb int64
		if err := rows.Scan(&r.Topic, &r.Partition, &r.Offset, &kind, &r.EventID, &r.Type, &r.Source, &t, &ts, &due,
			&r.CorrelationID, &r.CausationID, &r.Key, &r.SchemaID, &r.Group, &r.Service, &r.ErrorKind, &r.ErrorMessage,
			&r.Attempt, &failed, &nb, &r.ReplayedFrom, &r.OriginalTopic, &r.OriginalPartition, &r.OriginalOffset); err != nil {
			return nil, err
		}
		r.Kind = flows.Kind(kind)
		r.Time, r.Timestamp, r.FailedAt, r.NotBefore = fromNS(t), fromNS(ts), fromNS(failed), fromNS(nb)
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *Store) records(ctx context.Context, what, where string, args ...any) ([]flows.Record, error) {
	rows, err := s.db.QueryContext(ctx, s.q("SELECT "+recordColumns+" FROM choreo_flows_records "+where), args...)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: %s: %w", what, err)
	}
	recs, err := scanRecords(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: %s: %w", what, err)
	}
	return recs, nil
}

// FlowRecords returns the records of a flow, by time then position.
func (s *Store) FlowRecords(ctx context.Context, correlationID string) ([]flows.Record, error) {
	return s.records(ctx, "flow records", "WHERE correlation_id = ? ORDER BY time_ns, topic, part, off", correlationID)
}

// EventRecords returns the records carrying an event id.
func (s *Store) EventRecords(ctx context.Context, eventID string) ([]flows.Record, error) {
	return s.records(ctx, "event records", "WHERE event_id = ? ORDER BY time_ns, topic, part, off", eventID)
}

// DeadLetters returns a group's dead letters (every group's for ""), the
// most recent first.
func (s *Store) DeadLetters(ctx context.Context, group string, limit int) ([]flows.Record, error) {
	if limit <= 0 {
		limit = 100
	}
	if group == "" {
		return s.records(ctx, "dead letters", "WHERE kind = ? ORDER BY ts_ns DESC, topic, part, off DESC LIMIT ?", string(flows.KindDeadLetter), limit)
	}
	return s.records(ctx, "dead letters", "WHERE kind = ? AND grp = ? ORDER BY ts_ns DESC, topic, part, off DESC LIMIT ?", string(flows.KindDeadLetter), group, limit)
}

// RecordsOfKind returns the records of one kind in the flows named.
func (s *Store) RecordsOfKind(ctx context.Context, kind flows.Kind, correlationIDs []string) ([]flows.Record, error) {
	var out []flows.Record
	for start := 0; start < len(correlationIDs); start += inChunk {
		chunk := correlationIDs[start:min(start+inChunk, len(correlationIDs))]
		recs, err := s.records(ctx, "records of kind "+string(kind),
			"WHERE kind = ? AND correlation_id IN ("+placeholders(len(chunk))+") ORDER BY time_ns, topic, part, off",
			append([]any{string(kind)}, anys(chunk)...)...)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	return out, nil
}

// CorrelationsByKey returns the flows with an event keyed key.
func (s *Store) CorrelationsByKey(ctx context.Context, key string, limit int) ([]string, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT correlation_id, MAX(time_ns) AS t FROM choreo_flows_records
		WHERE rkey = ? AND correlation_id <> '' GROUP BY correlation_id ORDER BY t DESC LIMIT ?`), key, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: flows by key: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		var t int64
		if err := rows.Scan(&id, &t); err != nil {
			return nil, fmt.Errorf("sqlstore: flows by key: %w", err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: flows by key: %w", err)
	}
	return out, nil
}

func scanSummaries(rows *sql.Rows) ([]flows.FlowSummary, error) {
	defer rows.Close()
	var out []flows.FlowSummary
	for rows.Next() {
		var f flows.FlowSummary
		var start, end, act int64
		var services, types string
		if err := rows.Scan(&f.CorrelationID, &start, &end, &act, &f.Events, &f.Records, &f.RootType, &f.RootKey,
			&f.RootSource, &f.LastType, &f.LastEventID, &f.LastSource, &f.LastTopic, &f.LastPartition, &f.LastOffset,
			&f.Retries, &f.DeadLetters, &f.Redrives, &services, &types); err != nil {
			return nil, err
		}
		f.Start, f.End, f.LastActivity = fromNS(start), fromNS(end), fromNS(act)
		f.Services, f.Types = flows.SplitList(services), flows.SplitList(types)
		out = append(out, f)
	}
	return out, rows.Err()
}

// likeElem is a LIKE pattern matching a comma-joined list that holds v.
func likeElem(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%," + r.Replace(v) + ",%"
}

// Flows returns the flows matching f, the most recently active first.
func (s *Store) Flows(ctx context.Context, f flows.FlowFilter) ([]flows.FlowSummary, error) {
	var where []string
	var args []any
	if !f.Since.IsZero() {
		where, args = append(where, "last_activity_ns >= ?"), append(args, ns(f.Since))
	}
	if !f.Before.IsZero() {
		where, args = append(where, "last_activity_ns < ?"), append(args, ns(f.Before))
	}
	if f.Type != "" {
		where, args = append(where, `(',' || types || ',') LIKE ? ESCAPE '\'`), append(args, likeElem(f.Type))
	}
	if f.Service != "" {
		where, args = append(where, `(',' || services || ',') LIKE ? ESCAPE '\'`), append(args, likeElem(f.Service))
	}
	if f.Key != "" {
		where, args = append(where, "root_key = ?"), append(args, f.Key)
	}
	if len(f.NotLastTypes) > 0 {
		where, args = append(where, "last_type NOT IN ("+placeholders(len(f.NotLastTypes))+")"), append(args, anys(f.NotLastTypes)...)
	}
	if f.DeadLettered {
		where = append(where, "dead_letters > 0")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	query := "SELECT " + summaryColumns + " FROM choreo_flows_summaries"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY last_activity_ns DESC, correlation_id LIMIT ?"
	rows, err := s.db.QueryContext(ctx, s.q(query), append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: flows: %w", err)
	}
	out, err := scanSummaries(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: flows: %w", err)
	}
	return out, nil
}

// Flow returns one flow's summary, or an error wrapping flows.ErrNotFound.
func (s *Store) Flow(ctx context.Context, correlationID string) (flows.FlowSummary, error) {
	rows, err := s.db.QueryContext(ctx, s.q("SELECT "+summaryColumns+" FROM choreo_flows_summaries WHERE correlation_id = ?"), correlationID)
	if err != nil {
		return flows.FlowSummary{}, fmt.Errorf("sqlstore: flow: %w", err)
	}
	out, err := scanSummaries(rows)
	if err != nil {
		return flows.FlowSummary{}, fmt.Errorf("sqlstore: flow: %w", err)
	}
	if len(out) == 0 {
		return flows.FlowSummary{}, fmt.Errorf("flow %s: %w", correlationID, flows.ErrNotFound)
	}
	return out[0], nil
}

// SetGroups replaces the groups' state.
func (s *Store) SetGroups(ctx context.Context, groups []flows.Group) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlstore: set groups: %w", err)
	}
	defer tx.Rollback()
	for _, stmt := range []string{"DELETE FROM choreo_flows_groups", "DELETE FROM choreo_flows_group_offsets"} {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("sqlstore: set groups: %w", err)
		}
	}
	gs, err := tx.PrepareContext(ctx, s.q("INSERT INTO choreo_flows_groups (grp, state, members, topics, updated_ns) VALUES (?, ?, ?, ?, ?)"))
	if err != nil {
		return fmt.Errorf("sqlstore: set groups: %w", err)
	}
	defer gs.Close()
	offStmt, err := tx.PrepareContext(ctx, s.q("INSERT INTO choreo_flows_group_offsets (grp, topic, part, off) VALUES (?, ?, ?, ?)"))
	if err != nil {
		return fmt.Errorf("sqlstore: set groups: %w", err)
	}
	defer offStmt.Close()
	for _, g := range groups {
		if _, err := gs.ExecContext(ctx, g.Name, g.State, g.Members, flows.JoinList(g.Topics), ns(g.UpdatedAt)); err != nil {
			return fmt.Errorf("sqlstore: set group %s: %w", g.Name, err)
		}
		for topic, parts := range g.Offsets {
			for p, o := range parts {
				if _, err := offStmt.ExecContext(ctx, g.Name, topic, p, o); err != nil {
					return fmt.Errorf("sqlstore: set group %s: %w", g.Name, err)
				}
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlstore: set groups: commit: %w", err)
	}
	return nil
}

// Groups returns the groups' state, sorted by name.
func (s *Store) Groups(ctx context.Context) ([]flows.Group, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT grp, state, members, topics, updated_ns FROM choreo_flows_groups ORDER BY grp")
	if err != nil {
		return nil, fmt.Errorf("sqlstore: groups: %w", err)
	}
	var out []flows.Group
	idx := map[string]int{}
	for rows.Next() {
		var g flows.Group
		var topics string
		var upd int64
		if err := rows.Scan(&g.Name, &g.State, &g.Members, &topics, &upd); err != nil {
			rows.Close()
			return nil, fmt.Errorf("sqlstore: groups: %w", err)
		}
		g.Topics, g.UpdatedAt, g.Offsets = flows.SplitList(topics), fromNS(upd), map[string]map[int32]int64{}
		idx[g.Name] = len(out)
		out = append(out, g)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: groups: %w", err)
	}
	rows, err = s.db.QueryContext(ctx, "SELECT grp, topic, part, off FROM choreo_flows_group_offsets")
	if err != nil {
		return nil, fmt.Errorf("sqlstore: group offsets: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var grp, topic string
		var p int32
		var o int64
		if err := rows.Scan(&grp, &topic, &p, &o); err != nil {
			return nil, fmt.Errorf("sqlstore: group offsets: %w", err)
		}
		i, ok := idx[grp]
		if !ok {
			continue
		}
		if out[i].Offsets[topic] == nil {
			out[i].Offsets[topic] = map[int32]int64{}
		}
		out[i].Offsets[topic][p] = o
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: group offsets: %w", err)
	}
	return out, nil
}

// Unconsumed returns the events due before dueBefore that a group with a
// committed offset on their partition has not consumed yet.
func (s *Store) Unconsumed(ctx context.Context, dueBefore time.Time, limit int) ([]flows.Pending, error) {
	if limit <= 0 {
		limit = 1000
	}
	cols := "r." + strings.ReplaceAll(strings.Join(strings.Fields(recordColumns), " "), ", ", ", r.")
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+cols+`, o.grp, o.off FROM choreo_flows_group_offsets o
		JOIN choreo_flows_records r ON r.topic = o.topic AND r.part = o.part AND r.off >= o.off
		WHERE r.kind IN ('event', 'retry', 'redrive') AND r.due_ns < ? AND r.correlation_id <> ''
		ORDER BY r.due_ns, r.topic, r.part, r.off LIMIT ?`), ns(dueBefore), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: unconsumed events: %w", err)
	}
	defer rows.Close()
	var out []flows.Pending
	for rows.Next() {
		var p flows.Pending
		r := &p.Record
		var kind string
		var t, ts, due, failed, nb int64
		if err := rows.Scan(&r.Topic, &r.Partition, &r.Offset, &kind, &r.EventID, &r.Type, &r.Source, &t, &ts, &due,
			&r.CorrelationID, &r.CausationID, &r.Key, &r.SchemaID, &r.Group, &r.Service, &r.ErrorKind, &r.ErrorMessage,
			&r.Attempt, &failed, &nb, &r.ReplayedFrom, &r.OriginalTopic, &r.OriginalPartition, &r.OriginalOffset,
			&p.Waiting, &p.Committed); err != nil {
			return nil, fmt.Errorf("sqlstore: unconsumed events: %w", err)
		}
		r.Kind = flows.Kind(kind)
		r.Time, r.Timestamp, r.FailedAt, r.NotBefore = fromNS(t), fromNS(ts), fromNS(failed), fromNS(nb)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: unconsumed events: %w", err)
	}
	return out, nil
}

// TypeStats returns the events seen per type, topic, source and schema id.
func (s *Store) TypeStats(ctx context.Context, recentSince time.Time) ([]flows.TypeStat, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT type, topic, source, schema_id, COUNT(*),
		SUM(CASE WHEN time_ns >= ? THEN 1 ELSE 0 END), MIN(time_ns), MAX(time_ns)
		FROM choreo_flows_records WHERE kind = 'event'
		GROUP BY type, topic, source, schema_id ORDER BY type, topic, source, schema_id`), ns(recentSince))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: type statistics: %w", err)
	}
	defer rows.Close()
	var out []flows.TypeStat
	for rows.Next() {
		var st flows.TypeStat
		var first, last int64
		if err := rows.Scan(&st.Type, &st.Topic, &st.Source, &st.SchemaID, &st.Count, &st.Recent, &first, &last); err != nil {
			return nil, fmt.Errorf("sqlstore: type statistics: %w", err)
		}
		st.FirstSeen, st.LastSeen = fromNS(first), fromNS(last)
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: type statistics: %w", err)
	}
	return out, nil
}

// Reactions returns the cause and effect types of the events seen.
func (s *Store) Reactions(ctx context.Context) ([]flows.Reaction, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT p.type, c.type, c.source, COUNT(*) FROM choreo_flows_records c
		JOIN choreo_flows_records p ON p.event_id = c.causation_id AND p.kind = 'event'
		WHERE c.kind = 'event' AND c.causation_id <> ''
		GROUP BY p.type, c.type, c.source ORDER BY p.type, c.type, c.source`)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: reactions: %w", err)
	}
	defer rows.Close()
	var out []flows.Reaction
	for rows.Next() {
		var r flows.Reaction
		if err := rows.Scan(&r.Cause, &r.Effect, &r.Source, &r.Count); err != nil {
			return nil, fmt.Errorf("sqlstore: reactions: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: reactions: %w", err)
	}
	return out, nil
}

// Durations returns the durations of recent flows that ended with one of
// lastTypes.
func (s *Store) Durations(ctx context.Context, lastTypes []string, since time.Time, limit int) ([]time.Duration, error) {
	if len(lastTypes) == 0 {
		return nil, nil
	}
	if limit <= 0 {
		limit = 10000
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT end_ns - start_ns FROM choreo_flows_summaries
		WHERE last_type IN (`+placeholders(len(lastTypes))+`) AND last_activity_ns >= ?
		ORDER BY last_activity_ns DESC LIMIT ?`), append(anys(lastTypes), ns(since), limit)...)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: flow durations: %w", err)
	}
	defer rows.Close()
	var out []time.Duration
	for rows.Next() {
		var d int64
		if err := rows.Scan(&d); err != nil {
			return nil, fmt.Errorf("sqlstore: flow durations: %w", err)
		}
		out = append(out, time.Duration(d))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: flow durations: %w", err)
	}
	return out, nil
}

// Prune deletes flows with no activity since before, with their records,
// and records outside any flow written before it.
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("sqlstore: prune: %w", err)
	}
	defer tx.Rollback()
	var n int64
	for _, st := range []struct {
		sql   string
		count bool
	}{
		{`DELETE FROM choreo_flows_records WHERE correlation_id IN
			(SELECT correlation_id FROM choreo_flows_summaries WHERE last_activity_ns < ?)`, true},
		{"DELETE FROM choreo_flows_summaries WHERE last_activity_ns < ?", false},
		{"DELETE FROM choreo_flows_records WHERE correlation_id = '' AND ts_ns < ?", true},
	} {
		res, err := tx.ExecContext(ctx, s.q(st.sql), ns(before))
		if err != nil {
			return 0, fmt.Errorf("sqlstore: prune: %w", err)
		}
		if st.count {
			k, _ := res.RowsAffected()
			n += k
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("sqlstore: prune: commit: %w", err)
	}
	return n, nil
}

// Counts returns the numbers of records and flows.
func (s *Store) Counts(ctx context.Context) (records, flowCount int64, err error) {
	err = s.db.QueryRowContext(ctx, "SELECT (SELECT COUNT(*) FROM choreo_flows_records), (SELECT COUNT(*) FROM choreo_flows_summaries)").Scan(&records, &flowCount)
	if err != nil {
		return 0, 0, fmt.Errorf("sqlstore: counts: %w", err)
	}
	return records, flowCount, nil
}

// ErrNoDatabase is returned by Open when neither a data directory nor a
// database URL is given.
var ErrNoDatabase = errors.New("no data directory and no database URL")

// Open opens PostgreSQL when databaseURL is not empty, else SQLite in
// dataDir.
func Open(ctx context.Context, dataDir, databaseURL string) (*Store, error) {
	switch {
	case databaseURL != "":
		return OpenPostgres(ctx, databaseURL)
	case dataDir != "":
		return OpenSQLite(ctx, dataDir)
	}
	return nil, fmt.Errorf("sqlstore: %w", ErrNoDatabase)
}
