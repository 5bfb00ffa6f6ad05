package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ensureTopics makes sure each of the consumer's own topics (dead-letter
// and retry topics) exists with at least as many partitions as the largest
// source topic, creating what is missing. It fails with a clear message
// when a topic is missing and may not be created. With provisioning off it
// only warns about missing topics: writes to them fail (and are retried)
// until they exist.
func ensureTopics(ctx context.Context, opts []kgo.Opt, c *Consumer, sources, own []string) error {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("consumer: admin client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	details, err := adm.ListTopics(ctx, append(append([]string(nil), sources...), own...)...)
	if err != nil {
		return fmt.Errorf("consumer: list topics: %w", err)
	}
	partitions := int32(1)
	for _, s := range sources {
		if d, ok := details[s]; ok && d.Err == nil && int32(len(d.Partitions)) > partitions {
			partitions = int32(len(d.Partitions))
		}
	}
	// Dead letters carry the original record whole: leave room for it.
	maxBytes := strconv.Itoa(c.cfg.maxValueBytes + 1<<20)
	for _, name := range own {
		if d, ok := details[name]; ok && d.Err == nil {
			if n := int32(len(d.Partitions)); n < partitions {
				c.log.Warn("own topic has fewer partitions than its sources", "topic", name, "partitions", n, "sources", partitions)
			}
			continue
		}
		if !c.cfg.provision {
			c.log.Warn("own topic does not exist and provisioning is off: writes to it will fail until it is created", "topic", name)
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
			return fmt.Errorf("consumer: topic %s does not exist and this service may not create it: create it (%d partitions) or grant CREATE: %w", name, partitions, err)
		default:
			return fmt.Errorf("consumer: create topic %s: %w", name, err)
		}
	}
	return nil
}
