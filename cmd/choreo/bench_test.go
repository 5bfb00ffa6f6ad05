package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/choreokit/choreo/internal/benchkit"
)

// benchEmbedded makes `choreo bench` start its own broker and registry,
// whatever the environment names.
func benchEmbedded(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "")
	t.Setenv(envRegistryURL, "")
}

// runBenchCmd runs choreo with args and returns the status and outputs.
func runBenchCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// tinyBench are the flags of a short run: the tests check the rows, never
// the speed.
var tinyBench = []string{"--events", "300", "--rounds", "1", "--partitions", "3", "--rate", "3000"}

// TestBenchScenarios runs each scenario, tiny, on the embedded broker and
// checks the table: the rows expected, each with a positive rate, a heap,
// a load average and the settings.
func TestBenchScenarios(t *testing.T) {
	benchEmbedded(t)
	for _, tc := range []struct {
		scenario string
		rows     []string // scenario and variant of each row, in order
		latency  []string // rows with p50 and p99
		steps    int      // progress lines
	}{
		{"produce", []string{"produce raw", "produce choreo", "produce-sync raw", "produce-sync choreo"},
			[]string{"produce-sync raw", "produce-sync choreo"}, 4},
		{"consume", []string{"consume raw", "consume choreo"}, nil, 3},
		{"slow", []string{"slow raw-sequential", "slow per-partition", "slow per-key"}, nil, 4},
		{"latency", []string{"latency raw", "latency choreo"}, []string{"latency raw", "latency choreo"}, 2},
	} {
		t.Run(tc.scenario, func(t *testing.T) {
			code, stdout, stderr := runBenchCmd(t, append([]string{"bench", "--scenario", tc.scenario}, tinyBench...)...)
			if code != 0 {
				t.Fatalf("status %d; want 0 (stderr %q)", code, stderr)
			}
			for _, want := range []string{"choreo bench, ", "broker: embedded", "machine: ", "load average ", "SCENARIO", "EVENTS/S", "RATIO", "PEAK HEAP", "SETTINGS"} {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			var rows []string
			for _, line := range tableRows(stdout) {
				f := strings.Fields(line)
				name := f[0] + " " + f[1]
				rows = append(rows, name)
				rate, err := strconv.ParseFloat(strings.ReplaceAll(f[2], ",", ""), 64)
				if err != nil || rate <= 0 {
					t.Errorf("row %q: rate %q; want a positive number", line, f[2])
				}
				if !strings.Contains(line, " MB ") && !strings.Contains(line, " kB ") {
					t.Errorf("row %q: no peak heap", line)
				}
				if !strings.Contains(line, " ev ×1, ") || !strings.Contains(line, "200 B") {
					t.Errorf("row %q: settings lack the events and rounds", line)
				}
				if slices.Contains(tc.latency, name) && strings.Count(line, "ms") < 2 {
					t.Errorf("row %q: want p50 and p99", line)
				}
				if strings.HasSuffix(name, "choreo") && !strings.Contains(line, "× raw") {
					t.Errorf("row %q: want a ratio to raw", line)
				}
			}
			if !slices.Equal(rows, tc.rows) {
				t.Errorf("rows %q; want %q\n%s", rows, tc.rows, stdout)
			}
			// Not a terminal: one plain line per finished step.
			if n := strings.Count(stderr, "bench: "); n != tc.steps {
				t.Errorf("%d progress lines; want %d:\n%s", n, tc.steps, stderr)
			}
		})
	}
}

// tableRows returns the lines of the table under its header row.
func tableRows(stdout string) []string {
	_, table, ok := strings.Cut(stdout, "SCENARIO")
	if !ok {
		return nil
	}
	lines := strings.Split(table, "\n")[1:]
	var rows []string
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			break
		}
		rows = append(rows, l)
	}
	return rows
}

// TestBenchJSON checks --output json: the results as a JSON array, one
// object per row, with the rates, ratios and settings.
func TestBenchJSON(t *testing.T) {
	benchEmbedded(t)
	code, stdout, stderr := runBenchCmd(t, append([]string{"bench", "--scenario", "consume,produce", "--output", "json"}, tinyBench...)...)
	if code != 0 {
		t.Fatalf("status %d; want 0 (stderr %q)", code, stderr)
	}
	var res []benchkit.Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("stdout is not a JSON array of results: %v\n%s", err, stdout)
	}
	var rows []string
	for _, r := range res {
		rows = append(rows, r.Scenario+" "+r.Variant)
		if r.Rate <= 0 || len(r.Rates) != 1 || r.Heap == 0 || r.Load == "" {
			t.Errorf("%s %s: %+v; want a rate, one round, a heap and a load average", r.Scenario, r.Variant, r)
		}
		if r.Config.Partitions != 3 || r.Config.Rounds != 1 || r.Config.ValueBytes < benchkit.DefaultSize-3 || !strings.HasPrefix(r.Config.Broker, "embedded") {
			t.Errorf("%s %s: settings %+v; want 3 partitions, 1 round, 200-byte values, the embedded broker", r.Scenario, r.Variant, r.Config)
		}
		if r.Variant == "choreo" && (r.Vs != "raw" || r.Ratio <= 0) {
			t.Errorf("%s %s: ratio %v to %q; want a ratio to raw", r.Scenario, r.Variant, r.Ratio, r.Vs)
		}
	}
	// The order is the scenarios' own, whatever the flag's.
	want := []string{"produce raw", "produce choreo", "produce-sync raw", "produce-sync choreo", "consume raw", "consume choreo"}
	if !slices.Equal(rows, want) {
		t.Errorf("rows %q; want %q", rows, want)
	}
	for _, key := range []string{`"events_per_sec"`, `"ratio"`, `"p50_ms"`, `"peak_heap_bytes"`, `"load_average"`, `"settings"`, `"value_bytes"`} {
		if !strings.Contains(stdout, key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}

// TestBenchBadInput checks that bad flags are usage errors (status 2) and
// an unreachable broker a failure (status 1), each one line, quickly.
func TestBenchBadInput(t *testing.T) {
	benchEmbedded(t)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
		usage  bool // the usage follows the message
	}{
		{"no events", []string{"--events", "0"}, 2, "--events 0: want at least 1", false},
		{"negative events", []string{"--events", "-5"}, 2, "--events -5: want at least 1", false},
		{"events not a number", []string{"--events", "lots"}, 2, `invalid argument "lots" for "--events" flag`, true},
		{"unknown scenario", []string{"--scenario", "nope"}, 2, `--scenario "nope": want produce, consume, slow, latency or all`, false},
		{"unknown scenario in a list", []string{"--scenario", "produce,nope"}, 2, `--scenario "nope"`, false},
		{"negative size", []string{"--size", "-1"}, 2, "--size -1: want 64 to 1000000 bytes", false},
		{"size too small", []string{"--size", "10"}, 2, "--size 10: want 64 to 1000000 bytes", false},
		{"no partitions", []string{"--partitions", "0"}, 2, "--partitions 0: want 1 to 10000", false},
		{"no rounds", []string{"--rounds", "0"}, 2, "--rounds 0: want 1 to 100", false},
		{"no rate", []string{"--rate", "0"}, 2, "--rate 0: want 1 to 1000000", false},
		{"bad output", []string{"--output", "yaml"}, 2, `invalid argument "yaml" for "-o, --output" flag`, true},
		{"argument", []string{"consume"}, 2, `unexpected argument "consume"`, true},
		{"bad brokers", []string{"--brokers", ","}, 2, "--brokers", false},
		{"unreachable brokers", []string{"--brokers", "127.0.0.1:1", "--events", "10"}, 1, "cannot reach kafka at 127.0.0.1:1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			code, stdout, stderr := runBenchCmd(t, append([]string{"bench"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("status %d; want %d (stderr %q)", code, tc.code, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q; want nothing", stdout)
			}
			checkErrorOutput(t, stderr, "choreo bench: ", tc.stderr, tc.usage)
			if took := time.Since(start); took > 2*benchkit.ReachTimeout {
				t.Errorf("took %v to fail", took)
			}
		})
	}
}
