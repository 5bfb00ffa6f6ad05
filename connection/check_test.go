package connection

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// testCA returns a self-signed CA certificate for 127.0.0.1, usable as the
// broker's certificate, and a pool that trusts it.
func testCA(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "choreo test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// TestCheck: Check answers nil for the right settings, and for each wrong
// one, within seconds, an error that names the setting and holds no
// password.
func TestCheck(t *testing.T) {
	const secret = "s3cret-Pa55"
	cert, pool := testCA(t)
	_, otherPool := testCA(t)
	tlsSASL, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}),
		kfake.EnableSASL(), kfake.Superuser(MechanismSCRAMSHA512, "alice", secret))
	if err != nil {
		t.Fatal(err)
	}
	defer tlsSASL.Close()
	plain, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	good := Config{Brokers: tlsSASL.ListenAddrs(), SASLMechanism: MechanismSCRAMSHA512, SASLUsername: "alice", SASLPassword: secret,
		TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	with := func(f func(*Config)) Config {
		c := good
		c.TLS = good.TLS.Clone()
		f(&c)
		return c
	}
	for _, tc := range []struct {
		name string
		c    Config
		want string // in the error; "" for none
	}{
		{"right", good, ""},
		{"wrong password", with(func(c *Config) { c.SASLPassword = "wrong" }), `authentication as user "alice"`},
		{"unknown user", with(func(c *Config) { c.SASLUsername = "mallory" }), "wrong user name or password"},
		{"untrusted certificate", with(func(c *Config) { c.TLS.RootCAs = otherPool }), "not signed by a trusted CA"},
		{"TLS to a plaintext listener", Config{Brokers: plain.ListenAddrs(), TLS: &tls.Config{RootCAs: pool}}, "plaintext listener"},
		{"nothing listening", Config{Brokers: []string{"127.0.0.1:1"}}, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := Check(context.Background(), tc.c)
			took := time.Since(start)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Check: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Check: %v; want an error saying %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("the error holds the password: %v", err)
			}
			if took > CheckTimeout+2*time.Second {
				t.Errorf("Check took %v", took)
			}
			t.Logf("%v: %v", took.Round(time.Millisecond), err)
		})
	}
}

// TestLastError: a client made from ClientOptions says why its latest
// connection failed.
func TestLastError(t *testing.T) {
	cert, _ := testCA(t)
	_, other := testCA(t)
	fake, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	c := Config{Brokers: fake.ListenAddrs(), TLS: &tls.Config{RootCAs: other}}
	opts, err := c.ClientOptions()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = cl.Ping(ctx)
	if err := c.LastError(cl); err == nil || !strings.Contains(err.Error(), "not signed by a trusted CA") {
		t.Fatalf("LastError: %v; want the untrusted certificate explained", err)
	}
	if err := (Config{}).LastError(nil); err != nil {
		t.Fatalf("LastError(nil): %v", err)
	}
}

// TestHint: Hint names the setting to look at for the errors it knows,
// says nothing of others, and Explain carries it after the brokers.
func TestHint(t *testing.T) {
	plain := Config{Brokers: []string{"127.0.0.1:1"}}
	sasl := Config{Brokers: []string{"127.0.0.1:1"}, SASLMechanism: MechanismSCRAMSHA256, SASLUsername: "ada", SASLPassword: "s3cret-pw"}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		name string
		c    Config
		err  error
		want string
	}{
		{"nil", plain, nil, ""},
		{"unknown error", plain, errors.New("something else"), ""},
		{"refused", plain, refused, "connection refused: is the broker running"},
		{"closed during SASL", sasl, io.EOF, `during authentication as user "ada" with SASL SCRAM-SHA-256: wrong user name or password`},
		{"closed, plaintext client", plain, io.ErrUnexpectedEOF, "a TLS or SASL listener"},
		{"SASL refused", sasl, kerr.SaslAuthenticationFailed, "wrong user name or password (KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.c.Hint(tc.err)
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Fatalf("Hint(%v) = %q; want %q", tc.err, got, tc.want)
			}
			if strings.Contains(got, "s3cret") {
				t.Fatalf("Hint holds the password: %q", got)
			}
			if tc.err == nil {
				return
			}
			ex := tc.c.Explain(tc.err)
			if !errors.Is(ex, tc.err) || !strings.HasPrefix(ex.Error(), "kafka at 127.0.0.1:1") || !strings.Contains(ex.Error(), got) {
				t.Fatalf("Explain(%v) = %v; want the brokers, the hint %q and the error wrapped", tc.err, ex, got)
			}
		})
	}
}
