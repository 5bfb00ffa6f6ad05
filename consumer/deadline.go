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

	mu       sync.Mutex
	done     chan struct{}
	err      error
	timer    *time.Timer
	stopWait func() bool // stops watching the parent
}

// withDeadline returns ctx with deadline d and a function that releases
// its resources; call it when the handler returned.
func withDeadline(parent context.Context, d time.Time) (*deadlineCtx, func()) {
	if pd, ok := parent.Deadline(); ok && pd.Before(d) {
		d = pd
	}
	c := &deadlineCtx{Context: parent, deadline: d}
	return c, func() { c.cancel(context.Canceled) }
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

// Value looks keys up in the parent.
func (c *deadlineCtx) Value(key any) any { return c.Context.Value(key) }

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
