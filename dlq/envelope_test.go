package dlq_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/schema"
)

// Schema ids of the static codec.
const (
	idEnvelope     = 1
	idOrder        = 2
	idString       = 3
	idSameName     = 4
	idEnvelopeNext = 5
)

// sameNameSchema has the envelope's name but nothing else of it.
var sameNameSchema = schema.MustParse(`{"type":"record","name":"DeadLetter","namespace":"choreo.dlq","fields":[{"name":"x","type":"int"}]}`)

// nextEnvelopeSchema is a later version of the envelope: a field more in
// the original and at the end, both with defaults.
var nextEnvelopeSchema = func() *schema.Schema {
	text := strings.Replace(dlq.Schema().Text(),
		`{"name": "topic", "type": "string"`,
		`{"name": "leader_epoch", "type": "int", "default": -1}, {"name": "topic", "type": "string"`, 1)
	i := strings.LastIndex(text, "]")
	text = text[:i] + `, {"name": "replays", "type": "int", "default": 0}` + text[i:]
	return schema.MustParse(text)
}()

func staticCodec() *schema.Codec {
	return schema.NewCodec(schema.StaticSource{
		idEnvelope:     dlq.Schema(),
		idOrder:        orderPlacedSchema,
		idString:       schema.MustParse(`"string"`),
		idSameName:     sameNameSchema,
		idEnvelopeNext: nextEnvelopeSchema,
	})
}

// sample is a dead letter with every field set.
func sample() dlq.DeadLetter {
	rec := &kgo.Record{
		Topic: "orders", Partition: 3, Offset: 42, Timestamp: time.UnixMilli(1_700_000_000_123),
		Key: []byte("ord-1"), Value: []byte{0, 0, 0, 0, 2, 10, 'o', 'r', 'd', '-', '1', 4},
		Headers: []kgo.RecordHeader{
			{Key: choreo.HeaderID, Value: []byte("id-1")},
			{Key: choreo.HeaderType, Value: []byte("choreo.dlqtest.OrderPlaced")},
			{Key: choreo.HeaderCorrelationID, Value: []byte("corr-1")},
			{Key: "x-null"},
		},
	}
	return dlq.New(rec, dlq.Failure{Err: errors.New("boom"), Attempts: 2, Service: "svc", Group: "grp",
		FirstFailure: time.UnixMilli(1_700_000_001_000), LastFailure: time.UnixMilli(1_700_000_002_000)})
}

func encode(t testing.TB, codec *schema.Codec, id int, s *schema.Schema, v any) []byte {
	t.Helper()
	b, err := codec.Encode(id, s, v)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

func TestDecodeRejectsInvalidEnvelopes(t *testing.T) {
	codec := staticCodec()
	valid := encode(t, codec, idEnvelope, dlq.Schema(), sample())
	noTopic := sample()
	noTopic.Original.Topic = ""
	negOffset := sample()
	negOffset.Original.Offset = -1
	wrongMagic := append([]byte{1}, valid[1:]...)

	for _, tc := range []struct {
		name  string
		value []byte
		cause error // also wrapped, when not nil
	}{
		{"nil", nil, schema.ErrEmptyValue},
		{"empty", []byte{}, schema.ErrEmptyValue},
		{"random bytes", []byte("\x8f\x13 not avro at all \xff\xfe"), schema.ErrBadMagicByte},
		{"wrong magic", wrongMagic, schema.ErrBadMagicByte},
		{"short header", []byte{0, 0, 0}, schema.ErrTruncated},
		{"unknown schema id", append([]byte{0, 0, 0, 0, 99}, valid[5:]...), schema.ErrUnknownSchema},
		{"another schema", encode(t, codec, idOrder, orderPlacedSchema, OrderPlaced{OrderID: "o", AmountCents: 1}), nil},
		{"not a record", encode(t, codec, idString, schema.MustParse(`"string"`), "hello"), nil},
		{"same name, other fields", encode(t, codec, idSameName, sameNameSchema, map[string]any{"x": 1}), schema.ErrIncompatibleSchema},
		{"header only", valid[:5], schema.ErrTruncated},
		{"truncated by one byte", valid[:len(valid)-1], schema.ErrTruncated},
		{"truncated in half", valid[:len(valid)/2], nil},
		{"trailing byte", append(append([]byte{}, valid...), 0), schema.ErrTrailingBytes},
		{"empty original topic", encode(t, codec, idEnvelope, dlq.Schema(), noTopic), nil},
		{"negative offset", encode(t, codec, idEnvelope, dlq.Schema(), negOffset), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dl, err := dlq.Decode(context.Background(), codec, &kgo.Record{Topic: "grp.dlq", Value: tc.value})
			if !errors.Is(err, dlq.ErrInvalidEnvelope) {
				t.Fatalf("Decode = %v, %v; want an error wrapping ErrInvalidEnvelope", dl, err)
			}
			if tc.cause != nil && !errors.Is(err, tc.cause) {
				t.Errorf("error %v does not wrap %v", err, tc.cause)
			}
			if dl != nil {
				t.Errorf("Decode returned a dead letter with its error")
			}
		})
	}
	if _, err := dlq.Decode(context.Background(), codec, nil); !errors.Is(err, dlq.ErrInvalidEnvelope) {
		t.Errorf("Decode(nil record) = %v; want ErrInvalidEnvelope", err)
	}
	if _, err := dlq.Decode(context.Background(), nil, &kgo.Record{Value: valid}); err == nil {
		t.Errorf("Decode with a nil codec returned no error")
	}
}

func TestDecodeKeepsUnknownKind(t *testing.T) {
	codec := staticCodec()
	dl := sample()
	dl.Error.Kind = "cosmic_ray"
	got, err := dlq.Decode(context.Background(), codec, &kgo.Record{Value: encode(t, codec, idEnvelope, dlq.Schema(), dl)})
	if err != nil {
		t.Fatalf("Decode of an envelope with an unknown kind: %v", err)
	}
	if got.Error.Kind != "cosmic_ray" || got.Error.KnownKind() {
		t.Errorf("kind %q known %v; want cosmic_ray, unknown", got.Error.Kind, got.Error.KnownKind())
	}
	if v := got.View(context.Background(), codec); v.Error.KnownKind {
		t.Errorf("view says the kind is known")
	}
	if !sample().Error.KnownKind() {
		t.Errorf("kind %q is not known", sample().Error.Kind)
	}
}

// A later version of the envelope, with fields this one lacks, reads.
func TestDecodeNextVersion(t *testing.T) {
	codec := staticCodec()
	want := sample()
	value := encode(t, codec, idEnvelopeNext, nextEnvelopeSchema, want) // new fields take their defaults
	got, err := dlq.Decode(context.Background(), codec, &kgo.Record{Value: value})
	if err != nil {
		t.Fatalf("Decode of the next version: %v", err)
	}
	if got.Original.Topic != want.Original.Topic || got.Original.Offset != want.Original.Offset ||
		!bytes.Equal(got.Original.Value, want.Original.Value) || got.Error != want.Error || !eqPtr(got.EventID, want.EventID) {
		t.Errorf("got %+v; want %+v", got, want)
	}
}

type failingSource struct{}

func (failingSource) SchemaByID(context.Context, int) (*schema.Schema, error) {
	return nil, errors.New("registry unreachable")
}

// A registry outage says nothing about the record: not ErrInvalidEnvelope.
func TestDecodeOutageIsNotInvalid(t *testing.T) {
	valid := encode(t, staticCodec(), idEnvelope, dlq.Schema(), sample())
	_, err := dlq.Decode(context.Background(), schema.NewCodec(failingSource{}), &kgo.Record{Value: valid})
	if err == nil || errors.Is(err, dlq.ErrInvalidEnvelope) {
		t.Fatalf("Decode with the registry down = %v; want an error that is not ErrInvalidEnvelope", err)
	}
}

type myError struct{}

func (*myError) Error() string { return "mine" }

type nilPanicker struct{ msg *string }

func (e *nilPanicker) Error() string { return *e.msg }

func TestNewErrorKindAndType(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		kind     choreo.ErrorKind
		wantKind choreo.ErrorKind
		wantType string
		wantMsg  string
	}{
		{"plain", errors.New("x"), "", choreo.KindRetryable, "*errors.errorString", "x"},
		{"permanent", choreo.Permanent(errors.New("x")), "", choreo.KindPermanent, "*errors.errorString", "permanent: x"},
		{"wrapped cause", fmt.Errorf("parse: %w", &json.SyntaxError{}), "", choreo.KindRetryable, "*json.SyntaxError", "parse: "},
		{"kind given", choreo.Permanent(fmt.Errorf("a: %w", &myError{})), choreo.KindRetriesExhausted, choreo.KindRetriesExhausted, "*dlq_test.myError", "permanent: a: mine"},
		{"deadline", fmt.Errorf("handler: %w", context.DeadlineExceeded), choreo.KindTimeout, choreo.KindTimeout, "context.deadlineExceededError", "handler: context deadline exceeded"},
		{"join", errors.Join(errors.New("a"), errors.New("b")), "", choreo.KindRetryable, "*errors.joinError", "a\nb"},
		{"two %w", fmt.Errorf("%w %w", errors.New("a"), errors.New("b")), "", choreo.KindRetryable, "*fmt.wrapErrors", "a b"},
		{"kind only", &choreo.Error{Kind: choreo.KindEmptyValue}, "", choreo.KindEmptyValue, "*choreo.Error", "empty_value"},
		{"codec error", choreo.Errorf(choreo.KindTruncated, "decode: %w", schema.ErrTruncated), "", choreo.KindTruncated, "*errors.errorString", "truncated: decode: truncated avro data"},
		{"nil", nil, "", choreo.KindPermanent, "", ""},
		{"nil, kind given", nil, choreo.KindMissingHeader, choreo.KindMissingHeader, "", ""},
		{"Error panics", &nilPanicker{}, choreo.KindPanic, choreo.KindPanic, "*dlq_test.nilPanicker", "*dlq_test.nilPanicker: Error method panicked: runtime error: invalid memory address or nil pointer dereference"},
		{"not UTF-8", errors.New("bad \xff byte"), "", choreo.KindRetryable, "*errors.errorString", "bad \uFFFD byte"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dl := dlq.New(&kgo.Record{Topic: "t"}, dlq.Failure{Err: tc.err, Kind: tc.kind})
			want := dlq.ErrorInfo{Kind: tc.wantKind, Type: tc.wantType, Message: tc.wantMsg}
			if tc.name == "wrapped cause" {
				want.Message += (&json.SyntaxError{}).Error()
			}
			if dl.Error != want {
				t.Errorf("got %+v; want %+v", dl.Error, want)
			}
		})
	}
}

func TestNewFields(t *testing.T) {
	rec := &kgo.Record{
		Topic: "orders", Partition: 1, Offset: 7,
		Headers: []kgo.RecordHeader{
			{Key: choreo.HeaderID, Value: []byte("first")},
			{Key: choreo.HeaderID, Value: []byte("last")},
			{Key: choreo.HeaderID, Value: []byte{}}, // empty: ignored
			{Key: choreo.HeaderType},                // null: absent
			{Key: choreo.HeaderCorrelationID, Value: []byte("c\xffd")},
			{Key: "k\xfe", Value: []byte("v")},
		},
	}
	before := time.Now()
	dl := dlq.New(rec, dlq.Failure{Err: errors.New("x")})
	if !eqPtr(dl.EventID, ptr("last")) || dl.EventType != nil || !eqPtr(dl.CorrelationID, ptr("c\uFFFDd")) {
		t.Errorf("event id %s type %s correlation %s; want \"last\" <nil> \"c\\uFFFDd\"", show(dl.EventID), show(dl.EventType), show(dl.CorrelationID))
	}
	if got := dl.Original.Headers[5].Key; got != "k\uFFFD" {
		t.Errorf("header key %q; want %q", got, "k\uFFFD")
	}
	if len(dl.Original.Headers) != 6 || dl.Original.Headers[3].Value != nil || dl.Original.Headers[2].Value == nil {
		t.Errorf("headers %v: null and empty values must be kept apart", dl.Original.Headers)
	}
	if dl.Attempts != 1 {
		t.Errorf("attempts %d; want 1 for 0", dl.Attempts)
	}
	if dl.LastFailure.Before(before) || !dl.FirstFailure.Equal(dl.LastFailure) || dl.DeadLetteredAt.Before(before) {
		t.Errorf("first %v last %v at %v; want now, now, now", dl.FirstFailure, dl.LastFailure, dl.DeadLetteredAt)
	}
	if got := dlq.New(rec, dlq.Failure{Attempts: math.MaxInt}).Attempts; got != math.MaxInt32 {
		t.Errorf("attempts %d for MaxInt; want MaxInt32", got)
	}
	last := time.UnixMilli(1_700_000_000_000)
	if dl := dlq.New(rec, dlq.Failure{LastFailure: last}); !dl.FirstFailure.Equal(last) {
		t.Errorf("first failure %v; want the last, %v", dl.FirstFailure, last)
	}
	if dl := dlq.New(nil, dlq.Failure{Err: errors.New("x")}); dl.Original.Topic != "" || dl.Error.Message != "x" {
		t.Errorf("New(nil record) = %+v", dl)
	}
}

func TestTopicFor(t *testing.T) {
	if got := dlq.Topic("payment-service"); got != "payment-service.dlq" {
		t.Errorf("Topic = %q; want payment-service.dlq", got)
	}
	for _, tc := range []struct {
		group string
		want  string // "" for an error
	}{
		{"payment-service", "payment-service.dlq"},
		{"Orders_v2.eu-1", "Orders_v2.eu-1.dlq"},
		{strings.Repeat("g", 245), strings.Repeat("g", 245) + ".dlq"},
		{strings.Repeat("g", 246), ""},
		{"", ""},
		{"has space", ""},
		{"slash/es", ""},
		{"ünïcode", ""},
	} {
		got, err := dlq.TopicFor(tc.group)
		if tc.want == "" {
			if !errors.Is(err, dlq.ErrInvalidTopic) {
				t.Errorf("TopicFor(%q) = %q, %v; want ErrInvalidTopic", tc.group, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("TopicFor(%q) = %q, %v; want %q", tc.group, got, err, tc.want)
		}
	}
}

func TestRecordRedacts(t *testing.T) {
	reg, err := schema.NewRegistry([]string{kafkatest.SchemaRegistry(t)})
	if err != nil {
		t.Fatal(err)
	}
	dl := sample()
	dl.Original.Headers = append(dl.Original.Headers,
		dlq.Header{Key: "authorization", Value: []byte("Bearer a")},
		dlq.Header{Key: "AUTHORIZATION", Value: []byte("Bearer b")},
		dlq.Header{Key: "x-api-key", Value: []byte("k")},
		dlq.Header{Key: "x-keep", Value: []byte("keep")},
	)
	callerHeaders := append([]dlq.Header(nil), dl.Original.Headers...)
	w := dlq.NewWriter(nil, reg, dlq.Redact("Authorization", "X-API-Key", choreo.HeaderCorrelationID))
	rec, err := w.Record(context.Background(), "grp.dlq", dl)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range dl.Original.Headers {
		if h.Key != callerHeaders[i].Key || !bytes.Equal(h.Value, callerHeaders[i].Value) {
			t.Fatalf("Record changed the caller's header %d: %s=%q", i, h.Key, h.Value)
		}
	}
	if v, n := header(rec, choreo.HeaderCorrelationID); n != 1 || v != dlq.Redacted {
		t.Errorf("readable %s = %q (%d); want %s", choreo.HeaderCorrelationID, v, n, dlq.Redacted)
	}
	if v, _ := header(rec, choreo.HeaderID); v != "id-1" {
		t.Errorf("readable %s = %q; want id-1", choreo.HeaderID, v)
	}
	back, err := dlq.Decode(context.Background(), schema.NewCodec(reg), rec)
	if err != nil {
		t.Fatal(err)
	}
	if !eqPtr(back.CorrelationID, ptr(dlq.Redacted)) {
		t.Errorf("correlation id %s; want redacted", show(back.CorrelationID))
	}
	for _, h := range back.Original.Headers {
		redact := strings.EqualFold(h.Key, "authorization") || h.Key == "x-api-key" || h.Key == choreo.HeaderCorrelationID
		if redact != (string(h.Value) == dlq.Redacted) {
			t.Errorf("envelope header %s=%q: redacted %v, want %v", h.Key, h.Value, !redact, redact)
		}
	}
	if rec.Key == nil || string(rec.Key) != "ord-1" {
		t.Errorf("key %q; want ord-1", rec.Key)
	}
}

func TestReplay(t *testing.T) {
	dl := sample()
	// An original that was a redrive already, with the retry state a
	// retry topic gave it.
	dl.Original.Headers = append(dl.Original.Headers,
		dlq.Header{Key: choreo.HeaderReplayedFrom, Value: []byte("old.dlq/0/1")},
		dlq.Header{Key: choreo.HeaderRedriveCount, Value: []byte("2")},
		dlq.Header{Key: choreo.HeaderAttempt, Value: []byte("4")})
	if n := dl.RedriveCount(); n != 2 {
		t.Errorf("RedriveCount = %d; want 2", n)
	}
	from := &kgo.Record{Topic: "grp.dlq", Partition: 2, Offset: 5}
	rec := dl.Replay(from)
	if rec.Topic != "grp.redrive" || string(rec.Key) != "ord-1" || !bytes.Equal(rec.Value, dl.Original.Value) || !rec.Timestamp.IsZero() || rec.Partition != 0 {
		t.Errorf("replay %+v; want to grp.redrive, key ord-1, the original value, zero timestamp and partition", rec)
	}
	want := []struct{ key, value string }{
		{choreo.HeaderID, "id-1"}, {choreo.HeaderType, "choreo.dlqtest.OrderPlaced"}, {choreo.HeaderCorrelationID, "corr-1"}, {"x-null", ""},
		{choreo.HeaderOriginalTopic, "orders"}, {choreo.HeaderOriginalPartition, "3"}, {choreo.HeaderOriginalOffset, "42"},
		{choreo.HeaderRedriveCount, "3"}, {choreo.HeaderReplayedFrom, "grp.dlq/2/5"},
	}
	if len(rec.Headers) != len(want) {
		t.Fatalf("replay headers %v; want %v", rec.Headers, want)
	}
	for i, w := range want {
		if h := rec.Headers[i]; h.Key != w.key || string(h.Value) != w.value {
			t.Errorf("header %d %s=%q; want %s=%q", i, h.Key, h.Value, w.key, w.value)
		}
	}
	if rec.Headers[3].Value != nil {
		t.Errorf("header x-null = %v; want nil kept", rec.Headers[3].Value)
	}
	if _, n := header(dl.Replay(nil), choreo.HeaderReplayedFrom); n != 0 {
		t.Errorf("Replay(nil) has %d %s headers; want none", n, choreo.HeaderReplayedFrom)
	}

	to := dl.ReplayTo("orders", from)
	if to.Topic != "orders" || len(to.Headers) != 6 {
		t.Fatalf("ReplayTo = %s with headers %v; want orders, the 4 original headers and 2", to.Topic, to.Headers)
	}
	if v, n := header(to, choreo.HeaderRedriveCount); n != 1 || v != "3" {
		t.Errorf("ReplayTo %s = %q (%d); want one, 3", choreo.HeaderRedriveCount, v, n)
	}

	fresh := sample()
	if n := fresh.RedriveCount(); n != 0 {
		t.Errorf("RedriveCount of a first failure = %d; want 0", n)
	}
	if v, _ := header(fresh.Replay(from), choreo.HeaderRedriveCount); v != "1" {
		t.Errorf("first redrive %s = %q; want 1", choreo.HeaderRedriveCount, v)
	}
	fresh.Original.Headers = append(fresh.Original.Headers, dlq.Header{Key: choreo.HeaderRedriveCount, Value: []byte("x")})
	if n := fresh.RedriveCount(); n != 0 {
		t.Errorf("RedriveCount with a bad header = %d; want 0", n)
	}
}

func TestPeek(t *testing.T) {
	h := func(k, v string) kgo.RecordHeader { return kgo.RecordHeader{Key: k, Value: []byte(v)} }
	rec := &kgo.Record{Topic: "grp.dlq", Partition: 1, Offset: 9, Headers: []kgo.RecordHeader{
		h(choreo.HeaderOriginalTopic, "orders"), h(choreo.HeaderOriginalPartition, "3"), h(choreo.HeaderOriginalOffset, "42"),
		h(choreo.HeaderErrorKind, "permanent"), h(choreo.HeaderErrorMessage, "boom"), h(choreo.HeaderAttempt, "2"),
		h(choreo.HeaderID, "id-1"), h(choreo.HeaderType, "T"), h(choreo.HeaderCorrelationID, "c-1"),
		h(choreo.HeaderRedriveCount, "1"), h(choreo.HeaderReplayedFrom, "grp.dlq/0/4"),
	}}
	s, err := dlq.Peek(rec)
	if err != nil {
		t.Fatal(err)
	}
	want := dlq.Summary{OriginalTopic: "orders", OriginalPartition: 3, OriginalOffset: 42, Kind: choreo.KindPermanent, Message: "boom",
		Attempts: 2, EventID: "id-1", EventType: "T", CorrelationID: "c-1", RedriveCount: 1, ReplayedFrom: "grp.dlq/0/4"}
	if s != want {
		t.Errorf("Peek = %+v; want %+v", s, want)
	}
	for name, hs := range map[string][]kgo.RecordHeader{
		"no headers":         nil,
		"no original offset": {h(choreo.HeaderOriginalTopic, "orders"), h(choreo.HeaderOriginalPartition, "3")},
		"bad partition":      {h(choreo.HeaderOriginalTopic, "orders"), h(choreo.HeaderOriginalPartition, "x"), h(choreo.HeaderOriginalOffset, "1")},
		"negative offset":    {h(choreo.HeaderOriginalTopic, "orders"), h(choreo.HeaderOriginalPartition, "0"), h(choreo.HeaderOriginalOffset, "-1")},
		"bad attempts":       {h(choreo.HeaderOriginalTopic, "o"), h(choreo.HeaderOriginalPartition, "0"), h(choreo.HeaderOriginalOffset, "1"), h(choreo.HeaderAttempt, "two")},
	} {
		if _, err := dlq.Peek(&kgo.Record{Headers: hs}); !errors.Is(err, dlq.ErrInvalidEnvelope) {
			t.Errorf("%s: Peek = %v; want ErrInvalidEnvelope", name, err)
		}
	}
	if _, err := dlq.Peek(nil); !errors.Is(err, dlq.ErrInvalidEnvelope) {
		t.Errorf("Peek(nil) = %v; want ErrInvalidEnvelope", err)
	}
}

func TestView(t *testing.T) {
	codec := staticCodec()
	dl := sample()
	dl.Original.Key = []byte{0xff, 0x00}
	dl.Original.Value = encode(t, codec, idOrder, orderPlacedSchema, OrderPlaced{OrderID: "ord-1", AmountCents: 5})

	js := func(v dlq.View) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	decoded := js(dl.View(context.Background(), codec))
	for _, want := range []string{`"key":{"base64":"/wA="}`, `"value":{"amount_cents":5,"order_id":"ord-1"}`,
		`"value_schema":"choreo.dlqtest.OrderPlaced"`, `"event_id":"id-1"`, `{"key":"x-null","value":null}`, `"attempts":2`} {
		if !strings.Contains(decoded, want) {
			t.Errorf("view %s\nlacks %s", decoded, want)
		}
	}
	raw := js(dl.View(context.Background(), nil))
	if !strings.Contains(raw, `"value":{"base64":`) || strings.Contains(raw, "value_error") {
		t.Errorf("view without a codec %s; want the value in base64", raw)
	}
	dl.Original.Value = []byte("plain text")
	text := js(dl.View(context.Background(), codec))
	if !strings.Contains(text, `"value":"plain text"`) || !strings.Contains(text, `"value_error":"bad_magic_byte: schema: decode: first byte is 0x70`) {
		t.Errorf("view of an undecodable value %s", text)
	}
	dl.Original.Value = nil
	if tomb := js(dl.View(context.Background(), codec)); !strings.Contains(tomb, `"value":null`) {
		t.Errorf("view of a tombstone %s; want a null value", tomb)
	}
}

// TestHeaderMessage: the header's message is valid UTF-8, on one line and
// cut at MaxHeaderMessageLen bytes without splitting a character.
func TestHeaderMessage(t *testing.T) {
	long := strings.Repeat("é", dlq.MaxHeaderMessageLen) // 2 bytes each
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "charge failed", "charge failed"},
		{"lines and tabs", "charge failed:\r\n\tgateway down", "charge failed:   gateway down"},
		{"invalid UTF-8", "bad \xff byte", "bad \uFFFD byte"},
		{"cut on a character boundary", long, long[:dlq.MaxHeaderMessageLen]},
		{"cut after an odd byte", "x" + long, "x" + long[:dlq.MaxHeaderMessageLen-2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := dlq.HeaderMessage(tc.in)
			if got != tc.want {
				t.Errorf("HeaderMessage(%.40q…) = %.40q… (%d bytes); want %.40q… (%d bytes)", tc.in, got, len(got), tc.want, len(tc.want))
			}
			if !utf8.ValidString(got) || len(got) > dlq.MaxHeaderMessageLen || strings.ContainsAny(got, "\r\n\t") {
				t.Errorf("HeaderMessage(%.40q…) = %.40q…: not one valid line within the limit", tc.in, got)
			}
		})
	}
}
