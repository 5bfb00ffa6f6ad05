package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/dlq"
)

// entry is one record of a dead-letter topic as the dlq commands see it:
// a dead letter, read from its envelope or, without a registry, from its
// readable headers; or a record that is not a dead letter (invalid).
type entry struct {
	part        int32
	off         int64
	time        time.Time // the record's timestamp: when it was dead-lettered
	key         []byte
	sum         dlq.Summary
	dl          *dlq.DeadLetter // the envelope, kept only for a redrive
	fromHeaders bool            // sum comes from the headers: no envelope was read
	invalid     string          // why the record is not a dead letter
	truncated   bool            // the original was cut to fit: it cannot be redriven
	group       string          // the envelope's consumer group
	dups        int             // further dead letters of the same failure, merged into this one
	redriven    *redriveState   // this dead letter's (or a merged duplicate's) redrives; nil: none
	dedupe      uint64          // hash of the failure: original coordinates and redrive count
	size        int             // bytes it holds in memory, roughly
}

// Bounds of the reader's memory, whatever the size of the topic. Dead
// letters wait in a window before they are passed on, so that a duplicate
// arriving within it is merged into the first (a duplicate is written
// within seconds of the first, by the same writer, to the same partition:
// nearly always within a few records). After that, the failures passed on
// are remembered by a 64-bit hash, in a ring of at most dedupeSeen of them:
// a later duplicate of one of those is left out (and counted), one beyond
// that is shown again.
var (
	dedupeWindow      = 1024     // dead letters held back at most
	dedupeWindowBytes = 32 << 20 // and their bytes at most
	dedupeSeen        = 1 << 18  // failures remembered after they are passed on (8 bytes each, plus the map's)
	readIdleLimit     = 10       // empty one-second polls below the end offsets before giving up on a gap
)

// scanStats counts what a scan did; the gauges show its memory bound.
type scanStats struct {
	read           int64 // records read
	invalid        int64 // records that are not dead letters
	matched        int64 // records that passed the filters
	shown          int64 // entries passed on
	duplicates     int64 // duplicates merged into an entry passed on
	lateDuplicates int64 // duplicates left out because their first was passed on already
	maxPending     int   // most entries held back at once
	maxSeen        int   // most failures remembered at once
	registryErr    error // set when the registry failed and the scan fell back on the headers
}

// scanObserver, when set (by tests), gets the stats of every scan.
var scanObserver func(scanStats)

// scanConfig says what a scan reads and keeps.
type scanConfig struct {
	filter       *filter
	follow       bool                    // read on past the end offsets until ctx ends
	keepEnvelope bool                    // keep each entry's envelope (for a redrive)
	needEnvelope bool                    // fail rather than fall back on the headers when the registry fails
	redrives     map[coord]*redriveState // the redrive log; nil: none
	start, end   map[int32]int64         // offsets to read between; nil: from the start (or --since) to the end now
	warn         func(string)            // one line on stderr
}

// scanner reads a dead-letter topic in bounded memory, decodes, filters
// and merges duplicates, and passes entries on in the order read.
type scanner struct {
	env   *dlqEnv
	cfg   scanConfig
	stats scanStats
	seed  maphash.Seed

	pending      []*entry // held back, pending[head:] in the order read
	head         int
	pendingBytes int
	pendingByKey map[uint64]*entry

	seen     map[uint64]struct{}
	ring     []uint64 // seen's keys in the order remembered
	ringNext int
}

func newScanner(env *dlqEnv, cfg scanConfig) *scanner {
	if cfg.filter == nil {
		cfg.filter = &filter{}
	}
	if cfg.warn == nil {
		cfg.warn = func(string) {}
	}
	return &scanner{env: env, cfg: cfg, seed: maphash.MakeSeed(), pendingByKey: map[uint64]*entry{}, seen: map[uint64]struct{}{}}
}

// offsets returns the offsets to read between: from the start of each
// partition, or from the first record at or after since, to the end
// offsets now.
func (e *dlqEnv) offsets(ctx context.Context, topic string, since time.Time) (start, end map[int32]int64, err error) {
	start, end = map[int32]int64{}, map[int32]int64{}
	ends, err := e.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	ends.Each(func(o kadm.ListedOffset) { end[o.Partition] = o.Offset })
	if since.IsZero() {
		starts, err := e.adm.ListStartOffsets(ctx, topic)
		if err == nil {
			err = starts.Error()
		}
		if err != nil {
			return nil, nil, fmt.Errorf("start offsets of %s: %w", topic, err)
		}
		starts.Each(func(o kadm.ListedOffset) { start[o.Partition] = o.Offset })
	} else {
		after, err := e.adm.ListOffsetsAfterMilli(ctx, since.UnixMilli(), topic)
		if err == nil {
			err = after.Error()
		}
		if err != nil {
			return nil, nil, fmt.Errorf("offsets of %s after %s: %w", topic, since.Format(time.RFC3339), err)
		}
		after.Each(func(o kadm.ListedOffset) { start[o.Partition] = o.Offset })
	}
	for p, s := range start {
		if s < 0 || s > end[p] {
			start[p] = end[p]
		}
	}
	return start, end, nil
}

// run reads the topic and passes each entry that matches the filter, once
// per failure, to emit, which returns false to stop. It returns ctx's
// error when ctx ends first (the entries held back are passed on first).
func (s *scanner) run(ctx context.Context, emit func(*entry) bool) error {
	defer func() {
		if scanObserver != nil {
			scanObserver(s.stats)
		}
	}()
	if s.cfg.start == nil {
		start, end, err := s.env.offsets(ctx, s.env.topic, s.cfg.filter.since)
		if err != nil {
			return err
		}
		s.cfg.start, s.cfg.end = start, end
	}
	stopped := false
	var decodeErr error
	err := readPartitions(ctx, s.env.opts, s.env.topic, s.cfg.start, s.cfg.end, s.cfg.follow,
		func() bool {
			// Nothing arrived: with --follow, show what waits.
			if s.cfg.follow && !s.flush(emit) {
				stopped = true
			}
			return !stopped
		},
		func(r *kgo.Record) bool {
			if stopped {
				return false
			}
			e, err := s.entryOf(ctx, r)
			if err != nil {
				decodeErr = err
				return false
			}
			if !s.add(e, emit) {
				stopped = true
				return false
			}
			return !stopped
		},
		s.cfg.warn)
	if decodeErr != nil {
		return decodeErr
	}
	if !stopped {
		s.flush(emit)
	}
	return err
}

// entryOf decodes a record into an entry.
func (s *scanner) entryOf(ctx context.Context, r *kgo.Record) (*entry, error) {
	s.stats.read++
	e := &entry{part: r.Partition, off: r.Offset, time: r.Timestamp, key: r.Key, size: 256 + len(r.Key)}
	sum, perr := dlq.Peek(r)
	if s.env.codec != nil && s.stats.registryErr == nil {
		dl, err := dlq.Decode(ctx, s.env.codec, r)
		switch {
		case err == nil:
			e.sum = envelopeSummary(dl)
			e.truncated, e.group = dl.Original.Truncated(), dl.Group
			if s.cfg.keepEnvelope {
				e.dl = dl
				e.size += len(dl.Original.Value) + len(dl.Original.Key)
				for _, h := range dl.Original.Headers {
					e.size += len(h.Key) + len(h.Value)
				}
			}
		case errors.Is(err, dlq.ErrInvalidEnvelope):
			e.invalid = trimOp(err.Error(), r)
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case s.cfg.needEnvelope:
			return nil, fmt.Errorf("schema registry: the dead letter at %d:%d cannot be decoded: %w", r.Partition, r.Offset, err)
		default:
			s.stats.registryErr = err
			s.cfg.warn(fmt.Sprintf("schema registry unreachable (%v): reading the dead letters' headers only (error messages cut at %d bytes; no envelope fields)",
				err, dlq.MaxHeaderMessageLen))
		}
	}
	if e.sum.OriginalTopic == "" && e.invalid == "" {
		if perr != nil {
			e.invalid = trimOp(perr.Error(), r)
		} else {
			e.sum, e.fromHeaders = sum, true
		}
	}
	if e.invalid != "" {
		s.stats.invalid++
	}
	e.size += len(e.sum.Message) + len(e.invalid)
	if st := s.cfg.redrives[coord{r.Partition, r.Offset}]; st != nil {
		e.redriven = st
	}
	return e, nil
}

// trimOp drops the "dlq: decode topic/p/o: invalid dead-letter envelope: "
// of an error about r: the entry says where it is and that it is invalid.
func trimOp(msg string, r *kgo.Record) string {
	for _, op := range []string{"decode", "peek"} {
		prefix := fmt.Sprintf("dlq: %s %s/%d/%d: ", op, r.Topic, r.Partition, r.Offset)
		if rest, ok := strings.CutPrefix(msg, prefix); ok {
			msg = rest
			break
		}
	}
	msg, _ = strings.CutPrefix(msg, dlq.ErrInvalidEnvelope.Error()+": ")
	return msg
}

// envelopeSummary is what the envelope says, in the shape of the headers'.
func envelopeSummary(dl *dlq.DeadLetter) dlq.Summary {
	s := dlq.Summary{
		OriginalTopic:     dl.Original.Topic,
		OriginalPartition: dl.Original.Partition,
		OriginalOffset:    dl.Original.Offset,
		Kind:              dl.Error.Kind,
		Message:           dl.Error.Message,
		Attempts:          int(dl.Attempts),
		RedriveCount:      dl.RedriveCount(),
	}
	for _, f := range []struct {
		p   *string
		out *string
	}{{dl.EventID, &s.EventID}, {dl.EventType, &s.EventType}, {dl.CorrelationID, &s.CorrelationID}} {
		if f.p != nil {
			*f.out = *f.p
		}
	}
	for i := len(dl.Original.Headers) - 1; i >= 0; i-- {
		if h := dl.Original.Headers[i]; h.Key == choreo.HeaderReplayedFrom {
			s.ReplayedFrom = string(h.Value)
			break
		}
	}
	return s
}

// key is the hash that identifies e's failure: its original topic,
// partition and offset, and the redrive count.
func (s *scanner) key(e *entry) uint64 {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(e.sum.OriginalTopic)
	var b [20]byte
	binary.BigEndian.PutUint32(b[0:], uint32(e.sum.OriginalPartition))
	binary.BigEndian.PutUint64(b[4:], uint64(e.sum.OriginalOffset))
	binary.BigEndian.PutUint64(b[12:], uint64(e.sum.RedriveCount))
	h.Write(b[:])
	return h.Sum64()
}

// add filters e and merges it into the entry of its failure held back, or
// holds it back; it passes on what falls out of the window. It reports
// false when emit said stop.
func (s *scanner) add(e *entry, emit func(*entry) bool) bool {
	if !s.cfg.filter.match(e) {
		return true
	}
	s.stats.matched++
	if e.invalid == "" {
		k := s.key(e)
		if first, ok := s.pendingByKey[k]; ok {
			first.dups++
			if e.redriven != nil && (first.redriven == nil || e.redriven.count > first.redriven.count) {
				first.redriven = e.redriven
			}
			s.stats.duplicates++
			return true
		}
		if _, ok := s.seen[k]; ok {
			s.stats.lateDuplicates++
			return true
		}
		e.dedupe = k
		s.pendingByKey[k] = e
	}
	s.pending = append(s.pending, e)
	s.pendingBytes += e.size
	if n := len(s.pending) - s.head; n > s.stats.maxPending {
		s.stats.maxPending = n
	}
	for n := len(s.pending) - s.head; n > 0 && (n > dedupeWindow || s.pendingBytes > dedupeWindowBytes); n-- {
		if !s.pop(emit) {
			return false
		}
	}
	return true
}

// pop passes on the entry held back longest.
func (s *scanner) pop(emit func(*entry) bool) bool {
	e := s.pending[s.head]
	s.pending[s.head] = nil
	s.head++
	if s.head >= 64 && s.head*2 >= len(s.pending) {
		n := copy(s.pending, s.pending[s.head:])
		clear(s.pending[n:])
		s.pending, s.head = s.pending[:n], 0
	}
	s.pendingBytes -= e.size
	if e.invalid == "" {
		delete(s.pendingByKey, e.dedupe)
		s.remember(e.dedupe)
	}
	s.stats.shown++
	return emit(e)
}

// flush passes on every entry held back.
func (s *scanner) flush(emit func(*entry) bool) bool {
	for len(s.pending) > s.head {
		if !s.pop(emit) {
			return false
		}
	}
	return true
}

// remember adds a failure passed on to the ring of those remembered,
// forgetting the oldest when it is full.
func (s *scanner) remember(k uint64) {
	if dedupeSeen <= 0 {
		return
	}
	if len(s.ring) < dedupeSeen {
		s.ring = append(s.ring, k)
	} else {
		delete(s.seen, s.ring[s.ringNext])
		s.ring[s.ringNext] = k
		s.ringNext = (s.ringNext + 1) % dedupeSeen
	}
	s.seen[k] = struct{}{}
	if len(s.seen) > s.stats.maxSeen {
		s.stats.maxSeen = len(s.seen)
	}
}

// readPartitions reads topic with a client that joins no group and
// commits nothing: each partition of start from its start offset to its
// end offset (exclusive), or on without end with follow. It passes each
// record to fn, in the order fetched, until fn returns false; idle runs
// when a poll of a second brings nothing, and returns false to stop. A partition that stops short of
// its end (the last offsets held no records a reader sees: transaction
// markers, aborted records) is given up after readIdleLimit idle polls,
// with a warning.
func readPartitions(ctx context.Context, opts []kgo.Opt, topic string, start, end map[int32]int64, follow bool,
	idle func() bool, fn func(*kgo.Record) bool, warn func(string)) error {
	offsets := map[int32]kgo.Offset{}
	next := map[int32]int64{}
	for p, s := range start {
		if !follow && s >= end[p] {
			continue
		}
		offsets[p] = kgo.NewOffset().At(s)
		next[p] = s
	}
	if len(offsets) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), opts...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		// Small fetches, one broker at a time: what the client buffers is
		// the reader's memory too. A dead letter larger than these still
		// comes, in a fetch of its own.
		kgo.FetchMaxBytes(1<<20),
		kgo.FetchMaxPartitionBytes(1<<20),
		kgo.MaxConcurrentFetches(1),
		kgo.FetchMaxWait(500*time.Millisecond),
	)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	idlePolls := 0
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollRecords(pctx, 1000)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for _, fe := range fs.Errors() {
			if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
				continue
			}
			return fmt.Errorf("read %s partition %d: %w", fe.Topic, fe.Partition, fe.Err)
		}
		n, stop := 0, false
		fs.EachRecord(func(r *kgo.Record) {
			if stop {
				return
			}
			if _, ok := next[r.Partition]; !ok {
				return // done already
			}
			if !follow && r.Offset >= end[r.Partition] {
				delete(next, r.Partition)
				return
			}
			n++
			next[r.Partition] = r.Offset + 1
			if !follow && r.Offset+1 >= end[r.Partition] {
				delete(next, r.Partition)
			}
			if !fn(r) {
				stop = true
			}
		})
		if stop || (!follow && len(next) == 0) {
			return nil
		}
		if n > 0 {
			idlePolls = 0
			continue
		}
		if !idle() {
			return nil
		}
		if idlePolls++; !follow && idlePolls >= readIdleLimit {
			for p, o := range next {
				warn(fmt.Sprintf("partition %d: nothing to read from offset %d to its end offset %d (transaction markers or aborted records): stopped there", p, o, end[p]))
			}
			return nil
		}
	}
}
