package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/choreokit/choreo/connection"
)

// runTestCmd runs args against the real root with cmd added to it, as a
// future command would be, and returns the exit status and stderr.
func runTestCmd(t *testing.T, cmd *cobra.Command, args ...string) (int, string) {
	t.Helper()
	root := newRootCmd()
	root.AddCommand(cmd)
	var stdout, stderr bytes.Buffer
	code := execute(context.Background(), root, args, &stdout, &stderr)
	return code, stderr.String()
}

func TestOutputFlag(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		format string // when code is 0
		stderr string // when code is not
	}{
		{"default", nil, 0, "table", ""},
		{"json", []string{"--output", "json"}, 0, "json", ""},
		{"jsonl with =", []string{"--output=jsonl"}, 0, "jsonl", ""},
		{"shorthand", []string{"-o", "table"}, 0, "table", ""},
		{"yaml", []string{"--output", "yaml"}, 2, "", `choreo list: invalid argument "yaml" for "-o, --output" flag: want table, json or jsonl`},
		{"empty", []string{"--output="}, 2, "", "want table, json or jsonl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got *outputFlag
			ran := false
			cmd := &cobra.Command{Use: "list", Args: cobra.NoArgs, RunE: func(*cobra.Command, []string) error {
				ran = true
				return nil
			}}
			got = addOutputFlag(cmd)
			code, stderr := runTestCmd(t, cmd, append([]string{"list"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("status %d; want %d (stderr %q)", code, tc.code, stderr)
			}
			if code != 0 {
				if ran {
					t.Error("the command ran despite the bad flag")
				}
				checkErrorOutput(t, stderr, "choreo list: ", tc.stderr, true)
				if !strings.Contains(stderr, "-o, --output format") {
					t.Errorf("usage %q does not list --output", stderr)
				}
				return
			}
			if got.format != tc.format {
				t.Errorf("format %q; want %q", got.format, tc.format)
			}
		})
	}
}

func TestWriteOutput(t *testing.T) {
	type item struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	}
	items := []item{{"orders", 3}, {"payments-service", 12}}
	row := func(it item) []string { return []string{it.Name, strings.Repeat("x", it.Count%5)} }
	for _, tc := range []struct {
		format string
		items  []item
		want   string
	}{
		{"table", items, "NAME              COUNT\norders            xxx\npayments-service  xx\n"},
		{"table", nil, "NAME  COUNT\n"},
		{"json", items, "[\n  {\n    \"name\": \"orders\",\n    \"count\": 3\n  },\n  {\n    \"name\": \"payments-service\",\n    \"count\": 12\n  }\n]\n"},
		{"json", nil, "[]\n"},
		{"jsonl", items, "{\"name\":\"orders\",\"count\":3}\n{\"name\":\"payments-service\",\"count\":12}\n"},
		{"jsonl", nil, ""},
	} {
		var b bytes.Buffer
		if err := writeOutput(&b, &outputFlag{format: tc.format}, []string{"NAME", "COUNT"}, tc.items, row); err != nil {
			t.Fatalf("%s: %v", tc.format, err)
		}
		if b.String() != tc.want {
			t.Errorf("%s of %d items:\n%s\nwant:\n%s", tc.format, len(tc.items), b.String(), tc.want)
		}
	}
}

func TestKafkaFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		need    bool // needConfig rather than config
		code    int
		brokers string // comma-separated, when code is 0
		sasl    string
		tls     bool
		stderr  string // when code is not 0
	}{
		{name: "from env", env: map[string]string{"KAFKA_BROKERS": "k1:9092,k2:9092"}, brokers: "k1:9092,k2:9092"},
		{name: "flag overrides env", env: map[string]string{"KAFKA_BROKERS": "k1:9092"}, args: []string{"--brokers", "x:1"}, brokers: "x:1"},
		{name: "none is fine for config", brokers: ""},
		{name: "none for needConfig", need: true, code: 2, stderr: "no Kafka brokers: set KAFKA_BROKERS or --brokers"},
		{name: "bad flag", args: []string{"--brokers", "nohost"}, code: 2, stderr: `--brokers: broker "nohost": want host:port`},
		{name: "sasl and tls from env", args: []string{"--brokers", "b:9093"},
			env:     map[string]string{"KAFKA_SASL_MECHANISM": "scram-sha-512", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "pw", "KAFKA_TLS": "true"},
			brokers: "b:9093", sasl: "SCRAM-SHA-512", tls: true},
		{name: "bad sasl env", env: map[string]string{"KAFKA_SASL_MECHANISM": "GSSAPI", "KAFKA_SASL_USERNAME": "svc"},
			args: []string{"--brokers", "b:9093"}, code: 2, stderr: `unknown SASL mechanism "GSSAPI"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{connection.EnvBrokers, connection.EnvSASLMechanism, connection.EnvSASLUsername,
				connection.EnvSASLPassword, connection.EnvTLS, connection.EnvTLSCAFile} {
				t.Setenv(k, tc.env[k])
			}
			var got connection.Config
			cmd := &cobra.Command{Use: "tail", Args: cobra.NoArgs}
			kf := addKafkaFlags(cmd)
			cmd.RunE = func(*cobra.Command, []string) (err error) {
				if tc.need {
					got, err = kf.needConfig()
				} else {
					got, err = kf.config()
				}
				return err
			}
			code, stderr := runTestCmd(t, cmd, append([]string{"tail"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("status %d; want %d (stderr %q)", code, tc.code, stderr)
			}
			if code != 0 {
				checkErrorOutput(t, stderr, "choreo tail: ", tc.stderr, false)
				return
			}
			if b := strings.Join(got.Brokers, ","); b != tc.brokers {
				t.Errorf("brokers %q; want %q", b, tc.brokers)
			}
			if got.SASLMechanism != tc.sasl || (got.TLS != nil) != tc.tls {
				t.Errorf("config %v; want sasl %q, tls %v", got, tc.sasl, tc.tls)
			}
			if tc.sasl != "" && got.SASLPassword != "pw" {
				t.Error("SASL password not read from the environment")
			}
		})
	}
}
