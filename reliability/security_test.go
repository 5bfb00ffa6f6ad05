package reliability_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/producer"
)

// secret is the password every secured test uses: it must appear in no
// output.
const secret = "Rel1ab1lity-s3cret-Pa55"

// testPKI is a CA and a broker certificate it signed, for 127.0.0.1.
type testPKI struct {
	caFile string // the CA certificate, PEM, for KAFKA_TLS_CA_FILE
	server tls.Certificate
	pool   *x509.CertPool
}

// newPKI makes a CA (and writes it to a file) and a broker certificate.
func newPKI(t *testing.T) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "choreo reliability CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	p := testPKI{caFile: filepath.Join(t.TempDir(), "ca.pem"), server: tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}}
	if err := os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca)
	return p
}

// securedBroker is a broker with a SASL over TLS listener and the users
// the tests log in as.
type securedBroker struct {
	seeds     []string
	caFile    string
	name      string
	passwords map[string]string // mechanism → password of the super user admin
}

// password returns admin's password for mech.
func (b securedBroker) password(mech string) string { return b.passwords[mech] }

// grant is one ACL a restricted user gets.
type grant struct {
	res  kmsg.ACLResourceType
	name string
	pat  kmsg.ACLResourcePatternType
	op   kmsg.ACLOperation
}

// restricted is a SCRAM-SHA-256 user, password secret, with these ACLs
// only.
type restricted struct {
	user   string
	grants []grant
}

// newSecuredBroker returns a broker that takes SASL (PLAIN,
// SCRAM-SHA-256, SCRAM-SHA-512) over TLS with ACLs on, where user admin
// of each mechanism is a super user and each restricted user has its
// grants only. With KAFKA_SASL_SSL_BROKERS set (deploy/local/kafka.sh
// with KAFKA_SASL_SSL_PORT), it is that listener of Apache Kafka: the
// SCRAM users are created through the Kafka API and the ACLs granted over
// the PLAINTEXT listener (KAFKA_BROKERS, whose principal is a super user);
// PLAIN admin's password is the script's. Without KAFKA_BROKERS it is an
// embedded broker. With KAFKA_BROKERS and no SASL_SSL listener the test
// skips.
func newSecuredBroker(t *testing.T, users ...restricted) securedBroker {
	t.Helper()
	if seeds := os.Getenv("KAFKA_SASL_SSL_BROKERS"); seeds != "" {
		return realSecuredBroker(t, seeds, users)
	}
	if os.Getenv("KAFKA_BROKERS") != "" {
		t.Skip("KAFKA_SASL_SSL_BROKERS not set: the secured tests need the SASL_SSL listener of deploy/local/kafka.sh (KAFKA_SASL_SSL_PORT) on this broker")
	}
	p := newPKI(t)
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser(connection.MechanismPlain, "admin", secret),
		kfake.Superuser(connection.MechanismSCRAMSHA256, "admin", secret),
		kfake.Superuser(connection.MechanismSCRAMSHA512, "admin", secret)}
	for _, u := range users {
		var acls []kfake.ACL
		for _, g := range u.grants {
			acls = append(acls, kfake.ACL{Resource: g.res, Name: g.name, Pattern: g.pat, Operation: g.op, Allow: true})
		}
		opts = append(opts, kfake.User(connection.MechanismSCRAMSHA256, u.user, secret, acls...))
	}
	fake, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	all := map[string]string{connection.MechanismPlain: secret, connection.MechanismSCRAMSHA256: secret, connection.MechanismSCRAMSHA512: secret}
	return securedBroker{seeds: fake.ListenAddrs(), caFile: p.caFile, name: "embedded kfake, SASL over TLS, ACLs on", passwords: all}
}

// realSecuredBroker sets up the users of the SASL_SSL listener of Apache
// Kafka at seeds.
func realSecuredBroker(t *testing.T, seeds string, users []restricted) securedBroker {
	t.Helper()
	caFile, pwFile := os.Getenv("KAFKA_SASL_SSL_CA_FILE"), os.Getenv("KAFKA_SASL_SSL_ADMIN_PASSWORD_FILE")
	if caFile == "" || pwFile == "" {
		t.Fatal("KAFKA_SASL_SSL_BROKERS is set without KAFKA_SASL_SSL_CA_FILE and KAFKA_SASL_SSL_ADMIN_PASSWORD_FILE (deploy/local/kafka.sh start prints all three)")
	}
	pw, err := os.ReadFile(pwFile)
	if err != nil {
		t.Fatal(err)
	}
	plainPW := strings.TrimSpace(string(pw))
	// The PLAINTEXT listener's principal is a super user: users and ACLs
	// are made through it.
	adm := kadm.NewClient(kafkatest.New(t).Client(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	upserts := []kadm.UpsertSCRAM{
		{User: "admin", Mechanism: kadm.ScramSha256, Iterations: 4096, Password: secret},
		{User: "admin", Mechanism: kadm.ScramSha512, Iterations: 4096, Password: secret},
	}
	for _, u := range users {
		upserts = append(upserts, kadm.UpsertSCRAM{User: u.user, Mechanism: kadm.ScramSha256, Iterations: 4096, Password: secret})
	}
	for _, u := range upserts { // one user at a time: Kafka refuses a user twice in a request
		res, err := adm.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{u})
		if err == nil {
			err = res.Error()
		}
		if err != nil {
			t.Fatalf("create SCRAM user %s (%v): %v", u.User, u.Mechanism, err)
		}
	}
	for _, u := range users {
		for _, g := range u.grants {
			b := kadm.NewACLs().Allow("User:" + u.user).AllowHosts("*").Operations(g.op).ResourcePatternType(g.pat)
			if g.res == kmsg.ACLResourceTypeGroup {
				b = b.Groups(g.name)
			} else {
				b = b.Topics(g.name)
			}
			rs, err := adm.CreateACLs(ctx, b)
			if err == nil {
				for _, r := range rs {
					if r.Err != nil {
						err = r.Err
					}
				}
			}
			if err != nil {
				t.Fatalf("grant %s %v on %s: %v", u.user, g.op, g.name, err)
			}
		}
	}
	// SCRAM credentials reach the broker's cache through the metadata
	// log: wait until admin can log in with each mechanism.
	for _, mech := range []string{connection.MechanismSCRAMSHA256, connection.MechanismSCRAMSHA512} {
		conn := connection.Config{Brokers: strings.Split(seeds, ","), SASLMechanism: mech, SASLUsername: "admin", SASLPassword: secret}
		tlsCfg, err := connection.TLSFromCAFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		conn.TLS = tlsCfg
		eventually(t, 30*time.Second, "SCRAM user admin usable with "+mech, func() bool { return connection.Check(ctx, conn) == nil })
	}
	return securedBroker{seeds: strings.Split(seeds, ","), caFile: caFile, name: "Apache Kafka, SASL_SSL listener of deploy/local/kafka.sh, StandardAuthorizer",
		passwords: map[string]string{connection.MechanismPlain: plainPW, connection.MechanismSCRAMSHA256: secret, connection.MechanismSCRAMSHA512: secret}}
}

// setEnv configures the KAFKA_* environment for user on b, as programs and
// the CLI read it (connection.FromEnv).
func (b securedBroker) setEnv(t *testing.T, mech, user, pass string) connection.Config {
	t.Helper()
	t.Setenv(connection.EnvBrokers, strings.Join(b.seeds, ","))
	t.Setenv(connection.EnvSASLMechanism, mech)
	t.Setenv(connection.EnvSASLUsername, user)
	t.Setenv(connection.EnvSASLPassword, pass)
	t.Setenv(connection.EnvTLSCAFile, b.caFile)
	t.Setenv(connection.EnvTLS, "true")
	conn, err := connection.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// capture collects every output of a test, to search for the secret.
type capture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *capture) add(what string, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(&c.buf, "\n-- %s --\n", what)
	c.buf.Write(b)
}

func (c *capture) holds(s string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Contains(c.buf.Bytes(), []byte(s))
}

// TestSecuredServiceKeepsItsSecret runs a service over SASL and TLS with
// each mechanism, configured from the environment: events published,
// handled, one forwarded to a retry topic and one dead-lettered, each
// carrying an authorization header with the password in it; then the CLI
// lists and shows the dead letters. The password appears nowhere: not in
// the logs, the errors, the span attributes and events, the dead-letter
// and retry records, nor the CLI's output; the redacted header reaches
// neither a dead letter nor a retry topic.
func TestSecuredServiceKeepsItsSecret(t *testing.T) {
	b := newSecuredBroker(t)
	regURL := kafkatest.SchemaRegistry(t)
	reg := newRegistry(t, regURL)
	cli := buildCLI(t)
	out := &capture{}
	prevLog := slog.Default()
	slog.SetDefault(slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(prevLog) })
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	prevTP := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()); otel.SetTracerProvider(prevTP) })

	for _, mech := range []string{connection.MechanismPlain, connection.MechanismSCRAMSHA256, connection.MechanismSCRAMSHA512} {
		t.Run(mech, func(t *testing.T) {
			pass := b.password(mech)
			conn := b.setEnv(t, mech, "admin", pass)
			out.add("config", []byte(conn.String()))
			ctx := context.Background()
			admOpts, err := conn.ClientOptions()
			if err != nil {
				t.Fatal(err)
			}
			raw, err := kgo.NewClient(admOpts...)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			topic := kafkatest.Name(t, "sec")
			if resp, err := kadm.NewClient(raw).CreateTopic(ctx, 1, -1, nil, topic); err != nil || resp.Err != nil {
				t.Fatalf("create topic: %v %v", err, resp.Err)
			}
			p, err := producer.New(ctx, conn, reg, producer.Source("secured"))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close(ctx)
			const n = 20
			for i := range n {
				id := fmt.Sprintf("order-%d", i)
				switch i {
				case 3:
					id = "permanent"
				case 7:
					id = "flaky"
				}
				rec, _, err := p.Record(ctx, topic, id, order(id, i))
				if err != nil {
					t.Fatal(err)
				}
				rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: "Authorization", Value: []byte("Basic " + secret)})
				if err := raw.ProduceSync(ctx, rec).FirstErr(); err != nil {
					out.add("produce error", []byte(err.Error()))
					t.Fatal(err)
				}
			}
			group := kafkatest.Group(t)
			c, err := consumer.New(conn, reg, group, consumer.RedactHeaders("authorization"),
				consumer.RetryTopics(200*time.Millisecond), consumer.Retry(consumer.RetryPolicy{MaxAttempts: 1, Multiplier: 1}),
				consumer.Logger(slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))))
			if err != nil {
				t.Fatal(err)
			}
			consumer.Handle(c, topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
				switch {
				case ev.Data.OrderID == "permanent":
					return errPermanent
				case ev.Data.OrderID == "flaky" && ev.Attempt == 1:
					return errors.New("busy")
				}
				return nil
			})
			stop := running(t, c)
			eventually(t, 60*time.Second, "every event done", func() bool {
				s := c.Stats()
				return s.Handled == n-1 && s.DeadLettered == 1
			})
			if err := stop(); err != nil {
				out.add("run error", []byte(err.Error()))
				t.Fatalf("Run: %v", err)
			}
			if s := c.Stats(); s.Forwarded != 1 {
				t.Errorf("%d forwards; want the flaky record's one", s.Forwarded)
			}
			// Everything stored outside the service.
			for _, stored := range []string{dlq.Topic(group), group + ".retry.1-200ms"} {
				recs := readRaw(t, conn, stored, 1)
				for _, r := range recs {
					out.add("record of "+stored, r.Value)
					for _, h := range r.Headers {
						out.add("header "+h.Key+" of "+stored, h.Value)
						if strings.EqualFold(h.Key, "authorization") && string(h.Value) != dlq.Redacted {
							t.Errorf("%s: header %s is %q; want it redacted", stored, h.Key, h.Value)
						}
					}
				}
			}
			// The CLI, configured by the same environment.
			for _, args := range [][]string{{"dlq", "list", group, "--output", "json"}, {"dlq", "show", group, "0:0"}} {
				stdout, stderr, code := runCLI(t, cli, regURL, args...)
				out.add("choreo "+strings.Join(args, " "), append(stdout, stderr...))
				if code != 0 {
					t.Errorf("choreo %s: exit %d: %s", strings.Join(args, " "), code, stderr)
				}
			}
			// The CLI with a wrong password: one clear error, soon.
			t.Setenv(connection.EnvSASLPassword, "not-the-"+pass[:4])
			start := time.Now()
			_, stderr, code := runCLI(t, cli, regURL, "dlq", "list", group)
			out.add("choreo with a wrong password", stderr)
			if code != 1 || time.Since(start) > 30*time.Second {
				t.Errorf("choreo dlq list with a wrong password: exit %d after %v: %s; want exit 1 within seconds", code, time.Since(start).Round(time.Millisecond), stderr)
			}
			if lines := strings.Count(strings.TrimSpace(string(stderr)), "\n") + 1; lines > 3 {
				t.Errorf("choreo with a wrong password wrote %d lines to stderr; want one error: %s", lines, stderr)
			}
			if !bytes.Contains(stderr, []byte("wrong user name or password")) {
				t.Errorf("choreo with a wrong password: %s; want it to say the user name or password is wrong", stderr)
			}
			t.Logf("choreo with a wrong password (%v): %s", time.Since(start).Round(time.Millisecond), bytes.TrimSpace(stderr))
		})
	}
	for _, sp := range spans.GetSpans() {
		out.add("span "+sp.Name, []byte(fmt.Sprint(sp.Attributes, sp.Events, sp.Status)))
	}
	for _, pw := range b.passwords {
		if out.holds(pw) {
			t.Errorf("a password appears in the output:\n%s", excerpt(out, pw))
		}
	}
	if !out.holds(dlq.Redacted) {
		t.Error("no redacted header seen at all: the test did not look where it should")
	}
}

var errPermanent = choreo.Permanent(errors.New("order rejected"))

// excerpt returns the lines of the capture around the secret.
func excerpt(c *capture, s string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, line := range strings.Split(c.buf.String(), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// readRaw reads at least n records of topic, raw.
func readRaw(t *testing.T, conn connection.Config, topic string, n int) []*kgo.Record {
	t.Helper()
	opts, err := conn.ClientOptions()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n && ctx.Err() == nil {
		out = append(out, cl.PollFetches(ctx).Records()...)
	}
	if len(out) < n {
		t.Fatalf("read %d records of %s; want at least %d", len(out), topic, n)
	}
	return out
}

// buildCLI builds the choreo command once per test binary.
func buildCLI(t *testing.T) string {
	t.Helper()
	cliOnce.Do(func() {
		dir, err := os.MkdirTemp("", "choreo-reliability-cli")
		if err != nil {
			cliErr = err
			return
		}
		cliPath = filepath.Join(dir, "choreo")
		cmd := exec.Command("go", "build", "-o", cliPath, "./cmd/choreo")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			cliErr = fmt.Errorf("go build ./cmd/choreo: %w: %s", err, out)
		}
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliPath
}

var (
	cliOnce sync.Once
	cliPath string
	cliErr  error
)

// runCLI runs the choreo command with the test's environment and returns
// its output and exit status.
func runCLI(t *testing.T, cli, regURL string, args ...string) (stdout, stderr []byte, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cli, args...)
	cmd.Env = append(os.Environ(), "SCHEMA_REGISTRY_URL="+regURL)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("choreo %s: %v", strings.Join(args, " "), err)
	}
	return o.Bytes(), e.Bytes(), code
}

// TestRefusedAccessFailsFast: a consumer whose credentials, certificate
// trust or permissions are wrong gets one clear error from Run within
// seconds (not a hang, not a retry loop), and a producer's publish fails
// with the reason; the password appears in none of the errors.
func TestRefusedAccessFailsFast(t *testing.T) {
	lit, pre := kmsg.ACLResourcePatternTypeLiteral, kmsg.ACLResourcePatternTypePrefixed
	topicT, groupT := kmsg.ACLResourceTypeTopic, kmsg.ACLResourceTypeGroup
	m := connection.MechanismSCRAMSHA256
	// Names unique to this run: a real broker keeps users and ACLs.
	tag := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1_000_000)
	src := "orders-" + tag
	svc := func(name string) string { return "svc-" + name + "-" + tag }
	user := func(name string) string { return name + "-" + tag }
	b := newSecuredBroker(t,
		// Everything but the group.
		restricted{user("nogroup"), []grant{{topicT, src, lit, kmsg.ACLOperationAll}, {topicT, svc("nogroup") + ".", pre, kmsg.ACLOperationAll}}},
		// Everything but reading the source topic.
		restricted{user("noread"), []grant{{topicT, src, lit, kmsg.ACLOperationDescribe}, {topicT, svc("noread") + ".", pre, kmsg.ACLOperationAll},
			{groupT, svc("noread"), lit, kmsg.ACLOperationAll}}},
		// Everything but writing the dead-letter topic.
		restricted{user("nodlq"), []grant{{topicT, src, lit, kmsg.ACLOperationAll}, {topicT, svc("nodlq") + ".retry.", pre, kmsg.ACLOperationAll},
			{topicT, svc("nodlq") + ".dlq", lit, kmsg.ACLOperationDescribe}, {topicT, svc("nodlq") + ".dlq", lit, kmsg.ACLOperationCreate},
			{topicT, svc("nodlq") + ".redrive", lit, kmsg.ACLOperationAll}, {groupT, svc("nodlq"), lit, kmsg.ACLOperationAll}}},
	)
	admin := b.setEnv(t, m, "admin", b.password(m))
	reg := newRegistry(t, kafkatest.SchemaRegistry(t))
	ctx := context.Background()
	opts, err := admin.ClientOptions()
	if err != nil {
		t.Fatal(err)
	}
	adm, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	kadmin := kadm.NewClient(adm)
	if resp, err := kadmin.CreateTopic(ctx, 1, -1, nil, src); err != nil || resp.Err != nil {
		t.Fatalf("create topic: %v %v", err, resp.Err)
	}
	t.Cleanup(func() { _, _ = kadmin.DeleteTopics(context.Background(), src) })
	// The service's own topics exist, so that only the permissions differ.
	for _, name := range []string{svc("nogroup"), svc("noread"), svc("nodlq")} {
		for _, own := range []string{name + ".dlq", name + ".retry.1-10s", name + ".retry.2-1m", name + ".retry.3-10m", name + ".redrive"} {
			if _, err := kadmin.CreateTopic(ctx, 1, -1, nil, own); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _, _ = kadmin.DeleteTopics(context.Background(), own) })
		}
	}
	var errs []string
	for _, tc := range []struct {
		name, user, pass, group string
		trust                   bool
		want                    string
	}{
		{"wrong password", "admin", "wrong-" + secret[:3], svc("any"), true, "wrong user name or password"},
		{"untrusted certificate", "admin", b.password(m), svc("any"), false, "not signed by a trusted CA"},
		{"no group ACL", user("nogroup"), secret, svc("nogroup"), true, "READ on group " + svc("nogroup")},
		{"no read ACL on the source topic", user("noread"), secret, svc("noread"), true, "READ on topic " + src},
		{"no write ACL on the dead-letter topic", user("nodlq"), secret, svc("nodlq"), true, "WRITE on topic " + svc("nodlq") + ".dlq"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := b.setEnv(t, m, tc.user, tc.pass)
			if !tc.trust {
				// Another CA's certificate: the broker's is not trusted.
				t.Setenv(connection.EnvTLSCAFile, newPKI(t).caFile)
				var err error
				if conn, err = connection.FromEnv(); err != nil {
					t.Fatal(err)
				}
			}
			c, err := consumer.New(conn, reg, tc.group)
			if err != nil {
				t.Fatal(err)
			}
			consumer.Handle(c, src, func(context.Context, consumer.Event[OrderPlaced]) error { return nil })
			start := time.Now()
			runCtx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			err = c.Run(runCtx)
			took := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v after %v; want an error saying %q", err, took.Round(time.Millisecond), tc.want)
			}
			if took > 15*time.Second {
				t.Errorf("Run took %v to fail; want seconds", took.Round(time.Millisecond))
			}
			t.Logf("Run failed after %v: %v", took.Round(time.Millisecond), err)
			errs = append(errs, err.Error())
			if tc.user == "admin" {
				// The producer: a publish fails with the reason by its deadline.
				p, err := producer.New(ctx, conn, reg)
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close(ctx)
				pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				_, err = p.Publish(pctx, src, "k", order("k", 1))
				if err == nil || !strings.Contains(err.Error(), tc.want) && !strings.Contains(err.Error(), "closed the connection during authentication") {
					t.Errorf("Publish: %v; want an error with the reason", err)
				}
				if err != nil {
					errs = append(errs, err.Error())
				}
			}
		})
	}
	for _, e := range errs {
		for _, pw := range b.passwords {
			if strings.Contains(e, pw) {
				t.Errorf("an error holds a password: %s", e)
			}
		}
	}
}
