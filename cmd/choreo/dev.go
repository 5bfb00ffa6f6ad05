package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/choreokit/choreo/schema/registry"
)

// devStack is a running embedded broker and schema registry.
type devStack struct {
	broker      *kfake.Cluster
	brokerAddr  string
	registry    *http.Server
	registryURL string
}

// devConfig is what `choreo dev` starts.
type devConfig struct {
	listen         string // broker address
	registryListen string // registry address
	dataDir        string // "" keeps everything in memory
	partitions     int    // partitions of auto-created topics
}

func newDevCmd() *cobra.Command {
	var cfg devConfig
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an embedded Kafka broker and schema registry for development",
		Long: `Run an embedded Kafka broker and schema registry on localhost until
interrupted (Ctrl-C, SIGTERM), and print the export lines that point
KAFKA_BROKERS and SCHEMA_REGISTRY_URL at them. Topics are created on first
use. With --data-dir, topics, offsets and schemas survive a restart.`,
		Args: usageArgs(cobra.NoArgs, func(args []string) string {
			return fmt.Sprintf("unexpected argument %q", args[0])
		}),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), cfg, cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:9092", "address the Kafka broker listens on")
	fs.StringVar(&cfg.registryListen, "registry-listen", "127.0.0.1:8081", "address the schema registry listens on")
	fs.StringVar(&cfg.dataDir, "data-dir", "", "directory that keeps topics, offsets and schemas across restarts (default: memory only)")
	fs.IntVar(&cfg.partitions, "partitions", 3, "partitions of topics created automatically")
	_ = cmd.MarkFlagDirname("data-dir")
	return cmd
}

// runDev serves the stack until ctx is done.
func runDev(ctx context.Context, cfg devConfig, stdout io.Writer) error {
	st, err := startDev(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "choreo dev: Kafka broker on %s, schema registry on %s\n", st.brokerAddr, st.registryURL)
	if cfg.dataDir != "" {
		fmt.Fprintf(stdout, "choreo dev: data kept in %s\n", cfg.dataDir)
	}
	fmt.Fprintf(stdout, "export KAFKA_BROKERS=%s\nexport SCHEMA_REGISTRY_URL=%s\n", st.brokerAddr, st.registryURL)
	fmt.Fprintln(stdout, "choreo dev: press Ctrl-C to stop")
	<-ctx.Done()
	fmt.Fprintln(stdout, "choreo dev: shutting down")
	return st.close()
}

// checkListenAddr accepts host:port with a numeric port (0 picks one).
func checkListenAddr(flagName, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", usagef("--%s %q: want host:port, such as 127.0.0.1:9092", flagName, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", usagef("--%s %q: port must be a number from 0 to 65535", flagName, addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

func listen(flagName, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("--%s %s: address already in use (is another choreo dev or Kafka running?)", flagName, addr)
		}
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			return nil, usagef("--%s %s: unknown host %q", flagName, addr, dnsErr.Name)
		}
		return nil, fmt.Errorf("--%s %s: %w", flagName, addr, err)
	}
	return ln, nil
}

// checkDataDir makes sure dir exists and is writable, so that a bad
// --data-dir fails at start with a clear message, not later.
func checkDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--data-dir %s: cannot create: %w", dir, unwrapPath(err))
	}
	probe, err := os.CreateTemp(dir, ".choreo-probe-*")
	if err != nil {
		return fmt.Errorf("--data-dir %s: not writable: %w", dir, unwrapPath(err))
	}
	probe.Close()
	return os.Remove(probe.Name())
}

// unwrapPath drops the *PathError layer whose path the message names already.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func startDev(cfg devConfig) (st *devStack, err error) {
	brokerAddr, err := checkListenAddr("listen", cfg.listen)
	if err != nil {
		return nil, err
	}
	registryAddr, err := checkListenAddr("registry-listen", cfg.registryListen)
	if err != nil {
		return nil, err
	}
	if cfg.partitions < 1 {
		return nil, usagef("--partitions %d: want at least 1", cfg.partitions)
	}
	var regOpts []registry.Option
	fakeOpts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(cfg.partitions),
		kfake.ClusterID("choreo-dev"),
	}
	if cfg.dataDir != "" {
		if err := checkDataDir(cfg.dataDir); err != nil {
			return nil, err
		}
		fakeOpts = append(fakeOpts, kfake.DataDir(filepath.Join(cfg.dataDir, "kafka")))
		regOpts = append(regOpts, registry.WithFile(filepath.Join(cfg.dataDir, "schemas.json")))
	}

	brokerLn, err := listen("listen", brokerAddr)
	if err != nil {
		return nil, err
	}
	regLn, err := listen("registry-listen", registryAddr)
	if err != nil {
		brokerLn.Close()
		return nil, err
	}
	defer func() {
		if err != nil {
			brokerLn.Close()
			regLn.Close()
		}
	}()

	reg, err := registry.New(regOpts...)
	if err != nil {
		return nil, fmt.Errorf("schema registry: %w", err)
	}
	// kfake listens on 127.0.0.1 with a port of its choosing unless told
	// otherwise; hand it the listener bound above so --listen holds.
	handed := false
	fakeOpts = append(fakeOpts, kfake.ListenFn(func(network, address string) (net.Listener, error) {
		if handed {
			return nil, errors.New("embedded broker asked for a second listener")
		}
		handed = true
		return brokerLn, nil
	}))
	broker, err := kfake.NewCluster(fakeOpts...)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	srv := &http.Server{
		Handler:           reg,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(slog.NewTextHandler(os.Stderr, nil), slog.LevelWarn),
	}
	go func() { _ = srv.Serve(regLn) }()
	return &devStack{
		broker:      broker,
		brokerAddr:  brokerLn.Addr().String(),
		registry:    srv,
		registryURL: "http://" + regLn.Addr().String(),
	}, nil
}

// close stops the registry, then the broker (which saves its state when it
// has a data directory).
func (st *devStack) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := st.registry.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		// A request still open after 5s (a client of the stack that has
		// not stopped yet): the stack is going away, so close it.
		err = st.registry.Close()
	}
	st.broker.Close()
	if err != nil {
		return fmt.Errorf("stop schema registry: %w", err)
	}
	return nil
}
