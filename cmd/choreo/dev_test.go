package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// TestMain lets tests run the real main in a child process: with
// CHOREO_TEST_MAIN=1 the test binary is the choreo command.
func TestMain(m *testing.M) {
	if os.Getenv("CHOREO_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// childCommand starts the choreo command in a child process.
func childCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "CHOREO_TEST_MAIN=1")
	return cmd
}

// lockedBuffer is a bytes.Buffer safe for one writer and one reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startDevInProcess runs `choreo dev` with args in this process and returns
// the broker address and registry URL it printed, and a stop function that
// returns its exit status.
func startDevInProcess(t *testing.T, args ...string) (broker, registryURL string, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	var stderr lockedBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, append([]string{"dev"}, args...), pw, &stderr)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "export KAFKA_BROKERS="); ok {
			broker = v
		}
		if v, ok := strings.CutPrefix(line, "export SCHEMA_REGISTRY_URL="); ok {
			registryURL = v
			break
		}
	}
	if broker == "" || registryURL == "" {
		cancel()
		t.Fatalf("choreo dev printed no addresses; stderr: %s", stderr.String())
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	var once sync.Once
	status := 0
	stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case status = <-code:
			case <-time.After(15 * time.Second):
				t.Fatal("choreo dev did not stop within 15s of cancellation")
			}
		})
		return status
	}
	t.Cleanup(func() { stop() })
	return broker, registryURL, stop
}

const (
	schemaV1      = `{"type":"record","name":"OrderPlaced","namespace":"shop","fields":[{"name":"id","type":"string"}]}`
	schemaV2OK    = `{"type":"record","name":"OrderPlaced","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"note","type":"string","default":""}]}`
	schemaV2Break = `{"type":"record","name":"OrderPlaced","namespace":"shop","fields":[{"name":"id","type":"long"}]}`
)

func TestDevServesBrokerAndRegistry(t *testing.T) {
	broker, regURL, stop := startDevInProcess(t, "--listen", "127.0.0.1:0", "--registry-listen", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Kafka: auto-created topic, produce, consume.
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.DefaultProduceTopic("dev-test"),
		kgo.ConsumeTopics("dev-test"), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, kgo.StringRecord("hello")).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	fs := cl.PollFetches(ctx)
	if rs := fs.Records(); len(rs) != 1 || string(rs[0].Value) != "hello" {
		t.Fatalf("consumed %v (errors %v); want one record hello", rs, fs.Errors())
	}

	// Registry: empty, register, refuse an incompatible change.
	resp, err := http.Get(regURL + "/subjects")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := strings.TrimSpace(string(body)); got != "[]" {
		t.Errorf("GET /subjects = %s; want []", got)
	}
	rcl, err := sr.NewClient(sr.URLs(regURL))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rcl.CreateSchema(ctx, "orders-value", sr.Schema{Schema: schemaV1}); err != nil {
		t.Fatalf("register v1: %v", err)
	}
	if _, err := rcl.CreateSchema(ctx, "orders-value", sr.Schema{Schema: schemaV2OK}); err != nil {
		t.Fatalf("register compatible v2: %v", err)
	}
	_, err = rcl.CreateSchema(ctx, "orders-value", sr.Schema{Schema: schemaV2Break})
	var re *sr.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusConflict {
		t.Fatalf("register incompatible schema: err %v; want HTTP 409", err)
	}
	if code := stop(); code != 0 {
		t.Fatalf("exit status %d after shutdown; want 0", code)
	}
	if _, err := net.DialTimeout("tcp", broker, time.Second); err == nil {
		t.Error("broker still accepts connections after shutdown")
	}
}

func TestDevDataDirSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	broker, regURL, stop := startDevInProcess(t, "--listen", "127.0.0.1:0", "--registry-listen", "127.0.0.1:0", "--data-dir", dir)
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.DefaultProduceTopic("kept"), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, kgo.StringRecord("one"), kgo.StringRecord("two")).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	cl.Close()
	rcl, _ := sr.NewClient(sr.URLs(regURL))
	first, err := rcl.CreateSchema(ctx, "kept-value", sr.Schema{Schema: schemaV1})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	if code := stop(); code != 0 {
		t.Fatalf("exit status %d; want 0", code)
	}

	broker, regURL, _ = startDevInProcess(t, "--listen", "127.0.0.1:0", "--registry-listen", "127.0.0.1:0", "--data-dir", dir)
	adm, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, "kept")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total != 2 {
		t.Errorf("after restart topic kept has %d records; want 2", total)
	}
	rcl, _ = sr.NewClient(sr.URLs(regURL))
	got, err := rcl.SchemaByID(ctx, first.ID)
	if err != nil || !strings.Contains(got.Schema, "OrderPlaced") {
		t.Errorf("after restart schema %d = %v, %v; want it kept", first.ID, got.Schema, err)
	}
}

func TestDevBadInput(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	free := "127.0.0.1:0"
	for _, tc := range []struct {
		name  string
		args  []string
		code  int
		want  string
		usage bool // the message is followed by the usage of dev
	}{
		{"listen nonsense", []string{"--listen", "nonsense"}, 2, `--listen "nonsense": want host:port`, false},
		{"listen bad port", []string{"--listen", "127.0.0.1:99999"}, 2, "port must be a number", false},
		{"registry nonsense", []string{"--listen", free, "--registry-listen", "x"}, 2, "--registry-listen", false},
		{"broker port in use", []string{"--listen", busy.Addr().String(), "--registry-listen", free}, 1, "address already in use", false},
		{"registry port in use", []string{"--listen", free, "--registry-listen", busy.Addr().String()}, 1, "address already in use", false},
		{"data dir is a file", []string{"--listen", free, "--registry-listen", free, "--data-dir", filepath.Join(notDir, "sub")}, 1, "--data-dir", false},
		{"unknown flag", []string{"--bogus"}, 2, "unknown flag: --bogus", true},
		{"extra argument", []string{"now"}, 2, `unexpected argument "now"`, true},
		{"partitions", []string{"--partitions", "0"}, 2, "--partitions 0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := childCommand(t, append([]string{"dev"}, tc.args...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout = &stdout
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.code {
				t.Fatalf("exit: %v; want status %d (stderr %q)", err, tc.code, stderr.String())
			}
			checkErrorOutput(t, stderr.String(), "choreo dev: ", tc.want, tc.usage)
			if strings.Contains(stderr.String(), "goroutine") {
				t.Fatalf("stderr has a stack trace: %s", stderr.String())
			}
			if strings.Contains(stdout.String(), "export ") {
				t.Errorf("stdout %q: the stack started despite the error", stdout.String())
			}
		})
	}
}

// checkErrorOutput checks what a failed command wrote to stderr: one line,
// prefix+message containing want; with usage, that line, an empty line and
// the command's usage with its flags.
func checkErrorOutput(t *testing.T, stderr, prefix, want string, usage bool) {
	t.Helper()
	first, rest, _ := strings.Cut(strings.TrimSpace(stderr), "\n")
	if !strings.HasPrefix(first, prefix) || !strings.Contains(first, want) {
		t.Errorf("first line of stderr %q; want %q... containing %q", first, prefix, want)
	}
	switch {
	case !usage && rest != "":
		t.Errorf("stderr = %q; want one line", stderr)
	case usage && (!strings.HasPrefix(rest, "\nUsage:\n") || !strings.Contains(rest, "Flags:")):
		t.Errorf("stderr after the message = %q; want an empty line and the usage with the flags", rest)
	}
}

// TestDevStopsOnSignal runs the real command in a child process and stops
// it with SIGTERM, as a terminal or a supervisor would.
func TestDevStopsOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := childCommand(t, "dev", "--listen", "127.0.0.1:0", "--registry-listen", "127.0.0.1:0")
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stdout)
			started := false
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "export SCHEMA_REGISTRY_URL=") {
					started = true
					break
				}
			}
			if !started {
				_ = cmd.Process.Kill()
				t.Fatal("choreo dev did not print its addresses")
			}
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("exit after %v: %v; want status 0", sig, err)
				}
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("still running 15s after %v", sig)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), nil, &out, &errOut); code != 2 {
		t.Errorf("no arguments: status %d; want 2", code)
	}
	if !strings.Contains(errOut.String(), "dev") {
		t.Errorf("usage does not list dev: %q", errOut.String())
	}
	errOut.Reset()
	if code := run(context.Background(), []string{"frobnicate"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), `unknown command "frobnicate"`) {
		t.Errorf("unknown command: status %d, stderr %q", code, errOut.String())
	}
	errOut.Reset()
	// Requested help goes to stdout.
	if code := run(context.Background(), []string{"dev", "-h"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "--data-dir") {
		t.Errorf("dev -h: status %d, stdout %q; want 0 and the flags", code, out.String())
	}
}
