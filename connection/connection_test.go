package connection

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestFromEnv(t *testing.T) {
	c, err := fromLookup(env(map[string]string{
		EnvBrokers:       " a:9092, b:9093 ,",
		EnvSASLMechanism: "scram-sha-512",
		EnvSASLUsername:  "svc",
		EnvSASLPassword:  "s3cret",
		EnvTLS:           "true",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Brokers, ","); got != "a:9092,b:9093" {
		t.Errorf("brokers = %q; want a:9092,b:9093", got)
	}
	if c.SASLMechanism != MechanismSCRAMSHA512 || c.TLS == nil {
		t.Errorf("got %+v; want SCRAM-SHA-512 with TLS", c)
	}
	if s := c.String(); strings.Contains(s, "s3cret") {
		t.Errorf("String() = %q prints the password", s)
	}
	empty, err := fromLookup(env(nil))
	if err != nil || len(empty.Brokers) != 0 {
		t.Errorf("empty env: %+v, %v; want no brokers, no error", empty, err)
	}
}

func TestFromEnvRejectsBrokenValues(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no port", map[string]string{EnvBrokers: "localhost"}, "want host:port"},
		{"bad port", map[string]string{EnvBrokers: "localhost:http"}, "port"},
		{"port range", map[string]string{EnvBrokers: "localhost:70000"}, "port"},
		{"only commas", map[string]string{EnvBrokers: ", ,"}, "no brokers"},
		{"empty host", map[string]string{EnvBrokers: ":9092"}, "empty host"},
		{"mechanism", map[string]string{EnvSASLMechanism: "GSSAPI", EnvSASLUsername: "u"}, "unknown SASL mechanism"},
		{"no user", map[string]string{EnvSASLMechanism: "PLAIN"}, "needs a user name"},
		{"user without mechanism", map[string]string{EnvSASLUsername: "u"}, "without a mechanism"},
		{"tls flag", map[string]string{EnvTLS: "yes please"}, "want true or false"},
		{"missing CA", map[string]string{EnvTLSCAFile: filepath.Join(dir, "nope.pem")}, "read CA file"},
		{"CA not PEM", map[string]string{EnvTLSCAFile: notPEM}, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := fromLookup(env(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := (Config{}).ClientOptions(); err == nil {
		t.Error("ClientOptions with no brokers: want an error")
	}
}

// TestSASL connects to an embedded broker that requires SCRAM and PLAIN
// authentication: the right password produces, a wrong one is refused.
func TestSASL(t *testing.T) {
	for _, mech := range []string{MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512} {
		t.Run(mech, func(t *testing.T) {
			fake, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
				kfake.Superuser(mech, "admin", "right"), kfake.SeedTopics(1, "t"))
			if err != nil {
				t.Fatal(err)
			}
			defer fake.Close()
			try := func(pass string) error {
				c := Config{Brokers: fake.ListenAddrs(), SASLMechanism: mech, SASLUsername: "admin", SASLPassword: pass}
				opts, err := c.ClientOptions()
				if err != nil {
					return err
				}
				cl, err := kgo.NewClient(append(opts, kgo.DefaultProduceTopic("t"), kgo.RequestRetries(0))...)
				if err != nil {
					return err
				}
				defer cl.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				return cl.ProduceSync(ctx, kgo.StringRecord("x")).FirstErr()
			}
			if err := try("right"); err != nil {
				t.Fatalf("right password: %v", err)
			}
			if err := try("wrong"); err == nil {
				t.Fatal("wrong password: produce succeeded; want an authentication error")
			}
		})
	}
}
