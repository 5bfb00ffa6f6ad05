// Command choreo is the toolkit's command line: a local development stack
// (an embedded Kafka broker and schema registry), the example shop's demo,
// schema checks against a registry, and the dead-letter tools.
//
// Usage:
//
//	choreo demo [--orders N] [--chaos] [--failure-rate F] [--limit-cents N] [--database-url URL] [--timeout D] [--timelines N] [--seed N] [--log-file FILE]
//	choreo dev [--listen ADDR] [--registry-listen ADDR] [--data-dir DIR] [--partitions N]
//	choreo bench [--scenario produce|consume|slow|latency|all] [--events N] [--size BYTES] [--partitions P] [--rounds R] [--rate N] [-o table|json|jsonl]
//	choreo dlq list    SERVICE [filters] [--limit N] [--follow] [-o table|json|jsonl]
//	choreo dlq show    SERVICE PARTITION:OFFSET [-o table|json|jsonl]
//	choreo dlq stats   SERVICE [filters] [--by hour|day] [-o table|json|jsonl]
//	choreo dlq redrive SERVICE [PARTITION:OFFSET ...] [filters] [--dry-run] [--rate N/s] [--yes] [--again] [--max-redrives N] [--to TOPIC]
//	        filters: --kind K --type T --key K --correlation-id ID --since T --until T --grep RE; --topic T for another topic
//	choreo flows [--http ADDR] [--data-dir DIR] [--topics RE] [--retention DUR]   (the flow index and its HTTP API)
//	choreo flows stuck [--flows URL] [--after DUR] [--terminal TYPE,...] [-o table|json|jsonl]
//	choreo trace CORRELATION-ID|EVENT-ID|KEY [--flows URL] [-o table|json|jsonl]
//	choreo catalog [--flows URL] [--registry URL] [-o table|json|jsonl|asyncapi|asyncapi-json]
//	choreo schema check    --subject SUBJECT [--registry URL] FILE.avsc
//	choreo schema register --subject SUBJECT [--registry URL] FILE.avsc
//	choreo completion bash|zsh|fish|powershell
//	choreo --version
//	choreo help [COMMAND]   (or choreo COMMAND --help)
//
// Flags are GNU style: --name value or --name=value, anywhere after the
// command. A mistyped command gets a suggestion ("did you mean dev?").
//
// Environment: commands that reach Kafka read KAFKA_BROKERS and the SASL and
// TLS settings KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD,
// KAFKA_TLS and KAFKA_TLS_CA_FILE (see package connection); commands that
// reach a schema registry read SCHEMA_REGISTRY_URL, SCHEMA_REGISTRY_USERNAME
// and SCHEMA_REGISTRY_PASSWORD. Flags (--brokers, --registry) override them.
//
// Exit status: 0 success; 1 failure; 2 usage error (an unknown command or
// flag, a bad flag value, missing or extra arguments, no registry or broker
// configured). An error is one line on standard error,
// "choreo <command>: <message>"; for a malformed command line (unknown flag,
// wrong arguments, missing subcommand) the command's usage follows it.
// Requested help (--help, help) goes to standard output.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return execute(ctx, newRootCmd(), args, stdout, stderr)
}

// execute runs root with args and turns its error into the one-line message
// and the exit status.
func execute(ctx context.Context, root *cobra.Command, args []string, stdout, stderr io.Writer) int {
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(stderr, "%s: %s\n", cmd.CommandPath(), oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) {
		if ue.showUsage {
			fmt.Fprintf(stderr, "\n%s", cmd.UsageString())
		}
		return 2
	}
	var ex exitError
	if errors.As(err, &ex) {
		return ex.code
	}
	return 1
}

// oneLine folds a multi-line message onto one line.
func oneLine(msg string) string {
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return strings.Join(lines, " ")
}

// usageError is a mistake in how the command was called: exit status 2.
// With showUsage, the command line itself was malformed (unknown flag, wrong
// number of arguments, missing subcommand) and the command's usage is printed
// after the message; a bad value of a well-formed flag is only the message,
// which names the flag.
type usageError struct {
	msg       string
	showUsage bool
}

// Error returns the message.
func (e usageError) Error() string { return e.msg }

// usagef returns a usage error without the usage: the message says it all.
func usagef(format string, args ...any) error { return usageError{msg: fmt.Sprintf(format, args...)} }

// exitError carries a specific exit status with its message.
type exitError struct {
	code int
	err  error
}

// Error returns the wrapped error's message.
func (e exitError) Error() string { return e.err.Error() }

// Unwrap returns the wrapped error.
func (e exitError) Unwrap() error { return e.err }
