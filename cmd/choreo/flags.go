package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/schema"
)

// Flags shared between commands. Each add* function defines the flags on one
// command and returns what reads them after parsing; a command calls it in
// its newXxxCmd.

// kafkaFlags is --brokers; SASL and TLS come from the KAFKA_* environment.
type kafkaFlags struct {
	brokers string
}

// addKafkaFlags defines --brokers on cmd, defaulting to $KAFKA_BROKERS.
func addKafkaFlags(cmd *cobra.Command) *kafkaFlags {
	f := &kafkaFlags{}
	cmd.Flags().StringVar(&f.brokers, "brokers", os.Getenv(connection.EnvBrokers),
		"comma-separated seed brokers, host:port (env "+connection.EnvBrokers+"; SASL and TLS from KAFKA_SASL_*, KAFKA_TLS*)")
	return f
}

// config returns how to reach Kafka: SASL and TLS from the environment
// (connection.FromEnv), brokers from --brokers. Brokers may be empty, for a
// command that can offer the embedded broker then; see needConfig. A bad
// setting is a usage error.
func (f *kafkaFlags) config() (connection.Config, error) {
	cfg, err := connection.FromEnv()
	if err != nil {
		return connection.Config{}, usagef("%v", err)
	}
	cfg.Brokers = nil
	if strings.TrimSpace(f.brokers) != "" {
		brokers, err := connection.ParseBrokers(f.brokers)
		if err != nil {
			return connection.Config{}, usagef("--brokers: %v", err)
		}
		cfg.Brokers = brokers
	}
	return cfg, nil
}

// needConfig is config for a command that needs a cluster: no brokers is a
// usage error.
func (f *kafkaFlags) needConfig() (connection.Config, error) {
	cfg, err := f.config()
	if err == nil && len(cfg.Brokers) == 0 {
		err = usagef("no Kafka brokers: set %s or --brokers (choreo dev serves 127.0.0.1:9092)", connection.EnvBrokers)
	}
	return cfg, err
}

// Environment variables of the schema registry client.
const (
	envRegistryURL      = "SCHEMA_REGISTRY_URL"
	envRegistryUser     = "SCHEMA_REGISTRY_USERNAME"
	envRegistryPassword = "SCHEMA_REGISTRY_PASSWORD"
)

// registryFlags is --registry; basic auth comes from the environment.
type registryFlags struct {
	url string
}

// addRegistryFlag defines --registry on cmd, defaulting to
// $SCHEMA_REGISTRY_URL.
func addRegistryFlag(cmd *cobra.Command) *registryFlags {
	f := &registryFlags{}
	cmd.Flags().StringVar(&f.url, "registry", os.Getenv(envRegistryURL),
		"schema registry URL, comma-separated for several (env "+envRegistryURL+"; basic auth from "+envRegistryUser+", "+envRegistryPassword+")")
	return f
}

// check reports a missing registry as a usage error.
func (f *registryFlags) check() error {
	if strings.TrimSpace(f.url) == "" {
		return usagef("no schema registry: set %s or --registry (choreo dev serves http://127.0.0.1:8081)", envRegistryURL)
	}
	return nil
}

// client returns the registry client.
func (f *registryFlags) client() (*schema.Registry, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	var opts []schema.RegistryOption
	if u := os.Getenv(envRegistryUser); u != "" {
		opts = append(opts, schema.BasicAuth(u, os.Getenv(envRegistryPassword)))
	}
	reg, err := schema.NewRegistry(strings.Split(f.url, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", f.url, err)
	}
	return reg, nil
}

// Output formats of --output.
const (
	outputTable = "table" // aligned columns with a header
	outputJSON  = "json"  // one JSON array
	outputJSONL = "jsonl" // one JSON object a line
)

var outputFormats = []string{outputTable, outputJSON, outputJSONL}

// outputFlag is --output (-o) of a command whose output is data. It is a
// pflag.Value, so a bad format fails at parsing: a usage error.
type outputFlag struct {
	format string
}

// addOutputFlag defines --output/-o on cmd, defaulting to table.
func addOutputFlag(cmd *cobra.Command) *outputFlag {
	o := &outputFlag{format: outputTable}
	cmd.Flags().VarP(o, "output", "o", "output format: "+orList(outputFormats))
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(outputFormats, cobra.ShellCompDirectiveNoFileComp))
	return o
}

// String returns the format.
func (o *outputFlag) String() string { return o.format }

// Type names the value in the flag list.
func (o *outputFlag) Type() string { return "format" }

// Set accepts table, json or jsonl.
func (o *outputFlag) Set(s string) error {
	for _, f := range outputFormats {
		if s == f {
			o.format = s
			return nil
		}
	}
	return fmt.Errorf("want %s", orList(outputFormats))
}

// writeOutput writes items to w in format o: a table of columns with one
// row(item) a line (text/tabwriter), or the items themselves as JSON
// (encoding/json, so their json tags apply).
func writeOutput[T any](w io.Writer, o *outputFlag, columns []string, items []T, row func(T) []string) error {
	switch o.format {
	case outputJSON:
		if items == nil {
			items = []T{} // [] rather than null
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(items)
	case outputJSONL:
		enc := json.NewEncoder(w)
		for _, it := range items {
			if err := enc.Encode(it); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(columns, "\t"))
	for _, it := range items {
		fmt.Fprintln(tw, strings.Join(row(it), "\t"))
	}
	return tw.Flush()
}

// unreachable is the error of a command whose first request to the
// cluster failed with err: what err most likely means for conn (a wrong
// password, a plaintext listener dialled with TLS: connection.Config.Hint),
// or, when the wait passed without an answer, why cl's last connection
// attempt failed, if it did.
func unreachable(conn connection.Config, cl *kgo.Client, err error, wait time.Duration) error {
	where := strings.Join(conn.Brokers, ",")
	if errors.Is(err, context.DeadlineExceeded) {
		// LastError wraps the connection's error in its explanation.
		last := errors.Unwrap(conn.LastError(cl))
		if last == nil {
			return fmt.Errorf("cannot reach Kafka at %s: no answer within %v", where, wait)
		}
		where, err = fmt.Sprintf("%s within %v", where, wait), last
	}
	if hint := conn.Hint(err); hint != "" {
		return fmt.Errorf("cannot reach Kafka at %s: %s: %w", where, hint, err)
	}
	return fmt.Errorf("cannot reach Kafka at %s: %w", where, err)
}
