package dlq

import (
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
)

// Summary is what the readable headers of a dead-letter record say: enough
// to list and count dead letters without a schema registry. Peek reads it.
type Summary struct {
	OriginalTopic     string
	OriginalPartition int32
	OriginalOffset    int64
	Kind              choreo.ErrorKind
	Message           string // on one line, at most MaxHeaderMessageLen bytes; the envelope has up to MaxMessageLen
	Attempts          int
	EventID           string // the original ce_id, "" when it had none
	EventType         string // the original ce_type
	CorrelationID     string // the original ce_correlationid
	RedriveCount      int    // choreo-redrive-count: redrives of the original before this failure
	ReplayedFrom      string // choreo-replayed-from: the dead letter the failed record was redriven from
}

// Peek reads the readable headers of rec, a record of a dead-letter topic
// (see the package documentation), without decoding its value. A record
// without the choreo-original-topic header, or with an original partition,
// offset or attempt count that is not a number, is not a dead letter: the
// error wraps ErrInvalidEnvelope. A repeated header is read by its last
// value. Peek does not check the envelope: Decode does.
func Peek(rec *kgo.Record) (Summary, error) {
	var s Summary
	if rec == nil {
		return s, fmt.Errorf("dlq: peek: %w: %w", ErrInvalidEnvelope, errNilRecord)
	}
	bad := func(h kgo.RecordHeader) error {
		return fmt.Errorf("dlq: peek %s/%d/%d: %w: header %s is %q, not a number", rec.Topic, rec.Partition, rec.Offset,
			ErrInvalidEnvelope, h.Key, h.Value)
	}
	var havePart, haveOff bool
	for _, h := range rec.Headers {
		v := string(h.Value)
		switch h.Key {
		case choreo.HeaderOriginalTopic:
			s.OriginalTopic = v
		case choreo.HeaderOriginalPartition:
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil || n < 0 {
				return s, bad(h)
			}
			s.OriginalPartition, havePart = int32(n), true
		case choreo.HeaderOriginalOffset:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return s, bad(h)
			}
			s.OriginalOffset, haveOff = n, true
		case choreo.HeaderErrorKind:
			s.Kind = choreo.ErrorKind(v)
		case choreo.HeaderErrorMessage:
			s.Message = v
		case choreo.HeaderAttempt:
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return s, bad(h)
			}
			s.Attempts = n
		case choreo.HeaderID:
			s.EventID = v
		case choreo.HeaderType:
			s.EventType = v
		case choreo.HeaderCorrelationID:
			s.CorrelationID = v
		case choreo.HeaderRedriveCount:
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return s, bad(h)
			}
			s.RedriveCount = n
		case choreo.HeaderReplayedFrom:
			s.ReplayedFrom = v
		}
	}
	if s.OriginalTopic == "" || !havePart || !haveOff {
		return s, fmt.Errorf("dlq: peek %s/%d/%d: %w: no %s, %s and %s headers", rec.Topic, rec.Partition, rec.Offset,
			ErrInvalidEnvelope, choreo.HeaderOriginalTopic, choreo.HeaderOriginalPartition, choreo.HeaderOriginalOffset)
	}
	return s, nil
}
