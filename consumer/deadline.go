package consumer

import (
	"context"
	"sync"
	"time"
)

// deadlineCtx is a context with a deadline whose timer is started only when
// someone asks for Done. context.WithTimeout arms a timer and registers
// with a cancelable parent for every handler call; most handlers never wait
// on their context, and for them this costs nothing but the struct.
type deadlineCtx struct {
	context.Context // the parent
	deadline        time.Time
	owner           *delivery // answered for deliveryKey; nil outside the consumer's attempts

	mu       sync.Mutex
	done     chan struct{}
	err      error
	timer    *time.Timer
	stopWait func() bool // stops watching the parent
}

// withDeadline returns ctx with deadline d and a function that releases
// its resources; call it when the handler returned.
func withDeadline(parent context.Context, d time.Time) (*deadlineCtx, func()) {
	c := new(deadlineCtx)
	c.init(parent, d, nil)
	return c, c.release
}

// init sets c up as a child of parent with deadline d; owner, if set, is
// the delivery Value answers for deliveryKey.
func (c *deadlineCtx) init(parent context.Context, d time.Time, owner *delivery) {
	if pd, ok := parent.Deadline(); ok && pd.Before(d) {
		d = pd
	}
	*c = deadlineCtx{Context: parent, deadline: d, owner: owner}
}

// release ends the context: call it when the handler returned.
func (c *deadlineCtx) release() { c.cancel(context.Canceled) }

// deliveryKey is the key under which a handler context answers with its
// delivery.
type deliveryKey struct{}

// deadline returns the context of one handler attempt of d, with deadline
// at, and its release function. The first attempt's context lives in the
// delivery itself (no allocation); a retry gets a new one, since a handler
// may, wrongly, keep using the context of an attempt that ended.
func (d *delivery) deadline(at time.Time) (context.Context, func()) {
	c := &d.firstCtx
	if d.attempt > 1 {
		c = new(deadlineCtx)
	}
	c.init(d.ctx, at, d)
	return c, c.release
}

// Deadline returns the deadline.
func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

// Done returns a channel closed at the deadline, when the parent is done,
// or when the context is released.
func (c *deadlineCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	c.done = make(chan struct{})
	if c.err != nil {
		close(c.done)
		return c.done
	}
	if err := c.Context.Err(); err != nil {
		c.err = err
		close(c.done)
		return c.done
	}
	wait := time.Until(c.deadline)
	if wait <= 0 {
		c.err = context.DeadlineExceeded
		close(c.done)
		return c.done
	}
	c.timer = time.AfterFunc(wait, func() { c.cancel(context.DeadlineExceeded) })
	c.stopWait = context.AfterFunc(c.Context, func() { c.cancel(c.Context.Err()) })
	return c.done
}

// Err reports why the context is done, or nil.
func (c *deadlineCtx) Err() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if err := c.Context.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value answers deliveryKey with the owning delivery and looks other keys
// up in the parent.
func (c *deadlineCtx) Value(key any) any {
	if _, ok := key.(deliveryKey); ok && c.owner != nil {
		return c.owner
	}
	return c.Context.Value(key)
}

// cancel ends the context with err (the first reason wins) and stops the
// timer and the watch on the parent.
func (c *deadlineCtx) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.stopWait != nil {
		c.stopWait()
	}
}
