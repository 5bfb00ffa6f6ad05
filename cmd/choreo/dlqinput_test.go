package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/choreokit/choreo/dlq"
)

// TestDLQBadInput: every kind of bad input gets one clear line on stderr
// and its documented exit status (1 failure, 2 usage); a filter matching
// nothing is not an error.
func TestDLQBadInput(t *testing.T) {
	fx := newDLQFixture(t, 1)
	fx.writeGolden(t)
	for _, tc := range []struct {
		name   string
		args   []string // after the connection flags; nil conn: none
		conn   bool
		code   int
		stdout string
		stderr string
	}{
		{"bad PARTITION:OFFSET", []string{"dlq", "show", fx.group, "zero:1"}, true, 2, "", `bad dead letter "zero:1": want PARTITION:OFFSET`},
		{"negative offset", []string{"dlq", "show", fx.group, "0:-1"}, true, 2, "", "want PARTITION:OFFSET"},
		{"bad coordinates to redrive", []string{"dlq", "redrive", fx.group, "1-2"}, true, 2, "", `bad dead letter "1-2"`},
		{"unparsable --since", []string{"dlq", "list", fx.group, "--since", "yesterday"}, true, 2, "", `--since "yesterday": want an RFC 3339 time`},
		{"--until before --since", []string{"dlq", "list", fx.group, "--since", "1h", "--until", "2h"}, true, 2, "", "is not after --since"},
		{"bad --grep", []string{"dlq", "list", fx.group, "--grep", "("}, true, 2, "", "--grep: error parsing regexp"},
		{"bad --by", []string{"dlq", "stats", fx.group, "--by", "week"}, true, 2, "", `--by "week": want hour or day`},
		{"bad --rate", []string{"dlq", "redrive", fx.group, "--rate", "fast"}, true, 2, "", `--rate "fast"`},
		{"bad --output", []string{"dlq", "list", fx.group, "-o", "xml"}, true, 2, "", "want table, json or jsonl"},
		{"no service", []string{"dlq", "list"}, true, 2, "", "want the SERVICE"},
		{"bad service name", []string{"dlq", "list", "my service"}, true, 2, "", `service "my service"`},
		{"too many arguments", []string{"dlq", "list", fx.group, "extra"}, true, 2, "", "want SERVICE"},
		{"redrive of a topic that is no service's", []string{"dlq", "redrive", "--topic", "some-topic"}, true, 2, "", "name the SERVICE whose redrive topic"},
		{"no brokers", []string{"dlq", "list", fx.group, "--brokers", ""}, true, 2, "", "no Kafka brokers"},
		{"unknown service", []string{"dlq", "list", "nosuch-" + fx.group}, true, 1, "", "no dead-letter topic nosuch-svc.dlq: service \"nosuch-svc\" has never run here"},
		{"unknown topic", []string{"dlq", "stats", "--topic", "nosuch-" + fx.group}, true, 1, "", "topic nosuch-svc does not exist"},
		{"offset out of range", []string{"dlq", "show", fx.group, "0:99"}, true, 1, "", "no dead letter at 0:99: partition 0 of svc.dlq holds offsets 0 to 5"},
		{"partition out of range", []string{"dlq", "show", fx.group, "3:0"}, true, 1, "", "svc.dlq has partitions 0 to 0"},
		{"filter matching nothing", []string{"dlq", "list", fx.group, "--kind", "panic"}, true, 0, "", "none of the 6 records read from svc.dlq matches the filters"},
		{"filter matching nothing, json", []string{"dlq", "list", fx.group, "--since", "1h", "-o", "json"}, true, 0, "[]\n", "none of the 0 records"},
		{"redrive registry down", []string{"dlq", "redrive", fx.group, "--to", fx.topic, "--registry", "http://127.0.0.1:1", "--yes"}, true, 1, "", "schema registry: the dead letter at 0:0 cannot be decoded"},
		{"redrive without registry", []string{"dlq", "redrive", fx.group, "--registry", ""}, true, 2, "", "no schema registry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.conn {
				args = append(args[:2:2], fx.args(args[2:]...)...)
			}
			code, out, errOut := fx.choreo(t, "", args...)
			if code != tc.code {
				t.Fatalf("status %d; want %d (stdout %q, stderr %q)", code, tc.code, out, errOut)
			}
			if out != tc.stdout {
				t.Errorf("stdout %q; want %q", out, tc.stdout)
			}
			if !strings.Contains(errOut, tc.stderr) {
				t.Errorf("stderr %q; want it to contain %q", errOut, tc.stderr)
			}
			if code != 0 && !strings.HasPrefix(errOut, "choreo dlq ") {
				t.Errorf("stderr %q; want one line starting with the command", errOut)
			}
			if code == 1 && strings.Count(errOut, "\n") != 1 {
				t.Errorf("stderr %q; want exactly one line", errOut)
			}
		})
	}
}

// TestDLQUnreachableBroker: a broker that does not answer is one line,
// status 1, within the connection timeout (no hang: the test would time
// out).
func TestDLQUnreachableBroker(t *testing.T) {
	for _, args := range [][]string{
		{"dlq", "list", "svc", "--brokers", "127.0.0.1:1"},
		{"dlq", "redrive", "svc", "--brokers", "127.0.0.1:1", "--registry", "http://127.0.0.1:1", "--yes"},
	} {
		var out, errOut bytes.Buffer
		start := time.Now()
		code := run(context.Background(), args, &out, &errOut)
		t.Logf("%s failed after %v", strings.Join(args[:2], " "), time.Since(start).Round(time.Millisecond))
		if code != 1 || !strings.Contains(errOut.String(), "cannot reach Kafka at 127.0.0.1:1: connection refused: is the broker running") || strings.Count(errOut.String(), "\n") != 1 {
			t.Errorf("%v: status %d, stderr %q; want 1 and one line saying Kafka cannot be reached", args, code, errOut.String())
		}
	}
}

// TestDLQReadableWithKcat: dead letters written by choreo read back with
// kcat, the headers readable without a registry. CI installs kcat (.ci/run).
func TestDLQReadableWithKcat(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not installed (.ci/run installs it: apt-get install kcat)")
	}
	fx := newDLQFixture(t, 1)
	fx.writeGolden(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, "-b", strings.Join(fx.c.Seeds(), ","), "-C", "-t", fx.topic, "-o", "beginning", "-e", "-q",
		"-f", "%p@%o key=%k %h\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat: %v (%s)", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 6 {
		t.Fatalf("kcat printed %d lines; want one for each of the 6 records (a multi-line error message on one):\n%s", len(lines), out)
	}
	for i, want := range []string{
		"0@0 key=ord-1 choreo-original-topic=orders,choreo-original-partition=0,choreo-original-offset=10,choreo-error-kind=permanent,choreo-error-message=card declined,choreo-attempt=1,content-type=application/avro,ce_id=evt-1,ce_type=choreo.test.OrderPlaced,ce_correlationid=corr-1",
		"0@2 key=ord-2 choreo-original-topic=orders,choreo-original-partition=1,choreo-original-offset=20,choreo-error-kind=retries_exhausted,",
		"0@4 key=ord-1 choreo-original-topic=orders,choreo-original-partition=0,choreo-original-offset=10,choreo-error-kind=permanent,choreo-error-message=card declined again,choreo-attempt=1,content-type=application/avro,ce_id=evt-1,ce_type=choreo.test.OrderPlaced,ce_correlationid=corr-1,choreo-redrive-count=1,choreo-replayed-from=" + fx.topic + "/0/0",
	} {
		idx := []int{0, 2, 4}[i]
		if !strings.HasPrefix(lines[idx], want) {
			t.Errorf("kcat line %d:\n%s\nwant it to start with\n%s", idx, lines[idx], want)
		}
	}
	// The redrive log is readable too: a JSON value per dead letter.
	cmd = exec.CommandContext(ctx, kcat, "-b", strings.Join(fx.c.Seeds(), ","), "-C", "-t", dlq.RedriveLog(fx.topic), "-o", "beginning", "-e", "-q", "-f", "%k %s\n")
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("kcat the redrive log: %v", err)
	}
	if want := fmt.Sprintf(`0:2 {"dead_letter":"%s/0/2"`, fx.topic); !strings.HasPrefix(string(out), want) {
		t.Errorf("redrive log through kcat %q; want it to start with %q", out, want)
	}
}
