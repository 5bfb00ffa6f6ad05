package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/internal/testevents"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/schema"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// dlqFixture is a cluster, a registry and one service's dead-letter topic.
type dlqFixture struct {
	c      *kafkatest.Cluster
	regURL string
	reg    *schema.Registry
	codec  *schema.Codec
	group  string
	topic  string
	cl     *kgo.Client
	w      *dlq.Writer
}

func newDLQFixture(t *testing.T, partitions int32) *dlqFixture {
	t.Helper()
	c := kafkatest.New(t)
	url := kafkatest.SchemaRegistry(t)
	reg, err := schema.NewRegistry([]string{url})
	if err != nil {
		t.Fatal(err)
	}
	group := kafkatest.Group(t)
	fx := &dlqFixture{c: c, regURL: url, reg: reg, codec: schema.NewCodec(reg), group: group, topic: dlq.Topic(group)}
	c.CreateTopic(t, fx.topic, partitions)
	fx.keepForever(t, fx.topic)
	fx.cl = c.Client(t, kgo.ProducerBatchMaxBytes(16<<20))
	fx.w = dlq.NewWriter(fx.cl, reg)
	return fx
}

// keepForever turns retention off for topic: the fixtures write records
// with fixed times in the past, which a real broker's retention would
// delete.
func (fx *dlqFixture) keepForever(t *testing.T, topic string) {
	t.Helper()
	v := "-1"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resps, err := fx.c.Admin().AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: &v}}, topic)
	if err == nil {
		_, err = resps.On(topic, nil)
	}
	if err != nil {
		t.Fatalf("retention.ms of %s: %v", topic, err)
	}
}

// args returns the connection flags for the fixture.
func (fx *dlqFixture) args(more ...string) []string {
	return append([]string{"--brokers", strings.Join(fx.c.Seeds(), ","), "--registry", fx.regURL}, more...)
}

// choreo runs the command line and returns its status and outputs, with
// the fixture's group name replaced by "svc" so output is the same on
// every run.
func (fx *dlqFixture) choreo(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	root := newRootCmd()
	root.SetIn(strings.NewReader(stdin))
	var out, errOut bytes.Buffer
	code := execute(context.Background(), root, args, &out, &errOut)
	norm := func(s string) string { return strings.ReplaceAll(s, fx.group, "svc") }
	return code, norm(out.String()), norm(errOut.String())
}

// at is a fixed time of the golden dead letters.
func at(hhmmss string) time.Time {
	t, err := time.Parse(time.RFC3339, "2024-05-01T"+hhmmss+"Z")
	if err != nil {
		panic(err)
	}
	return t
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to write it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

// goldenLetter is one dead letter of the golden set.
type goldenLetter struct {
	topic     string
	part      int32
	off       int64
	key       string
	typ       string // "" for none
	id, corr  string
	kind      choreo.ErrorKind
	msg       string
	attempts  int
	at        time.Time
	redriveNo int    // choreo-redrive-count of the original
	from      string // choreo-replayed-from of the original
	value     []byte // nil: an encoded OrderPlaced
}

// write writes the golden set: five dead letters (one written twice),
// one record that is not a dead letter, and a redrive log naming one.
func (fx *dlqFixture) writeGolden(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	id, err := fx.reg.Register(ctx, fx.group+".orders-value", testevents.OrderPlaced{}.AvroSchema()) // a subject of its own on a shared registry
	if err != nil {
		t.Fatal(err)
	}
	order, err := fx.codec.Encode(id, testevents.OrderPlaced{}.AvroSchema(), testevents.OrderPlaced{
		OrderID: "ord-1", CustomerID: "cust-7", AmountCents: 1999, Currency: "EUR", Items: 2, PlacedAt: at("09:59:00"),
	})
	if err != nil {
		t.Fatal(err)
	}
	orderType := testevents.OrderPlaced{}.AvroSchema().FullName()
	letters := []goldenLetter{
		{topic: "orders", part: 0, off: 10, key: "ord-1", typ: orderType, id: "evt-1", corr: "corr-1", kind: choreo.KindPermanent,
			msg: "card declined", attempts: 1, at: at("10:00:00")},
		{topic: "orders", part: 0, off: 10, key: "ord-1", typ: orderType, id: "evt-1", corr: "corr-1", kind: choreo.KindPermanent,
			msg: "card declined", attempts: 1, at: at("10:00:01")}, // a duplicate
		{topic: "orders", part: 1, off: 20, key: "ord-2", typ: orderType, id: "evt-2", corr: "corr-2", kind: choreo.KindRetriesExhausted,
			msg: "4 attempts failed, last: payment api: 503 Service Unavailable", attempts: 4, at: at("10:30:00")},
		{topic: "payments", part: 0, off: 5, key: "pay-9", typ: "shop.PaymentRequested", id: "evt-3", corr: "corr-1", kind: choreo.KindTimeout,
			msg: "handler ran past its 30s deadline:\ncontext deadline exceeded", attempts: 3, at: at("11:15:00"), value: []byte("not avro")},
		{topic: "orders", part: 0, off: 10, key: "ord-1", typ: orderType, id: "evt-1", corr: "corr-1", kind: choreo.KindPermanent,
			msg: "card declined again", attempts: 1, at: at("12:00:00"), redriveNo: 1, from: fx.topic + "/0/0"},
	}
	for _, l := range letters {
		hs := []kgo.RecordHeader{{Key: choreo.HeaderID, Value: []byte(l.id)}, {Key: choreo.HeaderCorrelationID, Value: []byte(l.corr)}}
		if l.typ != "" {
			hs = append(hs, kgo.RecordHeader{Key: choreo.HeaderType, Value: []byte(l.typ)})
		}
		if l.redriveNo > 0 {
			hs = append(hs, kgo.RecordHeader{Key: choreo.HeaderRedriveCount, Value: []byte(strconv.Itoa(l.redriveNo))},
				kgo.RecordHeader{Key: choreo.HeaderReplayedFrom, Value: []byte(l.from)})
		}
		value := l.value
		if value == nil {
			value = order
		}
		orig := &kgo.Record{Topic: l.topic, Partition: l.part, Offset: l.off, Timestamp: l.at.Add(-time.Minute), Key: []byte(l.key), Value: value, Headers: hs}
		dl := dlq.New(orig, dlq.Failure{Err: errors.New(l.msg), Kind: l.kind, Attempts: l.attempts,
			FirstFailure: l.at.Add(-30 * time.Second), LastFailure: l.at, Service: "payment-service", Group: fx.group})
		dl.Error.Type = "*errors.errorString"
		dl.DeadLetteredAt = l.at
		if err := fx.w.Write(ctx, fx.topic, dl); err != nil {
			t.Fatal(err)
		}
	}
	// A record that is not a dead letter.
	if err := fx.cl.ProduceSync(ctx, &kgo.Record{Topic: fx.topic, Key: []byte("x"), Value: []byte("hello"), Timestamp: at("12:30:00")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// The redrive log says 0:2 (ord-2) was redriven once.
	logTopic := dlq.RedriveLog(fx.topic)
	fx.c.CreateTopic(t, logTopic, 1)
	fx.keepForever(t, logTopic)
	rec := &kgo.Record{Topic: logTopic, Key: []byte("0:2"), Timestamp: at("13:00:00"),
		Value: []byte(`{"dead_letter":"` + fx.topic + `/0/2","original":"orders/1/20","event_id":"evt-2","at":"2024-05-01T13:00:00Z","to":"` +
			dlq.RedriveTopic(fx.group) + `","by":"alice@ops","count":1,"redrive_count":1}`)}
	if err := fx.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestDLQGolden checks the table, JSON and stats views of a known set of
// dead letters against files under testdata.
func TestDLQGolden(t *testing.T) {
	fx := newDLQFixture(t, 1)
	fx.writeGolden(t)
	t.Setenv("COLUMNS", "160")
	for _, tc := range []struct {
		name string
		args []string
		file string
		note string // on stderr
	}{
		{"list table", []string{"dlq", "list", fx.group}, "dlq-list.golden", ""},
		{"list json", []string{"dlq", "list", fx.group, "-o", "json"}, "dlq-list.json.golden", ""},
		{"list jsonl filtered", []string{"dlq", "list", fx.group, "-o", "jsonl", "--kind", "permanent", "--type", "OrderPlaced"}, "dlq-list-permanent.jsonl.golden", ""},
		{"list grep and key", []string{"dlq", "list", fx.group, "--grep", "(?i)503", "--key", "ord-2"}, "dlq-list-grep.golden", ""},
		{"list since until", []string{"dlq", "list", fx.group, "--since", "2024-05-01T10:15:00Z", "--until", "2024-05-01T12:00:00Z"}, "dlq-list-window.golden", ""},
		{"list limit", []string{"dlq", "list", fx.group, "--limit", "2"}, "dlq-list-limit.golden", ""},
		{"list invalid only", []string{"dlq", "list", fx.group, "--kind", "invalid", "-o", "jsonl"}, "dlq-list-invalid.jsonl.golden", ""},
		{"list from headers", []string{"dlq", "list", fx.group, "--registry", "http://127.0.0.1:1"}, "dlq-list-headers.golden", "schema registry unreachable"},
		{"stats table", []string{"dlq", "stats", fx.group, "--by", "hour"}, "dlq-stats.golden", ""},
		{"stats json", []string{"dlq", "stats", fx.group, "-o", "json", "--by", "hour"}, "dlq-stats.json.golden", ""},
		{"show table", []string{"dlq", "show", fx.group, "0:0"}, "dlq-show.golden", ""},
		{"show json", []string{"dlq", "show", fx.group, "0:2", "-o", "json"}, "dlq-show.json.golden", ""},
		{"show invalid", []string{"dlq", "show", fx.group, "0:5"}, "dlq-show-invalid.golden", ""},
		{"show from headers", []string{"dlq", "show", "--topic", fx.topic, "0:4", "--registry", ""}, "dlq-show-headers.golden", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(tc.args[:2:2], fx.args(tc.args[2:]...)...)
			code, out, errOut := fx.choreo(t, "", args...)
			if code != 0 {
				t.Fatalf("status %d; want 0 (stderr %q)", code, errOut)
			}
			if tc.note == "" && errOut != "" {
				t.Errorf("stderr %q; want nothing", errOut)
			}
			if !strings.Contains(errOut, tc.note) {
				t.Errorf("stderr %q; want it to say %q", errOut, tc.note)
			}
			golden(t, tc.file, out)
		})
	}
}
