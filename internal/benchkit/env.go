package benchkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/schema"
)

// ReachTimeout bounds how long NewEnv waits for the brokers and the
// registry to answer.
const ReachTimeout = 5 * time.Second

// Env is where a run takes place: the cluster, the registry, and the
// prefix of every topic, group and subject the run creates, so that runs
// sharing a real cluster never meet and Close can remove what one made.
type Env struct {
	Conn     connection.Config
	Registry *schema.Registry
	Prefix   string // "choreo-bench-<date>-<time>-<random>"

	cl  *kgo.Client
	adm *kadm.Client
}

// NewEnv connects to the cluster and the registry and checks, within
// ReachTimeout each, that both answer: an unreachable broker or registry
// is one clear error, not a hang.
func NewEnv(ctx context.Context, conn connection.Config, reg *schema.Registry) (*Env, error) {
	if len(conn.Brokers) == 0 {
		return nil, errors.New("benchkit: no brokers")
	}
	if reg == nil {
		return nil, errors.New("benchkit: no schema registry")
	}
	if err := dialAny(ctx, conn.Brokers); err != nil {
		return nil, err
	}
	opts, err := conn.ClientOptions()
	if err != nil {
		return nil, fmt.Errorf("kafka settings: %w", err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	e := &Env{Conn: conn, Registry: reg, Prefix: newPrefix(), cl: cl, adm: kadm.NewClient(cl)}
	mctx, cancel := context.WithTimeout(ctx, ReachTimeout)
	defer cancel()
	if _, err := e.adm.BrokerMetadata(mctx); err != nil {
		cl.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("kafka at %s does not answer within %v: %w", strings.Join(conn.Brokers, ","), ReachTimeout, err)
	}
	rctx, cancel := context.WithTimeout(ctx, ReachTimeout)
	defer cancel()
	if _, err := reg.Client().Subjects(rctx); err != nil {
		cl.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("schema registry: %w", err)
	}
	return e, nil
}

// dialAny fails unless a TCP connection to one of the brokers opens within
// ReachTimeout: the Kafka client retries a refused connection until its
// context ends, which would only say "deadline exceeded".
func dialAny(ctx context.Context, brokers []string) error {
	ctx, cancel := context.WithTimeout(ctx, ReachTimeout)
	defer cancel()
	var d net.Dialer
	var errs []string
	for _, b := range brokers {
		c, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) {
			return ctx.Err()
		}
		errs = append(errs, err.Error())
	}
	return fmt.Errorf("cannot reach kafka at %s: %s", strings.Join(brokers, ","), strings.Join(errs, "; "))
}

// newPrefix returns a name prefix unique to this run.
func newPrefix() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "choreo-bench-" + time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// Name returns the run's prefix and parts joined with dots: a legal topic,
// group and subject name.
func (e *Env) Name(parts ...string) string {
	return strings.Join(append([]string{e.Prefix}, parts...), ".")
}

// CreateTopic creates a topic (replication factor 1 on a one-broker
// cluster, the cluster's default otherwise) and waits until every
// partition has a leader.
func (e *Env) CreateTopic(ctx context.Context, name string, partitions int) error {
	rf := int16(-1) // the broker's default.replication.factor
	if md, err := e.adm.BrokerMetadata(ctx); err == nil && len(md.Brokers) == 1 {
		rf = 1
	}
	resp, err := e.adm.CreateTopic(ctx, int32(partitions), rf, nil, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		td, err := e.adm.ListTopics(wctx, name)
		if err == nil && td[name].Err == nil && len(td[name].Partitions) == partitions {
			ready := true
			for _, p := range td[name].Partitions {
				if p.Leader < 0 || p.Err != nil {
					ready = false
				}
			}
			if ready {
				return nil
			}
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("topic %s: partitions without a leader after 30s: %w", name, wctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// DeleteTopics deletes topics of this run, and the topics the choreo
// consumers of groups provisioned (their dead-letter and retry topics,
// named after the group), freeing the embedded broker's memory as the run
// goes. Errors are ignored: Close tries again.
func (e *Env) DeleteTopics(ctx context.Context, names []string, groups ...string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	del := append([]string(nil), names...)
	if len(groups) > 0 {
		if names, err := e.topicNames(ctx); err == nil {
			for _, t := range names {
				for _, g := range groups {
					if strings.HasPrefix(t, g+".") {
						del = append(del, t)
					}
				}
			}
		}
	}
	if len(del) == 0 {
		return
	}
	_, _ = e.adm.DeleteTopics(ctx, del...)
}

// Close deletes every topic, consumer group and registry subject whose
// name starts with the run's prefix, then closes the admin client. It
// uses a context of its own, so that an interrupted run still cleans up.
func (e *Env) Close() error {
	defer e.cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var errs []error
	if names, err := e.topicNames(ctx); err != nil {
		errs = append(errs, fmt.Errorf("list topics: %w", err))
	} else if ts := e.ours(names); len(ts) > 0 {
		resps, err := e.adm.DeleteTopics(ctx, ts...)
		if err != nil {
			errs = append(errs, fmt.Errorf("delete topics: %w", err))
		}
		for _, r := range resps {
			if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) { // gone already
				errs = append(errs, fmt.Errorf("delete topic %s: %w", r.Topic, r.Err))
			}
		}
	}
	if lg, err := e.adm.ListGroups(ctx); err == nil {
		if gs := e.ours(lg.Groups()); len(gs) > 0 {
			_, _ = e.adm.DeleteGroups(ctx, gs...) // offsets of finished groups; best effort
		}
	}
	rc := e.Registry.Client()
	if subjects, err := rc.Subjects(ctx); err == nil {
		for _, s := range e.ours(subjects) {
			if _, err := rc.DeleteSubject(ctx, s, sr.SoftDelete); err == nil {
				_, _ = rc.DeleteSubject(ctx, s, sr.HardDelete)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("clean up after the run (prefix %s): %w", e.Prefix, errors.Join(errs...))
	}
	return nil
}

// topicNames lists the cluster's topics. It asks the cluster each time:
// kadm's ListTopics answers from the client's metadata cache, which
// misses topics created meanwhile (by a choreo consumer, say).
func (e *Env) topicNames(ctx context.Context) ([]string, error) {
	req := kmsg.NewPtrMetadataRequest() // nil Topics: every topic
	resp, err := req.RequestWith(ctx, e.cl)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, t := range resp.Topics {
		if t.Topic != nil && t.ErrorCode == 0 {
			names = append(names, *t.Topic)
		}
	}
	return names, nil
}

// ours returns the names that start with the run's prefix.
func (e *Env) ours(names []string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, e.Prefix+".") {
			out = append(out, n)
		}
	}
	return out
}
