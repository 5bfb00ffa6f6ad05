// Package connection holds how a program reaches Kafka: seed brokers, SASL
// and TLS. The producer, the consumer and the CLI take the same Config, so a
// service sets its credentials once.
//
// Programs read it from the environment with FromEnv:
//
//	KAFKA_BROKERS          comma-separated seed brokers
//	KAFKA_SASL_MECHANISM   PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
//	KAFKA_SASL_USERNAME    SASL user
//	KAFKA_SASL_PASSWORD    SASL password
//	KAFKA_TLS              true to dial with TLS
//	KAFKA_TLS_CA_FILE      PEM file of the CAs to trust (implies TLS)
//
// Check connects once and says what is wrong (a certificate not trusted,
// SASL credentials refused, a TLS client on a plaintext listener) instead
// of leaving a client to retry for ever; Explain and LastError turn a bare
// connection error into one that names the setting to look at.
package connection

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// SASL mechanism names accepted in Config.SASLMechanism.
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
)

// Environment variable names read by FromEnv.
const (
	EnvBrokers       = "KAFKA_BROKERS"
	EnvSASLMechanism = "KAFKA_SASL_MECHANISM"
	EnvSASLUsername  = "KAFKA_SASL_USERNAME"
	EnvSASLPassword  = "KAFKA_SASL_PASSWORD"
	EnvTLS           = "KAFKA_TLS"
	EnvTLSCAFile     = "KAFKA_TLS_CA_FILE"
)

// Config says how to reach a Kafka cluster. The zero value has no brokers.
type Config struct {
	Brokers []string // seed brokers, host:port

	SASLMechanism string // "", PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
	SASLUsername  string
	SASLPassword  string // never printed: see String

	TLS *tls.Config // nil: plaintext
}

// String describes c without its password.
func (c Config) String() string {
	s := "brokers=" + strings.Join(c.Brokers, ",")
	if c.SASLMechanism != "" {
		s += " sasl=" + c.SASLMechanism + " user=" + c.SASLUsername
	}
	if c.TLS != nil {
		s += " tls=on"
	}
	return s
}

// FromEnv reads a Config from the KAFKA_* environment variables (see the
// package doc). Brokers are empty when KAFKA_BROKERS is unset: a command
// that can offer the embedded broker does so then.
func FromEnv() (Config, error) {
	return fromLookup(os.LookupEnv)
}

func fromLookup(lookup func(string) (string, bool)) (Config, error) {
	get := func(k string) string { v, _ := lookup(k); return strings.TrimSpace(v) }
	var c Config
	if b := get(EnvBrokers); b != "" {
		brokers, err := ParseBrokers(b)
		if err != nil {
			return Config{}, fmt.Errorf("%s: %w", EnvBrokers, err)
		}
		c.Brokers = brokers
	}
	c.SASLMechanism = strings.ToUpper(get(EnvSASLMechanism))
	c.SASLUsername = get(EnvSASLUsername)
	c.SASLPassword, _ = lookup(EnvSASLPassword)
	useTLS := false
	if v := get(EnvTLS); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Config{}, fmt.Errorf("%s=%q: want true or false", EnvTLS, v)
		}
		useTLS = b
	}
	if ca := get(EnvTLSCAFile); ca != "" {
		cfg, err := TLSFromCAFile(ca)
		if err != nil {
			return Config{}, fmt.Errorf("%s: %w", EnvTLSCAFile, err)
		}
		c.TLS = cfg
	} else if useTLS {
		c.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// ParseBrokers splits a comma-separated broker list and checks that each
// entry is host:port with a valid port.
func ParseBrokers(list string) ([]string, error) {
	var out []string
	for _, b := range strings.Split(list, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		host, port, err := net.SplitHostPort(b)
		if err != nil {
			return nil, fmt.Errorf("broker %q: want host:port", b)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("broker %q: port %q is not a number from 1 to 65535", b, port)
		}
		if host == "" {
			return nil, fmt.Errorf("broker %q: empty host", b)
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, errors.New("no brokers listed")
	}
	return out, nil
}

// TLSFromCAFile returns a TLS config trusting the PEM certificates in path.
func TLSFromCAFile(path string) (*tls.Config, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", path)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// Validate reports a Config that cannot work: an unknown SASL mechanism, or
// one without a user name.
func (c Config) Validate() error {
	switch c.SASLMechanism {
	case "":
		if c.SASLUsername != "" {
			return fmt.Errorf("SASL user %q given without a mechanism (%s)", c.SASLUsername, EnvSASLMechanism)
		}
	case MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512:
		if c.SASLUsername == "" {
			return fmt.Errorf("SASL mechanism %s needs a user name", c.SASLMechanism)
		}
	default:
		return fmt.Errorf("unknown SASL mechanism %q: want %s, %s or %s",
			c.SASLMechanism, MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512)
	}
	return nil
}

// ClientOptions returns the franz-go options that make a client connect as c
// says: seed brokers, SASL and TLS, and a hook that keeps the outcome of
// the latest connection attempt for LastError.
func (c Config) ClientOptions() ([]kgo.Opt, error) {
	if len(c.Brokers) == 0 {
		return nil, errors.New("no seed brokers configured")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.WithHooks(&connWatch{})}
	if m := c.mechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	if c.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(c.TLS.Clone()))
	}
	return opts, nil
}

func (c Config) mechanism() sasl.Mechanism {
	switch c.SASLMechanism {
	case MechanismPlain:
		return plain.Auth{User: c.SASLUsername, Pass: c.SASLPassword}.AsMechanism()
	case MechanismSCRAMSHA256:
		return scram.Auth{User: c.SASLUsername, Pass: c.SASLPassword}.AsSha256Mechanism()
	case MechanismSCRAMSHA512:
		return scram.Auth{User: c.SASLUsername, Pass: c.SASLPassword}.AsSha512Mechanism()
	}
	return nil
}
