package sqlstore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/choreokit/choreo/flows"
	"github.com/choreokit/choreo/flows/sqlstore"
)

// forEachStore runs test against an SQLite store in a temporary directory
// and, when DATABASE_URL is set, a PostgreSQL store in a schema of its own.
func forEachStore(t *testing.T, test func(t *testing.T, st flows.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		st, err := sqlstore.OpenSQLite(context.Background(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		test(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		st := openPostgres(t)
		test(t, st)
	})
}

var schemaSeq atomic.Int64

// openPostgres opens a store in a new schema of the database DATABASE_URL
// names, dropped when t ends; it skips t when DATABASE_URL is not set.
func openPostgres(t testing.TB) *sqlstore.Store {
	t.Helper()
	dbURL := os.Getenv("DATABASE_URL")
	if dbURL == "" {
		t.Skip("DATABASE_URL not set: no PostgreSQL to test against")
	}
	ctx := context.Background()
	admin, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	name := fmt.Sprintf("flows_test_%d_%d", os.Getpid(), schemaSeq.Add(1))
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = admin.ExecContext(context.Background(), "DROP SCHEMA "+name+" CASCADE") })
	st, err := sqlstore.OpenPostgres(ctx, withSearchPath(t, dbURL, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// withSearchPath adds search_path=schema to a database URL or keyword/value
// connection string.
func withSearchPath(t testing.TB, dbURL, schema string) string {
	if strings.HasPrefix(dbURL, "postgres://") || strings.HasPrefix(dbURL, "postgresql://") {
		u, err := url.Parse(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dbURL + " search_path=" + schema
}

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// chain returns the records of a small flow: an order placed, a payment
// caused by it, a retry and a dead letter of the payment by the shipping
// group.
func chain(corr, key string, at time.Time, base int64) []flows.Record {
	ev := func(topic string, off int64, id, typ, src, cause string, d time.Duration) flows.Record {
		return flows.Record{Topic: topic, Partition: 0, Offset: off, Kind: flows.KindEvent, EventID: id, Type: typ,
			Source: src, Time: at.Add(d), Timestamp: at.Add(d), CorrelationID: corr, CausationID: cause, Key: key,
			SchemaID: 7, OriginalPartition: -1, OriginalOffset: -1}
	}
	placed := ev("orders", base, corr, "shop.OrderPlaced", "order-service", "", 0)
	paid := ev("payments", base, corr+"-p", "shop.PaymentAuthorized", "payment-service", corr, 10*time.Millisecond)
	retry := paid
	retry.Topic, retry.Kind, retry.Group, retry.Offset = "shipping-service.retry.1-10s", flows.KindRetry, "shipping-service", base
	retry.Attempt, retry.ErrorKind, retry.NotBefore = 3, "retryable", at.Add(10*time.Second)
	retry.FailedAt = at.Add(20 * time.Millisecond)
	retry.OriginalTopic, retry.OriginalPartition, retry.OriginalOffset = "payments", 0, base
	dead := retry
	dead.Topic, dead.Kind, dead.Offset = "shipping-service.dlq", flows.KindDeadLetter, base
	dead.ErrorKind, dead.ErrorMessage, dead.Timestamp = "retries_exhausted", "boom", at.Add(11*time.Second)
	dead.FailedAt, dead.NotBefore = at.Add(11*time.Second), time.Time{}
	return []flows.Record{placed, paid, retry, dead}
}

func TestWriteIsIdempotentAndSummarizes(t *testing.T) {
	forEachStore(t, func(t *testing.T, st flows.Store) {
		ctx := context.Background()
		recs := append(chain("c1", "o1", t0, 0), chain("c2", "o2", t0.Add(time.Minute), 1)...)
		for range 2 { // the second write is a redelivery: nothing changes
			if err := st.Write(ctx, recs); err != nil {
				t.Fatal(err)
			}
		}
		nrec, nflow, err := st.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if nrec != 8 || nflow != 2 {
			t.Fatalf("counts: got %d records, %d flows; want 8, 2", nrec, nflow)
		}
		f, err := st.Flow(ctx, "c1")
		if err != nil {
			t.Fatal(err)
		}
		want := flows.FlowSummary{CorrelationID: "c1", Start: t0, End: t0.Add(10 * time.Millisecond),
			LastActivity: t0.Add(11 * time.Second), Events: 2, Records: 4, RootType: "shop.OrderPlaced", RootKey: "o1",
			RootSource: "order-service", LastType: "shop.PaymentAuthorized", LastEventID: "c1-p", LastSource: "payment-service",
			LastTopic: "payments", LastPartition: 0, LastOffset: 0, Retries: 1, DeadLetters: 1,
			Services: []string{"order-service", "payment-service", "shipping-service"},
			Types:    []string{"shop.OrderPlaced", "shop.PaymentAuthorized"}}
		if fmt.Sprint(f) != fmt.Sprint(want) {
			t.Errorf("summary:\n got %+v\nwant %+v", f, want)
		}
		if _, err := st.Flow(ctx, "nope"); !errors.Is(err, flows.ErrNotFound) {
			t.Errorf("unknown flow: got %v; want ErrNotFound", err)
		}
		got, err := st.FlowRecords(ctx, "c2")
		if err != nil {
			t.Fatal(err)
		}
		want2 := slices.Clone(recs[4:])
		flows.SortRecords(want2)
		if !slices.Equal(got, want2) {
			t.Errorf("flow records of c2:\n got %+v\nwant %+v", got, want2)
		}
		evs, err := st.EventRecords(ctx, "c1-p")
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 3 {
			t.Errorf("records of event c1-p: got %d; want 3 (event, retry, dead letter)", len(evs))
		}
		ids, err := st.CorrelationsByKey(ctx, "o2", 10)
		if err != nil || !slices.Equal(ids, []string{"c2"}) {
			t.Errorf("flows keyed o2: got %v, %v; want [c2]", ids, err)
		}
		dls, err := st.DeadLetters(ctx, "shipping-service", 10)
		if err != nil || len(dls) != 2 || dls[0].CorrelationID != "c2" {
			t.Errorf("dead letters: got %d (%v), first %+v; want 2, the latest first", len(dls), err, dls)
		}
		if dls, _ := st.DeadLetters(ctx, "payment-service", 10); len(dls) != 0 {
			t.Errorf("dead letters of payment-service: got %d; want 0", len(dls))
		}
		retries, err := st.RecordsOfKind(ctx, flows.KindRetry, []string{"c1", "c2", "c3"})
		if err != nil || len(retries) != 2 {
			t.Errorf("retry records: got %d, %v; want 2", len(retries), err)
		}
	})
}

func TestFlowFilters(t *testing.T) {
	forEachStore(t, func(t *testing.T, st flows.Store) {
		ctx := context.Background()
		var recs []flows.Record
		for i := range 5 {
			c := chain(fmt.Sprintf("c%d", i), fmt.Sprintf("o%d", i), t0.Add(time.Duration(i)*time.Minute), int64(i))
			if i%2 == 1 {
				c = c[:1] // only the order placed
			}
			recs = append(recs, c...)
		}
		if err := st.Write(ctx, recs); err != nil {
			t.Fatal(err)
		}
		ids := func(f flows.FlowFilter) []string {
			t.Helper()
			fs, err := st.Flows(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, f := range fs {
				out = append(out, f.CorrelationID)
			}
			return out
		}
		for _, tc := range []struct {
			name string
			f    flows.FlowFilter
			want []string
		}{
			{"all, most recent first", flows.FlowFilter{}, []string{"c4", "c3", "c2", "c1", "c0"}},
			{"limit", flows.FlowFilter{Limit: 2}, []string{"c4", "c3"}},
			{"type", flows.FlowFilter{Type: "shop.PaymentAuthorized"}, []string{"c4", "c2", "c0"}},
			{"type is a whole name", flows.FlowFilter{Type: "shop.Payment"}, nil},
			{"type with LIKE characters", flows.FlowFilter{Type: "shop.%"}, nil},
			{"service that failed", flows.FlowFilter{Service: "shipping-service"}, []string{"c4", "c2", "c0"}},
			{"service that published", flows.FlowFilter{Service: "order-service"}, []string{"c4", "c3", "c2", "c1", "c0"}},
			{"key", flows.FlowFilter{Key: "o3"}, []string{"c3"}},
			{"since", flows.FlowFilter{Since: t0.Add(3 * time.Minute)}, []string{"c4", "c3"}},
			{"before", flows.FlowFilter{Before: t0.Add(2 * time.Minute), Limit: 1}, []string{"c1"}},
			{"last type not", flows.FlowFilter{NotLastTypes: []string{"shop.PaymentAuthorized", "x"}}, []string{"c3", "c1"}},
			{"dead-lettered", flows.FlowFilter{DeadLettered: true, Since: t0.Add(time.Minute)}, []string{"c4", "c2"}},
		} {
			if got := ids(tc.f); !slices.Equal(got, tc.want) {
				t.Errorf("%s: got %v; want %v", tc.name, got, tc.want)
			}
		}
	})
}

func TestGroupsAndUnconsumed(t *testing.T) {
	forEachStore(t, func(t *testing.T, st flows.Store) {
		ctx := context.Background()
		recs := append(chain("c1", "o1", t0, 0), chain("c2", "o2", t0.Add(time.Minute), 1)...)
		if err := st.Write(ctx, recs); err != nil {
			t.Fatal(err)
		}
		groups := []flows.Group{
			{Name: "payment-service", State: "Stable", Members: 1, Topics: []string{"orders"},
				Offsets: map[string]map[int32]int64{"orders": {0: 2}}, UpdatedAt: t0},
			{Name: "shipping-service", State: "Empty", Topics: []string{"payments", "shipping-service.retry.1-10s"},
				Offsets: map[string]map[int32]int64{"payments": {0: 1}, "shipping-service.retry.1-10s": {0: 0}}, UpdatedAt: t0},
		}
		if err := st.SetGroups(ctx, groups); err != nil {
			t.Fatal(err)
		}
		got, err := st.Groups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(groups) {
			t.Errorf("groups:\n got %+v\nwant %+v", got, groups)
		}
		// payment-service read both orders; shipping-service read the
		// first payment only and neither retry record.
		pend, err := st.Unconsumed(ctx, t0.Add(time.Hour), 100)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, p := range pend {
			lines = append(lines, fmt.Sprintf("%s %s %d", p.Waiting, p.Coordinates(), p.Committed))
		}
		want := []string{
			"shipping-service shipping-service.retry.1-10s/0/0 0",
			"shipping-service payments/0/1 1",
			"shipping-service shipping-service.retry.1-10s/0/1 0",
		}
		if !slices.Equal(lines, want) {
			t.Errorf("unconsumed:\n got %q\nwant %q", lines, want)
		}
		// Due means a retry record's not-before time has come.
		if pend, _ := st.Unconsumed(ctx, t0.Add(5*time.Second), 100); len(pend) != 0 {
			t.Errorf("unconsumed before the retry is due: got %+v; want none", pend)
		}
		if err := st.SetGroups(ctx, groups[:1]); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.Groups(ctx); len(got) != 1 {
			t.Errorf("groups after replacing: got %d; want 1", len(got))
		}
	})
}

func TestStatistics(t *testing.T) {
	forEachStore(t, func(t *testing.T, st flows.Store) {
		ctx := context.Background()
		recs := append(chain("c1", "o1", t0, 0), chain("c2", "o2", t0.Add(time.Minute), 1)...)
		if err := st.Write(ctx, recs); err != nil {
			t.Fatal(err)
		}
		stats, err := st.TypeStats(ctx, t0.Add(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, s := range stats {
			lines = append(lines, fmt.Sprintf("%s %s %s %d %d/%d %s", s.Type, s.Topic, s.Source, s.SchemaID, s.Recent, s.Count, s.LastSeen.Sub(s.FirstSeen)))
		}
		want := []string{
			"shop.OrderPlaced orders order-service 7 1/2 1m0s",
			"shop.PaymentAuthorized payments payment-service 7 1/2 1m0s",
		}
		if !slices.Equal(lines, want) {
			t.Errorf("type stats:\n got %q\nwant %q", lines, want)
		}
		re, err := st.Reactions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(re) != 1 || re[0] != (flows.Reaction{Cause: "shop.OrderPlaced", Effect: "shop.PaymentAuthorized", Source: "payment-service", Count: 2}) {
			t.Errorf("reactions: got %+v", re)
		}
		ds, err := st.Durations(ctx, []string{"shop.PaymentAuthorized"}, t0, 10)
		if err != nil || !slices.Equal(ds, []time.Duration{10 * time.Millisecond, 10 * time.Millisecond}) {
			t.Errorf("durations: got %v, %v; want two of 10ms", ds, err)
		}
	})
}

func TestPrune(t *testing.T) {
	forEachStore(t, func(t *testing.T, st flows.Store) {
		ctx := context.Background()
		recs := append(chain("c1", "o1", t0, 0), chain("c2", "o2", t0.Add(time.Hour), 1)...)
		orphan := flows.Record{Topic: "x.dlq", Offset: 5, Kind: flows.KindDeadLetter, Group: "x", Time: t0, Timestamp: t0,
			OriginalPartition: 0, OriginalOffset: 1}
		recs = append(recs, orphan)
		if err := st.Write(ctx, recs); err != nil {
			t.Fatal(err)
		}
		n, err := st.Prune(ctx, t0.Add(30*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if n != 5 {
			t.Errorf("pruned %d records; want 5 (flow c1 whole, the dead letter outside any flow)", n)
		}
		nrec, nflow, _ := st.Counts(ctx)
		if nrec != 4 || nflow != 1 {
			t.Errorf("after pruning: %d records, %d flows; want 4, 1", nrec, nflow)
		}
		if _, err := st.Flow(ctx, "c1"); !errors.Is(err, flows.ErrNotFound) {
			t.Errorf("pruned flow: got %v; want ErrNotFound", err)
		}
	})
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlstore.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Write(ctx, chain("c1", "o1", t0, 0)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err = sqlstore.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n, _, err := st.Counts(ctx); err != nil || n != 4 {
		t.Errorf("records after reopening: %d, %v; want 4", n, err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	file := t.TempDir() + "/file"
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlstore.OpenSQLite(ctx, file); err == nil {
		t.Error("data directory that is a file: no error")
	}
	if _, err := sqlstore.Open(ctx, "", ""); !errors.Is(err, sqlstore.ErrNoDatabase) {
		t.Errorf("no database: got %v; want ErrNoDatabase", err)
	}
	start := time.Now()
	_, err := sqlstore.OpenPostgres(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
	if err == nil || !strings.Contains(err.Error(), "PostgreSQL") {
		t.Errorf("unreachable PostgreSQL: got %v; want an error naming PostgreSQL", err)
	}
	t.Logf("unreachable PostgreSQL failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
}

// BenchmarkWrite measures index writes in batches of 5000 records (flows
// of four events), summaries included, in each store.
func BenchmarkWrite(b *testing.B) {
	for _, name := range []string{"sqlite", "postgres"} {
		b.Run(name, func(b *testing.B) {
			var st flows.Store
			if name == "sqlite" {
				s, err := sqlstore.OpenSQLite(context.Background(), b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				st = s
			} else {
				st = openPostgres(b)
			}
			recs := make([]flows.Record, b.N)
			for i := range recs {
				corr := fmt.Sprintf("c%d", i/4)
				recs[i] = flows.Record{Topic: "orders", Partition: int32(i % 3), Offset: int64(i), Kind: flows.KindEvent,
					EventID: fmt.Sprintf("e%d", i), Type: fmt.Sprintf("shop.Step%d", i%4), Source: "svc",
					Time: t0.Add(time.Duration(i) * time.Millisecond), Timestamp: t0, CorrelationID: corr, Key: corr,
					OriginalPartition: -1, OriginalOffset: -1}
				if i%4 != 0 {
					recs[i].CausationID = fmt.Sprintf("e%d", i-1)
				}
			}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < len(recs); i += 5000 {
				if err := st.Write(context.Background(), recs[i:min(i+5000, len(recs))]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
		})
	}
}
