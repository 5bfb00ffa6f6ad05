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
	released    bool          // given up and committed for the last time: never commit again
	running     int           // handlers running now
	abandoned   int           // of those, handlers left running past the revoke or shutdown wait
	idle        chan struct{} // closed and replaced as running reaches 0

	// onDrain, when set, is called (once) as the tracked records fall to
	// drainAt or fewer: it resumes a partition paused because its backlog
	// of uncommitted records reached the cap.
	onDrain func()
	drainAt int
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

// track registers the record at offset as taken on and returns its seq
// and the backlog: the records tracked, this one included.
func (p *partition) track(offset int64) (seq uint64, backlog int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seq = p.nextSeq
	p.nextSeq++
	p.entries = append(p.entries, entry{offset: offset})
	return seq, len(p.entries)
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
// counts as done (handled, skipped, forwarded or dead-lettered). It reports
// whether the handling was one left running past a revoke or shutdown wait
// (see abandon): the worker that ran it has been replaced and must retire.
func (p *partition) finish(seq uint64, done bool) (retire bool) {
	p.mu.Lock()
	p.running--
	if p.running == 0 {
		close(p.idle)
		p.idle = make(chan struct{})
	}
	if p.abandoned > 0 {
		p.abandoned--
		retire = true
	}
	if done {
		p.markDoneLocked(seq)
	}
	var drained func()
	if p.onDrain != nil && len(p.entries) <= p.drainAt {
		drained, p.onDrain = p.onDrain, nil
	}
	p.mu.Unlock()
	if drained != nil {
		drained()
	}
	return retire
}

// backlog returns the number of records tracked: taken on and not yet
// committable (running, waiting, or done behind one that is not done).
func (p *partition) backlog() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.entries)
}

// whenDrained arranges for fn to run once the backlog falls to at or
// below n; if it already has, fn runs now.
func (p *partition) whenDrained(n int, fn func()) {
	p.mu.Lock()
	if len(p.entries) > n {
		p.onDrain, p.drainAt = fn, n
		p.mu.Unlock()
		return
	}
	p.onDrain = nil
	p.mu.Unlock()
	fn()
}

// abandon counts the handlers still running as abandoned: the consumer
// stops waiting for them, and their workers retire when they return. It
// returns how many there were.
func (p *partition) abandon() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.running - p.abandoned
	p.abandoned = p.running
	return n
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
// commit and the partition was not released.
func (p *partition) toCommit() (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.committable, p.committable > p.committed && !p.released
}

// release marks the partition as given up: it is never committed again,
// whatever finishes later.
func (p *partition) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.released = true
	p.stopping = true
}

// committedAt records a successful commit of offset.
func (p *partition) committedAt(offset int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if offset > p.committed {
		p.committed = offset
	}
}
