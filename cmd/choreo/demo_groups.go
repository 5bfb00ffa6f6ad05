package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/dlq"
)

// freshStart is what startFresh did: the records it skipped, by topic and
// partition. A group skips the last n records of a partition, so the
// records any group skipped there are the most of them: a record two
// groups skip counts once.
type freshStart struct {
	skipped map[string]map[int32]int64
}

// add notes that a group skipped the last n records of topic/partition.
func (f *freshStart) add(topic string, partition int32, n int64) {
	if f.skipped[topic] == nil {
		f.skipped[topic] = map[int32]int64{}
	}
	f.skipped[topic][partition] = max(f.skipped[topic][partition], n)
}

// topic is the number of records skipped in topic.
func (f freshStart) topic(t string) int64 {
	var n int64
	for _, p := range f.skipped[t] {
		n += p
	}
	return n
}

// total is the number of records skipped.
func (f freshStart) total() int64 {
	var n int64
	for t := range f.skipped {
		n += f.topic(t)
	}
	return n
}

// String names the topics and their skipped records, most first.
func (f freshStart) String() string {
	topics := make([]string, 0, len(f.skipped))
	for t := range f.skipped {
		topics = append(topics, t)
	}
	slices.SortFunc(topics, func(a, b string) int {
		if na, nb := f.topic(a), f.topic(b); na != nb {
			return int(nb - na)
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(topics))
	for i, t := range topics {
		parts[i] = fmt.Sprintf("%s %d", t, f.topic(t))
	}
	return strings.Join(parts, ", ")
}

// startFresh moves the demo's consumer groups to the end of every topic
// they read, before the services join: on a cluster, records left by
// earlier runs (an order placed just before a run was interrupted, a
// redrive, a record of a run with another registry) would otherwise be
// handled by this run and counted in its report. It is what
// kafka-consumer-groups --reset-offsets --to-latest does, and like it,
// it refuses a group with members: services of that group running
// elsewhere would share this run's records.
//
// A group reads its source topics (consumers' Topics), its retry topics,
// of this configuration or an earlier one, and its redrive topic.
func startFresh(ctx context.Context, adm *kadm.Client, consumers map[string]*consumer.Consumer) (freshStart, error) {
	res := freshStart{skipped: map[string]map[int32]int64{}}
	groups := make([]string, 0, len(consumers))
	for g := range consumers {
		groups = append(groups, g)
	}
	slices.Sort(groups)

	described, err := adm.DescribeGroups(ctx, groups...)
	if err != nil {
		return res, fmt.Errorf("describe groups %v: %w", groups, err)
	}
	for _, g := range groups {
		d, ok := described[g]
		if !ok {
			continue
		}
		if errors.Is(d.Err, kerr.GroupIDNotFound) {
			continue // a group that never was (real Kafka says "Dead")
		}
		if d.Err != nil {
			return res, fmt.Errorf("describe group %s: %w", g, d.Err)
		}
		if len(d.Members) > 0 {
			return res, fmt.Errorf("group %s has %d member(s) (%s): the demo runs the services itself; stop those first, or run the demo on the embedded broker (no --brokers)",
				g, len(d.Members), d.Members[0].ClientHost)
		}
	}

	all, err := adm.ListTopics(ctx)
	if err != nil {
		return res, fmt.Errorf("list topics: %w", err)
	}
	for _, g := range groups {
		committed, err := adm.FetchOffsets(ctx, g)
		if err == nil {
			err = committed.Error()
		}
		if errors.Is(err, kerr.GroupIDNotFound) {
			committed, err = nil, nil
		}
		if err != nil {
			return res, fmt.Errorf("committed offsets of group %s: %w", g, err)
		}
		topics := groupTopics(g, consumers[g].Topics(), all)
		if len(topics) == 0 {
			continue
		}
		ends, err := adm.ListEndOffsets(ctx, topics...)
		if err == nil {
			err = ends.Error()
		}
		if err != nil {
			return res, fmt.Errorf("end offsets of %v: %w", topics, err)
		}
		starts, err := adm.ListStartOffsets(ctx, topics...)
		if err == nil {
			err = starts.Error()
		}
		if err != nil {
			return res, fmt.Errorf("start offsets of %v: %w", topics, err)
		}
		move := kadm.Offsets{}
		ends.Each(func(end kadm.ListedOffset) {
			from := int64(-1)
			if c, ok := committed.Lookup(end.Topic, end.Partition); ok && c.Err == nil {
				from = c.At
			}
			if from < 0 { // nothing committed: the group would start at the log start
				if s, ok := starts.Lookup(end.Topic, end.Partition); ok {
					from = s.Offset
				}
			}
			if from >= end.Offset {
				return
			}
			res.add(end.Topic, end.Partition, end.Offset-max(from, 0))
			move.Add(kadm.Offset{Topic: end.Topic, Partition: end.Partition, At: end.Offset, LeaderEpoch: -1})
		})
		if len(move) == 0 {
			continue
		}
		resp, err := adm.CommitOffsets(ctx, g, move)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			return res, fmt.Errorf("move group %s to the end of %v: %w", g, topics, err)
		}
	}
	return res, nil
}

// groupTopics returns the topics group reads of those that exist: its
// source topics, and its retry and redrive topics (not its dead-letter
// topic, which it only writes).
func groupTopics(group string, sources []string, exist kadm.TopicDetails) []string {
	var out []string
	for _, t := range sources {
		if _, ok := exist[t]; ok {
			out = append(out, t)
		}
	}
	for t := range exist {
		if t == dlq.RedriveTopic(group) || strings.HasPrefix(t, group+".retry.") {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
