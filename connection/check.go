package connection

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// CheckTimeout bounds Check when its context has no deadline.
const CheckTimeout = 10 * time.Second

// checkDialTimeout bounds one dial, TLS handshake included, in Check.
const checkDialTimeout = 3 * time.Second

// Check connects to the cluster as c says and returns nil once a broker
// has answered a request, or an error that says why it cannot: a
// certificate that is not trusted, SASL credentials the broker refuses, a
// TLS client talking to a plaintext listener or the reverse, brokers that
// cannot be reached. Failures that retrying cannot fix are returned at
// once; brokers that refuse connections are tried again until ctx's
// deadline, or for CheckTimeout if it has none. The error never holds the
// password.
//
// A program calls it at start to fail fast with one clear message instead
// of a client that retries for ever (franz-go retries every connection
// failure). consumer.Run calls it before anything else.
func Check(ctx context.Context, c Config) error {
	opts, err := c.ClientOptions()
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, CheckTimeout)
		defer cancel()
	}
	deadline, _ := ctx.Deadline()
	wait := time.Until(deadline).Round(time.Second)
	// A TLS client dialling a plaintext listener may get no answer at
	// all to its handshake: a short dial timeout tells that apart.
	cl, err := kgo.NewClient(append(opts, kgo.RequestRetries(0), kgo.DialTimeout(checkDialTimeout))...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	var last error
	eofs := 0
	for {
		err := cl.Ping(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			eofs++ // a broker closing the connection at once, again and again, refuses us
		}
		if Permanent(err) || eofs >= 3 {
			return c.Explain(err)
		}
		var ne net.Error
		if c.TLS != nil && errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			return fmt.Errorf("kafka at %s: no TLS handshake within %v: a plaintext listener (unset %s), or an address that does not answer? %w",
				strings.Join(c.Brokers, ","), checkDialTimeout, EnvTLS, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka at %s did not answer within %v: %w", strings.Join(c.Brokers, ","), wait, c.Explain(last))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Permanent reports whether a connection error is one that retrying
// cannot fix: a certificate the client does not trust (or that does not
// name the broker), a TLS handshake with a listener that does not speak
// TLS, or a SASL authentication the broker refused.
func Permanent(err error) bool {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var header tls.RecordHeaderError
	var alert tls.AlertError
	return errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid) ||
		errors.As(err, &verify) || errors.As(err, &header) || errors.As(err, &alert) ||
		errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, kerr.UnsupportedSaslMechanism) ||
		errors.Is(err, kerr.IllegalSaslState)
}

// Explain returns err with what it most likely means for a client
// configured as c: which setting to look at (Hint), after the brokers'
// addresses. It wraps err (errors.Is and As still see it), and, like err,
// it holds no password.
func (c Config) Explain(err error) error {
	if err == nil {
		return nil
	}
	where := strings.Join(c.Brokers, ",")
	if hint := c.Hint(err); hint != "" {
		return fmt.Errorf("kafka at %s: %s: %w", where, hint, err)
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return fmt.Errorf("kafka at %s: %w", where, err)
	}
	as := c.asUser()
	return fmt.Errorf("kafka at %s%s: %w", where, as, err)
}

// asUser is " as user U with SASL M" for a client that authenticates,
// "" otherwise: who the broker was asked to let in (never the password).
func (c Config) asUser() string {
	if c.SASLMechanism == "" {
		return ""
	}
	return fmt.Sprintf(" as user %q with SASL %s", c.SASLUsername, c.SASLMechanism)
}

// Hint says what a connection error most likely means for a client
// configured as c, and which setting to look at: an untrusted
// certificate, a plaintext listener dialled with TLS or the reverse,
// credentials the broker refuses (also when it only closes the
// connection, as some listeners do), a broker that refuses connections.
// It is "" when it has nothing to add to err. It holds no password.
func (c Config) Hint(err error) string {
	if err == nil {
		return ""
	}
	as := c.asUser()
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var header tls.RecordHeaderError
	switch {
	case errors.As(err, &unknown):
		return fmt.Sprintf("the broker's TLS certificate is not signed by a trusted CA (set %s to the CA that signed it)", EnvTLSCAFile)
	case errors.As(err, &host):
		return "the broker's TLS certificate does not name the address dialled"
	case errors.As(err, &header):
		return fmt.Sprintf("TLS handshake failed, the listener does not speak TLS (unset %s, or use the broker's TLS port)", EnvTLS)
	case Permanent(err) && errors.Is(err, kerr.SaslAuthenticationFailed):
		return fmt.Sprintf("authentication%s failed: wrong user name or password (%s, %s)", as, EnvSASLUsername, EnvSASLPassword)
	case Permanent(err) && (errors.Is(err, kerr.UnsupportedSaslMechanism) || errors.Is(err, kerr.IllegalSaslState)):
		return fmt.Sprintf("the listener does not take SASL %s (%s)", c.SASLMechanism, EnvSASLMechanism)
	case Permanent(err):
		return "TLS failed"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		switch {
		case c.SASLMechanism != "":
			return fmt.Sprintf("the broker closed the connection during authentication%s: wrong user name or password, or a mechanism the listener does not enable", as)
		case c.TLS == nil:
			return fmt.Sprintf("the broker closed the connection: a TLS or SASL listener (set %s, %s)?", EnvTLS, EnvSASLMechanism)
		}
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: is the broker running, at that address?"
	}
	return ""
}

// connWatch records the outcome of a client's latest connection attempt
// (a kgo.HookBrokerConnect, added by ClientOptions), so that an error
// that only says a deadline passed can say why (LastError).
type connWatch struct {
	mu   sync.Mutex
	last error // nil once a connection succeeded
}

// OnBrokerConnect implements kgo.HookBrokerConnect.
func (w *connWatch) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kgo.ErrClientClosed) {
		return
	}
	w.mu.Lock()
	w.last = err
	w.mu.Unlock()
}

// LastError returns the error of cl's latest connection attempt, if it
// failed, explained for c (see Explain); nil when the latest attempt
// succeeded, or when cl was not made with c.ClientOptions. A producer
// whose publish failed at its deadline uses it to say why.
func (c Config) LastError(cl *kgo.Client) error {
	if cl == nil {
		return nil
	}
	for _, v := range cl.OptValues(kgo.WithHooks) {
		hooks, _ := v.([]kgo.Hook)
		for _, h := range hooks {
			if w, ok := h.(*connWatch); ok {
				w.mu.Lock()
				err := w.last
				w.mu.Unlock()
				return c.Explain(err)
			}
		}
	}
	return nil
}
