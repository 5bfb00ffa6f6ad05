package connection

import (
	"net"
	"strings"
	"testing"
)

// FuzzParseBrokers: KAFKA_BROKERS and --brokers are read from outside:
// parsing never panics, and every broker it accepts is host:port with a
// port from 1 to 65535.
func FuzzParseBrokers(f *testing.F) {
	f.Add("127.0.0.1:9092")
	f.Add("a:1, b:65535 ,,")
	f.Add("[::1]:9092")
	f.Add(":9092")
	f.Add("host:0")
	f.Fuzz(func(t *testing.T, s string) {
		brokers, err := ParseBrokers(s)
		if err != nil {
			return
		}
		if len(brokers) == 0 {
			t.Fatal("no brokers and no error")
		}
		for _, b := range brokers {
			host, port, err := net.SplitHostPort(b)
			if err != nil || host == "" || port == "" || strings.TrimSpace(b) != b {
				t.Fatalf("accepted %q from %q", b, s)
			}
		}
	})
}

// FuzzFromEnv: the KAFKA_* variables: reading them never panics, and a
// Config it returns is valid.
func FuzzFromEnv(f *testing.F) {
	f.Add("127.0.0.1:9092", "SCRAM-SHA-256", "alice", "pw", "true")
	f.Add("", "plain", "", "", "no")
	f.Add("h:1", "", "bob", "", "")
	f.Fuzz(func(t *testing.T, brokers, mech, user, pass, useTLS string) {
		// The password carries a mark no message has, so that finding it
		// in one is a leak, unless another input holds it too.
		pass = "\u00a7pw\u00a7" + pass
		env := map[string]string{EnvBrokers: brokers, EnvSASLMechanism: mech, EnvSASLUsername: user, EnvSASLPassword: pass, EnvTLS: useTLS}
		c, err := fromLookup(func(k string) (string, bool) { v, ok := env[k]; return v, ok && v != "" })
		leaks := func(s string) bool {
			return strings.Contains(s, pass) && !strings.Contains(brokers+"\x00"+mech+"\x00"+user+"\x00"+useTLS, pass)
		}
		if err != nil {
			if leaks(err.Error()) {
				t.Fatalf("the error holds the password: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("FromEnv returned a config that does not validate: %v", err)
		}
		if leaks(c.String()) {
			t.Fatalf("String holds the password: %s", c)
		}
	})
}
