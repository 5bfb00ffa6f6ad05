package main

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// newRootCmd returns the whole command tree, fresh for each run (flags keep
// their values in the commands).
//
// To add a command, write one file with a func newXxxCmd() *cobra.Command
// (Use, Short, Args through usageArgs, RunE using cmd.Context() and
// cmd.OutOrStdout(); shared flags from addKafkaFlags, addRegistryFlag and
// addOutputFlag in flags.go) and add it to the AddCommand list below (and a
// line to the package doc's usage). A command with subcommands
// (dlq list|show|...) is newGroupCmd(...) holding them.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "choreo",
		Short: "Event-driven services on Kafka: local stack, schemas and tools",
		Long: `choreo is the command line of the choreo toolkit: a local development stack
(an embedded Kafka broker and schema registry) and schema checks against a
registry.

Commands that reach Kafka read KAFKA_BROKERS and KAFKA_SASL_*, KAFKA_TLS*;
commands that reach a schema registry read SCHEMA_REGISTRY_URL (and
SCHEMA_REGISTRY_USERNAME, SCHEMA_REGISTRY_PASSWORD). Flags override them.
Exit status: 0 success, 1 failure, 2 usage error.`,
		Version:       version(),
		Args:          cobra.ArbitraryArgs,
		RunE:          needSubcommand,
		SilenceErrors: true, // execute prints the one line
		SilenceUsage:  true, // and the usage, for usage errors only
	}
	root.SetVersionTemplate("choreo version {{.Version}}\n")
	// The root and the groups run (to report a missing or unknown
	// subcommand), but their usage is "choreo schema [command]" only.
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(),
		"Usage:{{if .Runnable}}", "Usage:{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(
		newBenchCmd(),
		newCatalogCmd(),
		newDemoCmd(),
		newDevCmd(),
		newDLQCmd(),
		newFlowsCmd(),
		newSchemaCmd(),
		newTraceCmd(),
	)
	return root
}

// version returns the module version of the binary (or "(devel)" for a
// build outside a module version), the Go version and the platform.
func version() string {
	v := "(devel)"
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" {
		v = info.Main.Version
	}
	return fmt.Sprintf("%s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// newGroupCmd returns a command that only holds subcommands, such as
// `schema` for `schema check` and `schema register`. Run without a
// subcommand, or with an unknown one, it is a usage error.
func newGroupCmd(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE:  needSubcommand,
	}
	cmd.AddCommand(subs...)
	return cmd
}

// needSubcommand is the RunE of the root and of group commands: cobra gets
// here when no subcommand matched.
func needSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return unknownCommand(cmd, args[0])
	}
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() && !(c.Name() == "completion" && !cmd.HasParent()) {
			names = append(names, c.Name())
		}
	}
	what := "subcommand"
	if !cmd.HasParent() {
		what = "command"
	}
	return usageError{msg: fmt.Sprintf("want a %s: %s", what, orList(names)), showUsage: true}
}

// unknownCommand is the usage error for `choreo deb`: one line, with cobra's
// suggestions of close names.
func unknownCommand(cmd *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q", name)
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's default
	}
	if s := cmd.SuggestionsFor(name); len(s) > 0 && !cmd.DisableSuggestions {
		msg += fmt.Sprintf(", did you mean %s?", orList(s))
	}
	msg += fmt.Sprintf(" (see '%s --help')", cmd.CommandPath())
	return usageError{msg: msg}
}

// orList joins names as "a", "a or b", "a, b or c".
func orList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// flagError makes a flag parsing error (unknown flag, bad value) a usage
// error that prints the command's usage.
func flagError(cmd *cobra.Command, err error) error {
	if errors.Is(err, pflag.ErrHelp) {
		return err
	}
	msg := err.Error()
	// Go's flag package took -listen; pflag reads it as -l -i -s ...
	var ne *pflag.NotExistError
	if errors.As(err, &ne) {
		name, _, _ := strings.Cut(ne.GetSpecifiedShortnames(), "=")
		if len(name) > 1 && cmd.Flags().Lookup(name) != nil {
			msg += fmt.Sprintf(" (long flags take two dashes: --%s)", name)
		}
	}
	return usageError{msg: msg, showUsage: true}
}

// usageArgs wraps a cobra argument validator (cobra.NoArgs, ExactArgs, ...)
// so that its error is a usage error showing the usage. describe, if not
// nil, words the error for the arguments given instead of cobra's message.
func usageArgs(validate cobra.PositionalArgs, describe func(args []string) string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		err := validate(cmd, args)
		if err == nil {
			return nil
		}
		msg := err.Error()
		if describe != nil {
			msg = describe(args)
		}
		return usageError{msg: msg, showUsage: true}
	}
}
