package consumer

import (
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// RetryPolicy says how often and how soon a handler is called again after
// a retryable error, inside the consumer process. While a record is being
// retried its key waits (other keys go on); a record still failing after
// MaxAttempts is dead-lettered as choreo.KindRetriesExhausted.
//
// The delays grow exponentially with jitter (cenkalti/backoff):
// InitialInterval, then × Multiplier each time, at most MaxInterval, each
// randomised by ± RandomizationFactor.
type RetryPolicy struct {
	MaxAttempts         int           // handler calls in all, the first included (default 3); 1 disables retries
	InitialInterval     time.Duration // first delay (default 100ms)
	MaxInterval         time.Duration // longest delay (default 5s)
	Multiplier          float64       // growth per attempt (default 2)
	RandomizationFactor float64       // jitter, 0 to 1 (default 0.5)
	MaxElapsedTime      time.Duration // give up earlier once this much time passed since the first failure (0: no limit)
}

// DefaultRetryPolicy returns the default policy: 3 attempts, 100ms then
// 200ms (± 50%).
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		MaxAttempts:         3,
		InitialInterval:     100 * time.Millisecond,
		MaxInterval:         5 * time.Second,
		Multiplier:          2,
		RandomizationFactor: 0.5,
	}
}

func (p RetryPolicy) validate() error {
	switch {
	case p.MaxAttempts < 1:
		return fmt.Errorf("retry: max attempts %d: want at least 1", p.MaxAttempts)
	case p.InitialInterval < 0 || p.MaxInterval < 0 || p.MaxElapsedTime < 0:
		return fmt.Errorf("retry: negative interval")
	case p.Multiplier < 1:
		return fmt.Errorf("retry: multiplier %v: want at least 1", p.Multiplier)
	case p.RandomizationFactor < 0 || p.RandomizationFactor > 1:
		return fmt.Errorf("retry: randomization factor %v: want 0 to 1", p.RandomizationFactor)
	}
	return nil
}

// backoff returns a fresh back-off for one record.
func (p RetryPolicy) backoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = p.InitialInterval
	b.MaxInterval = p.MaxInterval
	b.Multiplier = p.Multiplier
	b.RandomizationFactor = p.RandomizationFactor
	b.MaxElapsedTime = p.MaxElapsedTime
	b.Reset()
	return b
}
