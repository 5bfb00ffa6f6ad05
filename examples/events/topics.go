package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/connection"
)

// Partitions is the number of partitions CreateTopics gives a topic: the
// most instances of one service that can share its work.
const Partitions = 3

// CreateTopics creates those of topics that do not exist, with Partitions
// partitions and the broker's default replication factor, and waits until
// they can be used. Topics that exist are left as they are, and never
// asked to be created, so a service whose credentials may not create
// topics (a managed cluster where an operator creates them, as the
// Kubernetes files in deploy/ do) starts fine once they exist.
//
// Each example service creates the topic it publishes to at start, so a
// fresh `choreo dev` or Kafka needs no set-up. The services' consumers do
// not wait for it: a consumer whose source topic is missing logs it,
// reports not ready, and starts consuming once the topic appears.
func CreateTopics(ctx context.Context, conn connection.Config, topics ...string) error {
	opts, err := conn.ClientOptions()
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	// kadm answers ListTopics from the client's metadata cache, which by
	// default is kept 5s: a topic just created would look missing that
	// long. Ask the broker afresh each time.
	cl, err := kgo.NewClient(append(opts, kgo.MetadataMinAge(10*time.Millisecond))...)
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return fmt.Errorf("create topics: list %v: %w", topics, err)
	}
	var missing []string
	for _, t := range topics {
		if d, ok := details[t]; !ok || d.Err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	resp, err := adm.CreateTopics(ctx, Partitions, -1, nil, missing...)
	if err != nil {
		return fmt.Errorf("create topics %v: %w", missing, err)
	}
	for _, r := range resp.Sorted() {
		// Another instance starting at the same time may have won.
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", r.Topic, r.Err)
		}
	}
	// Creation is asynchronous on a real cluster: wait for leaders, so the
	// first publish does not fail on a topic the broker does not know yet.
	for {
		details, err := adm.ListTopics(ctx, missing...)
		if err == nil && ready(details, missing) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("create topics %v: no leaders yet: %w", missing, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ready reports whether every topic exists with a leader per partition.
func ready(details kadm.TopicDetails, topics []string) bool {
	for _, t := range topics {
		d, ok := details[t]
		if !ok || d.Err != nil || len(d.Partitions) == 0 {
			return false
		}
		for _, p := range d.Partitions {
			if p.Err != nil || p.Leader < 0 {
				return false
			}
		}
	}
	return true
}
