package consumer_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/schema"
)

// TestProvisioningFailsFastWithoutCreateRights runs the consumer as a user
// that may read and write every topic and group but create none: with its
// dead-letter topic missing, Run must fail at once and say why.
func TestProvisioningFailsFastWithoutCreateRights(t *testing.T) {
	all := func(r kmsg.ACLResourceType, op kmsg.ACLOperation) kfake.ACL {
		return kfake.ACL{Resource: r, Name: "*", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true}
	}
	fake, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("PLAIN", "admin", "admin-pw"),
		kfake.User("PLAIN", "svc", "svc-pw",
			all(kmsg.ACLResourceTypeTopic, kmsg.ACLOperationRead),
			all(kmsg.ACLResourceTypeTopic, kmsg.ACLOperationWrite),
			all(kmsg.ACLResourceTypeGroup, kmsg.ACLOperationRead),
			all(kmsg.ACLResourceTypeCluster, kmsg.ACLOperationDescribe),
		),
		kfake.SeedTopics(2, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()

	reg, err := schema.NewRegistry([]string{kafkatest.SchemaRegistry(t)})
	if err != nil {
		t.Fatal(err)
	}
	conn := connection.Config{Brokers: fake.ListenAddrs(), SASLMechanism: "PLAIN", SASLUsername: "svc", SASLPassword: "svc-pw"}
	c, err := consumer.New(conn, reg, "payments", consumer.BlockingRetries())
	if err != nil {
		t.Fatal(err)
	}
	consumer.Handle(c, "orders", func(context.Context, consumer.Event[OrderPlaced]) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err = c.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "payments.dlq does not exist and this service may not create it") {
		t.Fatalf("Run = %v; want a fast failure naming the missing DLQ topic", err)
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("Run took %v to fail", time.Since(start))
	}

	// Once an administrator creates it, the same consumer configuration runs.
	admCl, err := kgo.NewClient(kgo.SeedBrokers(fake.ListenAddrs()...), saslAdmin())
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	if _, err := kadm.NewClient(admCl).CreateTopics(ctx, 2, 1, nil, "payments.dlq", "payments.redrive"); err != nil {
		t.Fatal(err)
	}
	c2, err := consumer.New(conn, reg, "payments", consumer.BlockingRetries())
	if err != nil {
		t.Fatal(err)
	}
	consumer.Handle(c2, "orders", func(context.Context, consumer.Event[OrderPlaced]) error { return nil })
	stop := running(t, c2)
	eventually(t, 20*time.Second, "consumer ready", c2.Ready)
	if err := stop(); err != nil {
		t.Fatalf("Run with the DLQ topic present: %v", err)
	}
}

// TestNoProvisioningFailsFast: with provisioning off and the service's
// own topics missing, Run returns at once with an error that names every
// missing topic and says how to create it; the consumer never becomes
// ready.
func TestNoProvisioningFailsFast(t *testing.T) {
	h := newHarness(t, 3)
	group := kafkatest.Group(t)
	c := h.consumer(group, consumer.NoProvisioning(), consumer.RetryTopics(time.Second, time.Minute))
	consumer.Handle(c, h.topic, func(context.Context, consumer.Event[OrderPlaced]) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.Run(ctx)
	if err == nil {
		t.Fatal("Run with its topics missing and provisioning off returned nil; want an error")
	}
	if ctx.Err() != nil {
		t.Fatalf("Run returned only when its context ended (%v); want it to fail at once", err)
	}
	for _, want := range []string{dlq.Topic(group), group + ".retry.1-1s", group + ".retry.2-1m", dlq.RedriveTopic(group),
		"at least 3 partitions", "max.message.bytes=9437184"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run = %v; want it to mention %q", err, want)
		}
	}
	if c.Ready() {
		t.Error("Ready after Run failed")
	}

	// With the topics created by someone else, the same configuration runs.
	for _, name := range []string{dlq.Topic(group), group + ".retry.1-1s", group + ".retry.2-1m", dlq.RedriveTopic(group)} {
		h.cluster.CreateTopic(t, name, 3)
	}
	c2 := h.consumer(group, consumer.NoProvisioning(), consumer.RetryTopics(time.Second, time.Minute))
	handled := make(chan struct{}, 1)
	consumer.Handle(c2, h.topic, func(context.Context, consumer.Event[OrderPlaced]) error {
		handled <- struct{}{}
		return nil
	})
	stop := running(t, c2)
	eventually(t, 20*time.Second, "consumer ready", c2.Ready)
	if _, err := h.prod.Publish(context.Background(), h.topic, "k", order("k", 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-handled:
	case <-time.After(20 * time.Second):
		t.Fatal("record not handled with the topics present")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestMissingSourceTopicNotReady: a consumer whose source topic does not
// exist runs, says why it is not ready, and becomes ready and handles the
// topic's records once the topic is created.
func TestMissingSourceTopicNotReady(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	missing := kafkatest.Name(t, "later")
	c := h.consumer(group, consumer.BlockingRetries())
	var handled atomic.Int64
	consumer.Handle(c, missing, func(context.Context, consumer.Event[OrderPlaced]) error {
		handled.Add(1)
		return nil
	})
	stop := running(t, c)
	want := "source topic " + missing + " does not exist"
	eventually(t, 20*time.Second, "CheckReady naming the missing topic", func() bool {
		err := c.CheckReady()
		return err != nil && strings.Contains(err.Error(), want)
	})
	time.Sleep(500 * time.Millisecond) // the group may have joined meanwhile: still not ready
	if err := c.CheckReady(); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("CheckReady = %v; want it to say %q", err, want)
	}

	h.cluster.CreateTopic(t, missing, 2)
	eventually(t, 20*time.Second, "consumer ready once the topic exists", c.Ready)
	for i := range 4 {
		if _, err := h.prod.Publish(context.Background(), missing, fmt.Sprint("k", i), order("o", i)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "records of the new topic handled", func() bool { return handled.Load() == 4 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestNewRejectsBadConfiguration(t *testing.T) {
	reg, err := schema.NewRegistry([]string{"http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	ok := connection.Config{Brokers: []string{"127.0.0.1:1"}}
	for _, tc := range []struct {
		name  string
		conn  connection.Config
		group string
		opts  []consumer.Option
		want  string
	}{
		{"empty group", ok, "", nil, "group"},
		{"group with spaces", ok, "my service", nil, "group"},
		{"no brokers", connection.Config{}, "g", nil, "no seed brokers"},
		{"concurrency", ok, "g", []consumer.Option{consumer.Concurrency(0)}, "concurrency"},
		{"in flight", ok, "g", []consumer.Option{consumer.MaxInFlight(-1)}, "max in flight"},
		{"timeout", ok, "g", []consumer.Option{consumer.HandlerTimeout(0)}, "handler timeout"},
		{"retry attempts", ok, "g", []consumer.Option{consumer.Retry(consumer.RetryPolicy{MaxAttempts: 0, Multiplier: 1})}, "max attempts"},
		{"retry delay", ok, "g", []consumer.Option{consumer.RetryTopics(time.Second, 0)}, "retry topic delay"},
		{"ordering", ok, "g", []consumer.Option{consumer.WithOrdering(consumer.Ordering(9))}, "ordering"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := consumer.New(tc.conn, reg, tc.group, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v; want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := consumer.New(ok, nil, "g"); err == nil {
		t.Error("nil registry: want an error")
	}
	c, err := consumer.New(ok, reg, "g")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "no handlers") {
		t.Errorf("Run with no handlers = %v; want an error", err)
	}
}

func saslAdmin() kgo.Opt {
	return kgo.SASL(plain.Auth{User: "admin", Pass: "admin-pw"}.AsMechanism())
}
