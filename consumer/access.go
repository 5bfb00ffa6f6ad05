package consumer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/choreokit/choreo/connection"
)

// checkAccess asks the brokers, before Run joins the group, whether this
// service may do what it must: read every topic it consumes (sources,
// retry topics and the others Run reads), write its dead-letter and retry
// topics, and use its group. Missing permissions make one error that
// names each topic or group and the operation to grant, instead of a
// consumer that joins and then logs fetch errors for ever, or holds a
// partition at its first poison record. A broker that does not report
// authorized operations (an old version, none requested) passes.
func checkAccess(ctx context.Context, opts []kgo.Opt, c *Consumer, read []string) error {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("consumer: client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	write := append([]string{c.cfg.deadLetterTopic}, c.retryTopics...)
	need := map[string][]kmsg.ACLOperation{}
	for _, t := range read {
		need[t] = append(need[t], kmsg.ACLOperationRead)
	}
	for _, t := range write {
		need[t] = append(need[t], kmsg.ACLOperationWrite)
	}
	req := kmsg.NewPtrMetadataRequest()
	req.IncludeTopicAuthorizedOperations = true
	req.AllowAutoTopicCreation = false
	for t := range need {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("consumer: %w", c.conn.Explain(err))
	}
	var missing []string
	for _, t := range resp.Topics {
		name := ""
		if t.Topic != nil {
			name = *t.Topic
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			if errors.Is(err, kerr.TopicAuthorizationFailed) {
				missing = append(missing, fmt.Sprintf("DESCRIBE and %s on topic %s", opNames(need[name]), name))
			}
			continue // a missing topic is Run's business elsewhere
		}
		if t.AuthorizedOperations == math.MinInt32 {
			continue // not reported
		}
		var lack []kmsg.ACLOperation
		for _, op := range need[name] {
			if !allowed(t.AuthorizedOperations, op) {
				lack = append(lack, op)
			}
		}
		if len(lack) > 0 {
			missing = append(missing, fmt.Sprintf("%s on topic %s", opNames(lack), name))
		}
	}
	// The group: DescribeGroups needs DESCRIBE on it, which READ (what a
	// member needs) implies.
	greq := kmsg.NewPtrDescribeGroupsRequest()
	greq.Groups = []string{c.group}
	greq.IncludeAuthorizedOperations = true
	gresp, err := greq.RequestWith(ctx, cl)
	switch {
	case errors.Is(err, kerr.GroupAuthorizationFailed): // finding its coordinator was refused
		missing = append(missing, "READ on group "+c.group)
		gresp = &kmsg.DescribeGroupsResponse{}
	case err != nil:
		return fmt.Errorf("consumer: describe group %s: %w", c.group, c.conn.Explain(err))
	}
	for _, g := range gresp.Groups {
		err := kerr.ErrorForCode(g.ErrorCode)
		switch {
		case errors.Is(err, kerr.GroupAuthorizationFailed):
			missing = append(missing, "READ on group "+c.group)
		case err == nil && g.AuthorizedOperations != math.MinInt32 && g.AuthorizedOperations != 0 &&
			!allowed(g.AuthorizedOperations, kmsg.ACLOperationRead):
			missing = append(missing, "READ on group "+c.group)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	who := "this service"
	if c.conn.SASLUsername != "" {
		who = fmt.Sprintf("user %q", c.conn.SASLUsername)
	}
	return fmt.Errorf("consumer: %s is not authorized for what the service needs: grant %s", who, strings.Join(missing, "; "))
}

// allowed reports whether op is in an authorized-operations bitfield (ALL
// covers every operation; READ and WRITE imply DESCRIBE).
func allowed(ops int32, op kmsg.ACLOperation) bool {
	has := func(o kmsg.ACLOperation) bool { return ops&(1<<int32(o)) != 0 }
	return has(op) || has(kmsg.ACLOperationAll)
}

// opNames writes operations as Kafka's tools spell them.
func opNames(ops []kmsg.ACLOperation) string {
	names := make([]string, len(ops))
	for i, op := range ops {
		names[i] = strings.ToUpper(op.String())
	}
	return strings.Join(names, " and ")
}

// accessError reports whether err, met while consuming, is a permission
// the brokers refuse (the group, a topic, the credentials): retrying does
// not fix it, so Run ends with it rather than logging it for ever.
func accessError(err error) bool {
	return errors.Is(err, kerr.GroupAuthorizationFailed) || errors.Is(err, kerr.TopicAuthorizationFailed) ||
		errors.Is(err, kerr.ClusterAuthorizationFailed) || errors.Is(err, kerr.SaslAuthenticationFailed) ||
		connection.Permanent(err)
}
