package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/choreokit/choreo/schema"
)

func newSchemaCmd() *cobra.Command {
	return newGroupCmd("schema", "Check or register an Avro schema against a registry",
		newSchemaCheckCmd(), newSchemaRegisterCmd())
}

func newSchemaCheckCmd() *cobra.Command {
	var f *schemaFlags
	cmd := &cobra.Command{
		Use:   "check --subject SUBJECT FILE.avsc",
		Short: "Check that a schema is compatible with a subject's registered versions",
		Long: `Check that the Avro schema in FILE.avsc is compatible with the versions
registered under SUBJECT, without registering it. Exit status 1, with the
reasons on standard output, when it is not.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, reg, err := f.open(args)
			if err != nil {
				return err
			}
			if err := reg.CheckCompatible(cmd.Context(), f.subject, s); err != nil {
				return f.explain(cmd.OutOrStdout(), "is NOT compatible with subject", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%s) is compatible with subject %s\n", f.file, s.FullName(), f.subject)
			return nil
		},
	}
	f = addSchemaFlags(cmd)
	return cmd
}

func newSchemaRegisterCmd() *cobra.Command {
	var f *schemaFlags
	cmd := &cobra.Command{
		Use:   "register --subject SUBJECT FILE.avsc",
		Short: "Register a schema under a subject, if compatible",
		Long: `Register the Avro schema in FILE.avsc under SUBJECT and print its id. The
registry refuses a schema incompatible with the subject's versions: exit
status 1, with the reasons on standard output.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, reg, err := f.open(args)
			if err != nil {
				return err
			}
			id, err := reg.Register(cmd.Context(), f.subject, s)
			if err != nil {
				return f.explain(cmd.OutOrStdout(), "was NOT registered under", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "registered %s (%s) under %s with id %d\n", f.file, s.FullName(), f.subject, id)
			return nil
		},
	}
	f = addSchemaFlags(cmd)
	return cmd
}

// schemaFlags are the flags and the file both schema subcommands take.
type schemaFlags struct {
	subject  string
	registry *registryFlags
	file     string // the argument, set by open
}

// addSchemaFlags defines --subject and --registry on cmd and its FILE.avsc
// argument.
func addSchemaFlags(cmd *cobra.Command) *schemaFlags {
	f := &schemaFlags{}
	cmd.Flags().StringVar(&f.subject, "subject", "", "registry subject, such as orders-value (required)")
	f.registry = addRegistryFlag(cmd)
	cmd.Args = usageArgs(cobra.ExactArgs(1), func(args []string) string {
		return fmt.Sprintf("want exactly one schema file, got %d", len(args))
	})
	cmd.ValidArgsFunction = func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return []string{"avsc"}, cobra.ShellCompDirectiveFilterFileExt
	}
	return f
}

// open checks the flags, then reads and parses the schema file and returns
// it with the registry client.
func (f *schemaFlags) open(args []string) (*schema.Schema, *schema.Registry, error) {
	f.file = args[0]
	if f.subject == "" {
		return nil, nil, usagef("--subject is required")
	}
	if err := f.registry.check(); err != nil {
		return nil, nil, err
	}
	text, err := os.ReadFile(f.file)
	if err != nil {
		return nil, nil, fmt.Errorf("read schema: %w", err)
	}
	s, err := schema.Parse(string(text))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", f.file, err)
	}
	reg, err := f.registry.client()
	if err != nil {
		return nil, nil, err
	}
	return s, reg, nil
}

// explain prints the reasons of an incompatibility and returns the error
// for exit status 1; other errors pass through.
func (f *schemaFlags) explain(stdout io.Writer, what string, err error) error {
	var inc *schema.IncompatibleError
	if !errors.As(err, &inc) {
		return err
	}
	fmt.Fprintf(stdout, "%s %s %s:\n", f.file, what, f.subject)
	for _, r := range inc.Reasons {
		fmt.Fprintf(stdout, "  - %s\n", r)
	}
	return exitError{1, fmt.Errorf("%s: incompatible with %s", f.file, f.subject)}
}
