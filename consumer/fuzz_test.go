package consumer

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
)

// headersFrom splits fuzz input into record headers: lines of key=value.
func headersFrom(s string) []kgo.RecordHeader {
	var hs []kgo.RecordHeader
	for _, line := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(line, "=")
		hs = append(hs, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	return hs
}

// FuzzRetryState: the choreo- headers of a record from a retry topic are
// read from outside (any producer can write a retry topic): reading them
// never panics, and what it accepts is sane.
func FuzzRetryState(f *testing.F) {
	f.Add("choreo-attempt=2\nchoreo-not-before=2026-11-28T05:15:00.123Z\nchoreo-original-topic=orders\nchoreo-original-partition=3\nchoreo-original-offset=42\nce_id=x")
	f.Add("choreo-attempt=-1\nchoreo-original-topic=orders")
	f.Add("choreo-original-partition=99999999999\nchoreo-original-offset=1")
	f.Fuzz(func(t *testing.T, s string) {
		r := &kgo.Record{Topic: "g.retry.1-10s", Headers: headersFrom(s), Value: []byte("v")}
		st, err := readRetryState(r, 1)
		if err != nil {
			if choreo.KindOf(err) != choreo.KindMissingHeader {
				t.Fatalf("error of kind %s; want missing_header: %v", choreo.KindOf(err), err)
			}
			return
		}
		if st.priorAttempts < 0 || st.origin == nil || st.origin.Topic == "" || st.origin.Partition < 0 || st.origin.Offset < 0 {
			t.Fatalf("accepted a bad retry state: %+v %+v", st, st.origin)
		}
		for _, h := range st.origin.Headers {
			if h.Key == choreo.HeaderAttempt || h.Key == choreo.HeaderNotBefore {
				t.Fatalf("the original keeps retry header %s", h.Key)
			}
		}
		_, _ = notBefore(r)
	})
}

// FuzzReadMetadata: the ce_ headers of any record: reading them never
// panics, a record it accepts has an id and a type, and the values read
// are the last of each header.
func FuzzReadMetadata(f *testing.F) {
	f.Add("ce_id=1\nce_type=shop.OrderPlaced\nce_time=2026-11-28T05:15:00Z\nce_source=orders")
	f.Add("ce_id=\nce_type=t")
	f.Add("ce_id=a\nce_id=b\nce_type=t\nce_correlationid=c")
	f.Fuzz(func(t *testing.T, s string) {
		d := &delivery{rec: &kgo.Record{Headers: headersFrom(s)}}
		err := d.readMetadata()
		last := func(k string) string {
			v, _ := lastHeader(d.rec.Headers, k)
			return string(v)
		}
		if err != nil {
			if choreo.KindOf(err) != choreo.KindMissingHeader {
				t.Fatalf("error of kind %s: %v", choreo.KindOf(err), err)
			}
			return
		}
		if d.md.ID == "" || d.md.Type == "" || d.md.ID != last(choreo.HeaderID) || d.md.Type != last(choreo.HeaderType) {
			t.Fatalf("metadata %+v from headers %q", d.md, s)
		}
		if d.md.CorrelationID == "" {
			t.Fatal("no correlation id: want the event's id when the header is absent")
		}
	})
}

// FuzzRetryTopicTier: names of the cluster's topics are read from
// outside: a name is a retry topic of the group only if retryTopicName
// writes exactly that name.
func FuzzRetryTopicTier(f *testing.F) {
	f.Add("pay", "pay.retry.1-10s")
	f.Add("pay", "pay.retry.1-10s.retry.1-10s")
	f.Add("pay", "pay.retry.99-1h30m")
	f.Add("pay", "pay.retry.0-1ms")
	f.Fuzz(func(t *testing.T, group, name string) {
		tier, ok := retryTopicTier(group, name)
		if !ok {
			return
		}
		if tier < 1 {
			t.Fatalf("tier %d for %q", tier, name)
		}
		rest := strings.TrimPrefix(name, group+".retry.")
		_, delay, _ := strings.Cut(rest, "-")
		d, err := time.ParseDuration(delay)
		if err != nil || retryTopicName(group, tier, d) != name {
			t.Fatalf("%q accepted as tier %d of %q, but retryTopicName does not write it", name, tier, group)
		}
	})
}
