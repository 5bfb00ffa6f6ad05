package consumer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// topicPlan is what Run learns about the topics before it joins the group.
type topicPlan struct {
	// drain maps each retry topic of the group that the current
	// configuration no longer writes to (its delays changed, or retries
	// block now) to its tier. Records may still wait in them: Run keeps
	// consuming them.
	drain map[string]int
	// missingSources are the topics with handlers that do not exist.
	missingSources []string
}

// drainTopics returns the topics of the plan's drain, sorted.
func (p topicPlan) drainTopics() []string {
	out := make([]string, 0, len(p.drain))
	for t := range p.drain {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// ensureTopics looks at the cluster's topics before Run joins the group.
//
// Each of the consumer's own topics (dead-letter, retry and redrive
// topics) must exist with at least as many partitions as the largest
// source topic: it creates what is missing, and fails with a message
// naming the topic when it may not create it. With provisioning off (NoProvisioning) it creates
// nothing and fails at once if any of them is missing, saying what to
// create.
//
// It also finds the group's retry topics of earlier configurations (see
// topicPlan.drain) and the source topics that do not exist.
func ensureTopics(ctx context.Context, opts []kgo.Opt, c *Consumer, sources, own []string) (topicPlan, error) {
	var plan topicPlan
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return plan, fmt.Errorf("consumer: admin client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	// All topics, to find old retry topics by name; a topic this client
	// may not describe is missing to it.
	details, err := adm.ListTopics(ctx)
	if err != nil {
		return plan, fmt.Errorf("consumer: list topics: %w", err)
	}
	exists := func(name string) bool {
		d, ok := details[name]
		return ok && d.Err == nil
	}
	partitions := int32(1)
	for _, s := range sources {
		if !exists(s) {
			plan.missingSources = append(plan.missingSources, s)
			continue
		}
		if n := int32(len(details[s].Partitions)); n > partitions {
			partitions = n
		}
	}
	plan.drain = oldRetryTopics(c.group, details.Names(), c.retryTier, sources, own)

	// Dead letters carry the original record whole: leave room for it.
	maxBytes := strconv.Itoa(c.cfg.ownTopicMaxBytes())
	var missing []string
	for _, name := range own {
		if exists(name) {
			if n := int32(len(details[name].Partitions)); n < partitions {
				c.log.Warn("own topic has fewer partitions than its sources", "topic", name, "partitions", n, "sources", partitions)
			}
			continue
		}
		if !c.cfg.provision {
			missing = append(missing, name)
			continue
		}
		resp, err := adm.CreateTopic(ctx, partitions, -1, map[string]*string{"max.message.bytes": &maxBytes}, name)
		if err == nil {
			err = resp.Err
		}
		switch {
		case err == nil, errors.Is(err, kerr.TopicAlreadyExists):
			c.log.Info("created topic", "topic", name, "partitions", partitions)
		case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
			return plan, fmt.Errorf("consumer: topic %s does not exist and this service may not create it: create it (%d partitions, max.message.bytes=%s) or grant CREATE: %w",
				name, partitions, maxBytes, err)
		default:
			return plan, fmt.Errorf("consumer: create topic %s: %w", name, err)
		}
	}
	if len(missing) > 0 {
		return plan, fmt.Errorf("consumer: provisioning is off and the service's own topics do not exist: create %s (each with at least %d partitions and max.message.bytes=%s)",
			strings.Join(missing, ", "), partitions, maxBytes)
	}
	return plan, nil
}

// oldRetryTopics picks, from the names of the cluster's topics, the retry
// topics of group that the current configuration (current: retry topic →
// tier) does not write to, with their tiers. A name counts only if it is
// exactly what retryTopicName writes for group, so another group whose
// name starts with this one's is never matched. Sources and own topics are
// never drained.
func oldRetryTopics(group string, names []string, current map[string]int, sources, own []string) map[string]int {
	skip := map[string]bool{}
	for _, t := range append(append([]string(nil), sources...), own...) {
		skip[t] = true
	}
	out := map[string]int{}
	for _, name := range names {
		if _, ok := current[name]; ok || skip[name] {
			continue
		}
		if tier, ok := retryTopicTier(group, name); ok {
			out[name] = tier
		}
	}
	return out
}

// sourceCheckInterval is how often Run looks again for source topics that
// did not exist.
var sourceCheckInterval = 2 * time.Second

// sourceMissingKey is the readiness key of a missing source topic.
func sourceMissingKey(topic string) string { return "source-topic-missing:" + topic }

// watchSources marks the consumer not ready while any of the missing
// source topics does not exist, and looks for them every
// sourceCheckInterval until all exist; when one appears it makes the
// client refresh its metadata, so the group consumes it without waiting
// for the next periodic refresh. The returned stop ends the watch and
// waits for it.
func (rt *runtime) watchSources(ctx context.Context, missing []string) (stop func()) {
	c := rt.c
	for _, t := range missing {
		c.log.Warn("source topic does not exist: its events are not consumed until it is created", "topic", t)
		c.setNotReady(sourceMissingKey(t), fmt.Sprintf("source topic %s does not exist", t))
	}
	if len(missing) == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		adm := kadm.NewClient(rt.cl)
		tick := time.NewTicker(sourceCheckInterval)
		defer tick.Stop()
		for len(missing) > 0 {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			details, err := adm.ListTopics(ctx, missing...)
			if err != nil {
				if ctx.Err() == nil {
					c.log.Debug("looking for missing source topics", "topics", missing, "err", err)
				}
				continue
			}
			still := missing[:0]
			for _, t := range missing {
				if d, ok := details[t]; ok && d.Err == nil && len(d.Partitions) > 0 {
					c.log.Info("source topic exists now", "topic", t)
					c.clearNotReady(sourceMissingKey(t))
					continue
				}
				still = append(still, t)
			}
			if len(still) < len(missing) {
				rt.cl.ForceMetadataRefresh()
			}
			missing = still
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
