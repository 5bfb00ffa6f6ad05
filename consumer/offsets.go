package consumer

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"
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
	tracked       atomic.Int64 // len(entries), written under mu, read without it
	doneBehind    atomic.Int64 // entries done behind one that is not, written under mu

	// ctx is cancelled when the partition is lost, or when the consumer
	// gives up waiting for its handlers on revoke or shutdown.
	ctx    context.Context
	cancel context.CancelFunc

	mu          sync.Mutex
	entries     []entry // in offset order; entries[0] is seq base
	pending     int     // entries not done
	base        uint64  // seq of entries[0]
	nextSeq     uint64
	committable int64         // offset to commit (next to read); -1 before anything is done
	committed   int64         // last offset committed
	stopping    bool          // revoked, lost or shutting down: start no more records
	released    bool          // given up and committed for the last time: never commit again
	running     int           // handlers running now
	abandoned   int           // of those, handlers left running past the revoke or shutdown wait
	idle        chan struct{} // made by stop while handlers run, closed (and dropped) as running reaches 0

	// onDrain, when set, is called (once) as the tracked records fall to
	// drainAt or fewer: it wakes the poll loop to take the parked records
	// of a partition whose backlog reached MaxUncommitted.
	onDrain func()
	drainAt int

	// parked are fetched records not taken on yet because the backlog was
	// at MaxUncommitted, in offset order; the partition's fetching is
	// paused while there are any.
	parked []*kgo.Record
	held   bool // parked records held out of the in-flight budget; fetching paused (see runtime.evictStuck)

	fullSince atomic.Int64 // unix nanos since records have been parked without a break; 0: none
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
	}
}

// track registers the record at offset as taken on and returns its seq.
func (p *partition) track(offset int64) (seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seq = p.nextSeq
	p.nextSeq++
	p.pending++
	p.entries = append(p.entries, entry{offset: offset})
	p.tracked.Store(int64(len(p.entries)))
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
// counts as done (handled, skipped, forwarded or dead-lettered). It reports
// whether the handling was one left running past a revoke or shutdown wait
// (see abandon): the worker that ran it has been replaced and must retire.
func (p *partition) finish(seq uint64, done bool) (retire bool) {
	p.mu.Lock()
	p.running--
	if p.running == 0 {
		if p.idle != nil { // someone waits in stop
			close(p.idle)
			p.idle = nil
		}
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

// whenDrained arranges for fn to run once the tracked records fall to n
// or fewer; if they already have, fn runs now.
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

// isStopping reports whether the partition is being given up.
func (p *partition) isStopping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopping
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
	if i >= len(p.entries) || p.entries[i].done {
		return
	}
	p.entries[i].done = true
	p.pending--
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
	p.tracked.Store(int64(len(p.entries)))
	p.doneBehind.Store(int64(len(p.entries) - p.pending))
}

// park keeps rs, fetched records not taken on yet, for later, behind
// those parked already; it reports whether the parked records are held
// out of the in-flight budget.
func (p *partition) park(rs []*kgo.Record) (held bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.parked = append(p.parked, rs...)
	return p.held
}

// hasParked reports whether records are parked.
func (p *partition) hasParked() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked) > 0
}

// unpark takes the parked records out, reporting whether they were held.
func (p *partition) unpark() ([]*kgo.Record, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rs, held := p.parked, p.held
	p.parked, p.held = nil, false
	return rs, held
}

// hold marks the parked records as held out of the in-flight budget; it
// returns how many there are and whether they were not held before.
func (p *partition) hold() (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	was := p.held
	p.held = true
	return len(p.parked), !was
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
	if p.idle == nil {
		p.idle = make(chan struct{})
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
