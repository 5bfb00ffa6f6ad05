package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/dlq"
)

// The redrive log: every redrive of a dead letter is recorded in the
// compacted topic dlq.RedriveLog(topic) ("<dlq topic>.redrives"), keyed by
// the dead letter's "<partition>:<offset>", its value a JSON
// redriveRecord. Compaction keeps the last record of each dead letter,
// whose count says how many times it was redriven. list and show read it;
// redrive skips the dead letters it names unless --again.

// coord is a dead letter's place in its topic.
type coord struct {
	part int32
	off  int64
}

// String returns "partition:offset", the key of the redrive log.
func (c coord) String() string {
	return strconv.FormatInt(int64(c.part), 10) + ":" + strconv.FormatInt(c.off, 10)
}

// redriveRecord is the value of a redrive log record: one redrive of one
// dead letter.
type redriveRecord struct {
	DeadLetter   string    `json:"dead_letter"`          // "<dlq topic>/<partition>/<offset>"
	Original     string    `json:"original"`             // "<topic>/<partition>/<offset>" of the failed record
	EventID      string    `json:"event_id,omitempty"`   // its ce_id
	At           time.Time `json:"at"`                   // when the redrive was acknowledged
	To           string    `json:"to"`                   // the topic it went to
	By           string    `json:"by"`                   // user@host
	Count        int       `json:"count"`                // redrives of this dead letter so far, this one included
	RedriveCount int       `json:"redrive_count"`        // the choreo-redrive-count the redriven record carried
	Duplicates   int       `json:"duplicates,omitempty"` // duplicates of the dead letter redriven with it (not sent)
}

// redriveState is what list and redrive keep of a redriven dead letter:
// its last record.
type redriveState struct {
	count int
	at    time.Time
	to    string
	by    string
}

// loadRedrives reads the redrive log of the env's topic, if there is one,
// into a map by dead letter: one small entry per dead letter ever
// redriven. With only set, it also returns every record of that dead
// letter, oldest first.
func (e *dlqEnv) loadRedrives(ctx context.Context, only *coord, warn func(string)) (map[coord]*redriveState, []redriveRecord, error) {
	logTopic := dlq.RedriveLog(e.topic)
	td, err := e.adm.ListTopics(ctx, logTopic)
	if err != nil {
		return nil, nil, fmt.Errorf("redrive log %s: %w", logTopic, err)
	}
	if d, ok := td[logTopic]; !ok || d.Err != nil {
		return map[coord]*redriveState{}, nil, nil // never redriven
	}
	start, end, err := e.offsets(ctx, logTopic, time.Time{})
	if err != nil {
		return nil, nil, err
	}
	out := map[coord]*redriveState{}
	intern := map[string]string{}
	str := func(s string) string {
		if v, ok := intern[s]; ok {
			return v
		}
		if len(intern) < 1024 {
			intern[s] = s
		}
		return s
	}
	var history []redriveRecord
	err = readPartitions(ctx, e.opts, logTopic, start, end, false, func() bool { return true }, func(r *kgo.Record) bool {
		p, o, err := parseCoords(string(r.Key))
		var rr redriveRecord
		if err == nil {
			err = json.Unmarshal(r.Value, &rr)
		}
		if err != nil {
			warn(fmt.Sprintf("redrive log %s: record %d:%d is not a redrive record: skipped", logTopic, r.Partition, r.Offset))
			return true
		}
		c := coord{p, o}
		out[c] = &redriveState{count: rr.Count, at: rr.At, to: str(rr.To), by: str(rr.By)}
		if only != nil && c == *only {
			history = append(history, rr)
		}
		return true
	}, warn)
	if err != nil {
		return nil, nil, fmt.Errorf("redrive log %s: %w", logTopic, err)
	}
	return out, history, nil
}

// ensureRedriveLog creates the redrive log topic if it does not exist: one
// partition, compacted.
func (e *dlqEnv) ensureRedriveLog(ctx context.Context) error {
	logTopic := dlq.RedriveLog(e.topic)
	td, err := e.adm.ListTopics(ctx, logTopic)
	if err != nil {
		return fmt.Errorf("redrive log %s: %w", logTopic, err)
	}
	if d, ok := td[logTopic]; ok && d.Err == nil {
		return nil
	}
	compact := "compact"
	resp, err := e.adm.CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": &compact}, logTopic)
	if err == nil {
		err = resp.Err
	}
	switch {
	case err == nil, errors.Is(err, kerr.TopicAlreadyExists):
		return nil
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
		return fmt.Errorf("redrives are recorded in %s, which does not exist and may not be created with these credentials: create it (1 partition, cleanup.policy=compact) or grant CREATE: %w", logTopic, err)
	}
	return fmt.Errorf("create the redrive log %s: %w", logTopic, err)
}

// redriveLogRecord returns the log record of a redrive.
func (e *dlqEnv) redriveLogRecord(c coord, rr redriveRecord) (*kgo.Record, error) {
	v, err := json.Marshal(rr)
	if err != nil {
		return nil, fmt.Errorf("redrive record: %w", err)
	}
	return &kgo.Record{Topic: dlq.RedriveLog(e.topic), Key: []byte(c.String()), Value: v}, nil
}

// describe says how a dead letter was redriven, for a table cell: "-" or
// the count.
func (st *redriveState) describe() string {
	if st == nil {
		return "-"
	}
	return strconv.Itoa(st.count)
}

// redrivenView is a dead letter's redrives in JSON.
type redrivenView struct {
	Count int    `json:"count"`
	Last  string `json:"last"`
	To    string `json:"to"`
	By    string `json:"by"`
}

// view returns st for JSON, nil when never redriven.
func (st *redriveState) view() *redrivenView {
	if st == nil {
		return nil
	}
	return &redrivenView{Count: st.count, Last: timeUTC(st.at), To: st.to, By: st.by}
}

// timeUTC formats t in RFC 3339, UTC, to the millisecond when it has one.
func timeUTC(t time.Time) string {
	s := t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	return strings.Replace(s, ".000Z", "Z", 1)
}
