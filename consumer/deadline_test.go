package consumer

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

func TestDeadlineCtx(t *testing.T) {
	t.Run("deadline closes Done", func(t *testing.T) {
		ctx, release := withDeadline(context.Background(), time.Now().Add(30*time.Millisecond))
		defer release()
		if ctx.Err() != nil {
			t.Fatalf("Err before the deadline = %v", ctx.Err())
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("Done not closed at the deadline")
		}
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err = %v; want DeadlineExceeded", ctx.Err())
		}
	})
	t.Run("Err without Done", func(t *testing.T) {
		ctx, release := withDeadline(context.Background(), time.Now().Add(-time.Second))
		defer release()
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err past the deadline = %v; want DeadlineExceeded", ctx.Err())
		}
		select {
		case <-ctx.Done():
		default:
			t.Fatal("Done past the deadline is open")
		}
	})
	t.Run("parent cancel", func(t *testing.T) {
		parent, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
		ctx, release := withDeadline(parent, time.Now().Add(time.Hour))
		defer release()
		if ctx.Value(ctxKey{}) != "v" {
			t.Error("Value not passed through")
		}
		done := ctx.Done()
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Done not closed when the parent was cancelled")
		}
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("Err = %v; want Canceled", ctx.Err())
		}
	})
	t.Run("parent cancelled before Done", func(t *testing.T) {
		parent, cancel := context.WithCancel(context.Background())
		ctx, release := withDeadline(parent, time.Now().Add(time.Hour))
		defer release()
		cancel()
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("Err = %v; want Canceled", ctx.Err())
		}
		<-ctx.Done()
	})
	t.Run("release", func(t *testing.T) {
		ctx, release := withDeadline(context.Background(), time.Now().Add(time.Hour))
		done := ctx.Done()
		release()
		<-done
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("Err after release = %v; want Canceled", ctx.Err())
		}
		release() // twice is fine
	})
	t.Run("child context", func(t *testing.T) {
		ctx, release := withDeadline(context.Background(), time.Now().Add(30*time.Millisecond))
		defer release()
		child, cancel := context.WithCancel(ctx)
		defer cancel()
		select {
		case <-child.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("child not cancelled at the parent's deadline")
		}
	})
	t.Run("earlier parent deadline", func(t *testing.T) {
		parent, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ctx, release := withDeadline(parent, time.Now().Add(time.Hour))
		defer release()
		pd, _ := parent.Deadline()
		if d, ok := ctx.Deadline(); !ok || !d.Equal(pd) {
			t.Fatalf("Deadline = %v; want the parent's %v", d, pd)
		}
	})
}
