package kafkatest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/kafkatest"
)

func TestBrokerVersion(t *testing.T) {
	c := kafkatest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := c.Describe(ctx)
	if d == "" || strings.Contains(d, "unknown") || strings.Contains(d, "no broker answered") {
		t.Fatalf("Describe = %q; want the broker identified", d)
	}
	t.Logf("broker: %s", d)
}

// TestGroupRoundTrip produces records to a fresh topic and reads them back
// through a consumer group, on whichever broker is configured.
func TestGroupRoundTrip(t *testing.T) {
	c := kafkatest.New(t)
	topic := c.Topic(t, 3)
	group := kafkatest.Group(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const n = 300
	prod := c.Client(t, kgo.DefaultProduceTopic(topic))
	want := map[string]string{}
	for i := range n {
		k, v := fmt.Sprintf("key-%d", i%17), fmt.Sprintf("value-%d", i)
		want[v] = k
		prod.Produce(ctx, &kgo.Record{Key: []byte(k), Value: []byte(v)}, nil)
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}

	cons := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	got := map[string]string{}
	lastOffset := map[int32]int64{}
	for len(got) < n {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("got %d of %d records before timeout", len(got), n)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if prev, ok := lastOffset[r.Partition]; ok && r.Offset <= prev {
				t.Errorf("partition %d: offset %d after %d", r.Partition, r.Offset, prev)
			}
			lastOffset[r.Partition] = r.Offset
			if _, dup := got[string(r.Value)]; dup {
				t.Errorf("record %q delivered twice", r.Value)
			}
			got[string(r.Value)] = string(r.Key)
		})
		if err := cons.CommitUncommittedOffsets(ctx); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	for v, k := range want {
		if got[v] != k {
			t.Errorf("record %q: key %q; want %q", v, got[v], k)
		}
	}

	// The group's committed offsets cover every record.
	offs, err := c.Admin().FetchOffsets(ctx, group)
	if err != nil {
		t.Fatalf("fetch offsets: %v", err)
	}
	var committed int64
	offs.Each(func(o kadm.OffsetResponse) { committed += o.At })
	if committed != n {
		t.Fatalf("committed offsets sum to %d; want %d", committed, n)
	}
}

func TestTopicNamesAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		n := kafkatest.Name(t, "t")
		if seen[n] {
			t.Fatalf("name %q returned twice", n)
		}
		seen[n] = true
	}
}

func TestEmbeddedOnlySkipsOnRealCluster(t *testing.T) {
	t.Setenv(kafkatest.EnvBrokers, "127.0.0.1:1")
	ran := false
	t.Run("inner", func(t *testing.T) {
		defer func() { ran = true }()
		kafkatest.New(t, kafkatest.EmbeddedOnly("fault injection"))
		t.Error("New returned on a real cluster; want a skip")
	})
	if !ran {
		t.Fatal("inner test did not run")
	}
}
