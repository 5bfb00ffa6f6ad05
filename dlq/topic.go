package dlq

import (
	"errors"
	"fmt"
)

// Suffix ends the name of every dead-letter topic: Topic(group) is
// group + Suffix.
const Suffix = ".dlq"

// MaxTopicLen is the longest topic name Kafka accepts.
const MaxTopicLen = 249

// ErrInvalidTopic is wrapped by the errors of TopicFor and of Writer for a
// name that is not a legal Kafka topic name.
var ErrInvalidTopic = errors.New("invalid topic name")

// Topic returns the dead-letter topic of a consumer group: "<group>.dlq".
//
// There is one dead-letter topic per consuming service (consumer group),
// not per source topic: an event that poisons one service may be fine for
// the others, and a replay must reach only the service that failed. The
// name tells an operator which service the dead letters belong to and
// what the topic is for.
//
// Topic does not check the name: a group name may hold characters a topic
// name may not. Use TopicFor to check, once, at start-up.
func Topic(group string) string { return group + Suffix }

// TopicFor returns Topic(group) if it is a legal Kafka topic name: at most
// MaxTopicLen bytes of ASCII letters, digits, '.', '_' and '-'. Otherwise
// it fails with an error wrapping ErrInvalidTopic.
//
// Kafka also warns about topic names that differ only in '.' versus '_'
// (their metric names collide); avoid groups that do.
func TopicFor(group string) (string, error) {
	if group == "" {
		return "", fmt.Errorf("dlq: dead-letter topic of an empty group: %w", ErrInvalidTopic)
	}
	t := Topic(group)
	if err := checkTopic(t); err != nil {
		return "", fmt.Errorf("dlq: dead-letter topic of group %q: %w", group, err)
	}
	return t, nil
}

// checkTopic returns an error wrapping ErrInvalidTopic if name is not a
// legal Kafka topic name.
func checkTopic(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name: %w", ErrInvalidTopic)
	case name == "." || name == "..":
		return fmt.Errorf("%q: %w", name, ErrInvalidTopic)
	case len(name) > MaxTopicLen:
		return fmt.Errorf("%d bytes, over the limit of %d: %w", len(name), MaxTopicLen, ErrInvalidTopic)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%q: byte %q at %d is not a letter, digit, '.', '_' or '-': %w", name, c, i, ErrInvalidTopic)
		}
	}
	return nil
}

// RedriveSuffix ends the name of every redrive topic: RedriveTopic(group)
// is group + RedriveSuffix.
const RedriveSuffix = ".redrive"

// RedriveTopic returns the redrive topic of a consumer group:
// "<group>.redrive". A consumer (package consumer) creates it beside its
// dead-letter and retry topics and always reads it: it is the way back in
// for the service's dead letters (see DeadLetter.Replay). Only that
// service reads it, so a redrive reaches the service that failed and no
// other one. Like Topic, it does not check the name.
func RedriveTopic(group string) string { return group + RedriveSuffix }

// RedriveLogSuffix ends the name of the topic that records the redrives of
// a dead-letter topic: RedriveLog(topic) is topic + RedriveLogSuffix.
const RedriveLogSuffix = ".redrives"

// RedriveLog returns the topic in which `choreo dlq redrive` records what
// it redrove from the dead-letter topic dlqTopic: "<dlq topic>.redrives",
// e.g. "payment-service.dlq.redrives". It is a compacted topic keyed by the
// dead letter's "<partition>:<offset>", one JSON value per redrive.
func RedriveLog(dlqTopic string) string { return dlqTopic + RedriveLogSuffix }
