package consumer

import (
	"context"
	"sync"
	"sync/atomic"
)

// partition tracks the records of one assigned partition that the consumer
// has taken on, to know how far it may commit: up to, not past, the first
// record that is not done.
//
// Records enter in offset order (dispatch) and finish in any order (done).
// The committable offset is the offset after the last record of the
// unbroken run of done records from the start.
type partition struct {
	topic string
	id    int32

	highWatermark atomic.Int64 // of the last fetch, for the lag metric

	// ctx is cancelled when the partition is lost, or when the consumer
	// gives up waiting for its handlers on revoke or shutdown.
	ctx    context.Context
	cancel context.CancelFunc

	mu          sync.Mutex
	entries     []entry // in offset order; entries[0] is seq base
	base        uint64  // seq of entries[0]
	nextSeq     uint64
	committable int64         // offset to commit (next to read); -1 before anything is done
	committed   int64         // last offset committed
	stopping    bool          // revoked, lost or shutting down: start no more records
	running     int           // handlers running now
	idle        chan struct{} // closed and replaced as running reaches 0
}

type entry struct {
	offset int64
	done   bool
}

func newPartition(parent context.Context, topic string, id int32) *partition {
	ctx, cancel := context.WithCancel(parent)
	return &partition{
		topic: topic, id: id, ctx: ctx, cancel: cancel,
		committable: -1, committed: -1,
		idle: make(chan struct{}),
	}
}

// track registers the record at offset as taken on and returns its seq.
func (p *partition) track(offset int64) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	seq := p.nextSeq
	p.nextSeq++
	p.entries = append(p.entries, entry{offset: offset})
	return seq
}

// start reports whether the record may be handled now; if so the caller
// must call finish when the handling ends.
func (p *partition) start() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return false
	}
	p.running++
	return true
}

// finish ends a handling started with start; done says whether the record
// counts as done (handled, skipped, forwarded or dead-lettered).
func (p *partition) finish(seq uint64, done bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running--
	if p.running == 0 {
		close(p.idle)
		p.idle = make(chan struct{})
	}
	if done {
		p.markDoneLocked(seq)
	}
}

func (p *partition) markDoneLocked(seq uint64) {
	if seq < p.base {
		return
	}
	i := int(seq - p.base)
	if i >= len(p.entries) {
		return
	}
	p.entries[i].done = true
	n := 0
	for n < len(p.entries) && p.entries[n].done {
		p.committable = p.entries[n].offset + 1
		n++
	}
	if n > 0 {
		p.entries = p.entries[n:]
		p.base += uint64(n)
		if len(p.entries) == 0 {
			p.entries = nil // let the backing array go
		}
	}
}

// stop makes the partition start no more records and returns a channel
// closed once no handler of it is running.
func (p *partition) stop() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopping = true
	if p.running == 0 {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return p.idle
}

// toCommit returns the offset to commit and true if it moved since the last
// commit.
func (p *partition) toCommit() (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.committable, p.committable > p.committed
}

// committedAt records a successful commit of offset.
func (p *partition) committedAt(offset int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if offset > p.committed {
		p.committed = offset
	}
}
