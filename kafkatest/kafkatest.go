// Package kafkatest gives tests a Kafka broker: an embedded one (kfake, in
// the test process) by default, or the real cluster named by the
// KAFKA_BROKERS environment variable when it is set. The same test then runs
// on a bare machine and against Apache Kafka in CI.
//
// Every test gets unique topic and group names, so tests sharing a real
// cluster do not see each other's records; the topics a test creates are
// deleted when it ends.
//
// Service authors can use it to test their own services the same way:
//
//	func TestOrderFlow(t *testing.T) {
//		c := kafkatest.New(t)
//		topic := c.Topic(t, 3)
//		cl := c.Client(t)
//		...
//	}
package kafkatest

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/schema/registry"
)

// EnvBrokers is the environment variable naming a real cluster's seed
// brokers, comma separated. When it is empty, New starts an embedded broker.
const EnvBrokers = "KAFKA_BROKERS"

// Cluster is a Kafka cluster a test talks to.
type Cluster struct {
	seeds []string
	fake  *kfake.Cluster // nil on a real cluster
	adm   *kadm.Client
	admCl *kgo.Client
}

type config struct {
	fakeOpts     []kfake.Opt
	embeddedOnly string
}

// Option configures New.
type Option func(*config)

// EmbeddedOptions passes options to the embedded broker (for example
// kfake.NumBrokers or kfake.EnableACLs). They are ignored on a real cluster.
func EmbeddedOptions(opts ...kfake.Opt) Option {
	return func(c *config) { c.fakeOpts = append(c.fakeOpts, opts...) }
}

// EmbeddedOnly makes New skip the test on a real cluster, giving why: for
// tests that need the embedded broker's fault injection.
func EmbeddedOnly(why string) Option {
	return func(c *config) { c.embeddedOnly = why }
}

// New returns the cluster for t: the one named by KAFKA_BROKERS, or a new
// embedded broker that is closed when t ends. It fails t if the cluster
// does not answer a metadata request within 30 seconds.
func New(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	c := &Cluster{}
	if env := strings.TrimSpace(os.Getenv(EnvBrokers)); env != "" {
		if cfg.embeddedOnly != "" {
			t.Skipf("needs the embedded broker (%s); %s is set", cfg.embeddedOnly, EnvBrokers)
		}
		for _, s := range strings.Split(env, ",") {
			if s = strings.TrimSpace(s); s != "" {
				c.seeds = append(c.seeds, s)
			}
		}
	} else {
		fake, err := kfake.NewCluster(cfg.fakeOpts...)
		if err != nil {
			t.Fatalf("kafkatest: start embedded broker: %v", err)
		}
		t.Cleanup(fake.Close)
		c.fake = fake
		c.seeds = fake.ListenAddrs()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.seeds...))
	if err != nil {
		t.Fatalf("kafkatest: admin client: %v", err)
	}
	t.Cleanup(cl.Close)
	c.admCl, c.adm = cl, kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := c.adm.BrokerMetadata(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("kafkatest: cluster %v does not answer: %v", c.seeds, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return c
}

// Seeds returns the seed broker addresses.
func (c *Cluster) Seeds() []string { return append([]string(nil), c.seeds...) }

// Embedded returns the embedded broker, or nil when the test runs against a
// real cluster. Tests use it for fault injection.
func (c *Cluster) Embedded() *kfake.Cluster { return c.fake }

// Admin returns an admin client for the cluster; it is closed when the test
// that created the cluster ends.
func (c *Cluster) Admin() *kadm.Client { return c.adm }

// Describe returns a one-line description of the cluster: embedded, or the
// Kafka version the brokers' API versions point to.
func (c *Cluster) Describe(ctx context.Context) string {
	if c.fake != nil {
		return fmt.Sprintf("embedded kfake broker at %s", strings.Join(c.seeds, ","))
	}
	vs, err := c.adm.ApiVersions(ctx)
	if err != nil {
		return fmt.Sprintf("Kafka at %s (version unknown: %v)", strings.Join(c.seeds, ","), err)
	}
	for _, v := range vs.Sorted() {
		if v.Err == nil {
			return fmt.Sprintf("Kafka at %s (API versions of Apache Kafka %s)", strings.Join(c.seeds, ","), v.VersionGuess())
		}
	}
	return fmt.Sprintf("Kafka at %s (no broker answered ApiVersions)", strings.Join(c.seeds, ","))
}

// Client returns a client for the cluster with the given extra options; it
// is closed when t ends.
func (c *Cluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.seeds...)}, opts...)...)
	if err != nil {
		t.Fatalf("kafkatest: new client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

var seq atomic.Uint64

// Name returns a name unique to this process and test, built from prefix,
// the test's name and a counter; it is a legal topic and group name.
func Name(t testing.TB, prefix string) string {
	n := seq.Add(1)
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '-'
	}, t.Name())
	if len(clean) > 120 {
		clean = clean[:120]
	}
	return fmt.Sprintf("%s.%s.%d.%d", prefix, clean, os.Getpid(), n)
}

// Topic creates a topic with a unique name and the given number of
// partitions (replication factor 1), waits until its partitions have
// leaders, and deletes it when t ends. It returns the name.
func (c *Cluster) Topic(t testing.TB, partitions int32) string {
	t.Helper()
	name := Name(t, "t")
	c.CreateTopic(t, name, partitions)
	return name
}

// CreateTopic creates the named topic, as Topic does, for tests that need a
// name of their own choosing.
func (c *Cluster) CreateTopic(t testing.TB, name string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.adm.CreateTopic(ctx, partitions, 1, nil, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("kafkatest: create topic %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = c.adm.DeleteTopics(ctx, name)
	})
	for {
		td, err := c.adm.ListTopics(ctx, name)
		if err == nil && td[name].Err == nil && len(td[name].Partitions) == int(partitions) {
			ready := true
			for _, p := range td[name].Partitions {
				if p.Leader < 0 || p.Err != nil {
					ready = false
				}
			}
			if ready {
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("kafkatest: topic %s has no leaders: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Group returns a unique consumer group name for t.
func Group(t testing.TB) string { return Name(t, "g") }

// EnvSchemaRegistry is the environment variable naming a real schema
// registry. When it is empty, SchemaRegistry serves an embedded one.
const EnvSchemaRegistry = "SCHEMA_REGISTRY_URL"

// SchemaRegistry returns the URL of a schema registry for t: the one named
// by SCHEMA_REGISTRY_URL, or an embedded registry (the one `choreo dev`
// serves) on a loopback port, stopped when t ends. Subjects are shared on a
// real registry: name them after unique topics.
func SchemaRegistry(t testing.TB) string {
	t.Helper()
	if u := strings.TrimSpace(os.Getenv(EnvSchemaRegistry)); u != "" {
		return u
	}
	reg, err := registry.New()
	if err != nil {
		t.Fatalf("kafkatest: embedded schema registry: %v", err)
	}
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	return srv.URL
}
