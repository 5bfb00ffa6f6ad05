package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/choreokit/choreo/schema"
)

// Environment variables of the schema commands.
const (
	envRegistryURL      = "SCHEMA_REGISTRY_URL"
	envRegistryUser     = "SCHEMA_REGISTRY_USERNAME"
	envRegistryPassword = "SCHEMA_REGISTRY_PASSWORD"
)

func runSchema(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("want a subcommand: check or register")
	}
	switch args[0] {
	case "check":
		return runSchemaCheck(ctx, args[1:], stdout, stderr)
	case "register":
		return runSchemaRegister(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stderr, "usage: choreo schema check|register --subject S [--registry URL] FILE.avsc")
		return nil
	}
	return usagef("unknown subcommand %q: want check or register", args[0])
}

// schemaArgs are the flags and the file both schema subcommands take.
type schemaArgs struct {
	subject  string
	registry string
	file     string
}

func parseSchemaArgs(name string, args []string, stderr io.Writer) (schemaArgs, error) {
	fs := newFlagSet("schema "+name, stderr)
	var a schemaArgs
	fs.StringVar(&a.subject, "subject", "", "registry subject, such as orders-value (required)")
	fs.StringVar(&a.registry, "registry", os.Getenv(envRegistryURL), "schema registry URL (default $"+envRegistryURL+")")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return a, err
	}
	switch {
	case a.subject == "":
		return a, usagef("--subject is required")
	case len(rest) != 1:
		return a, usagef("want exactly one schema file, got %d", len(rest))
	case a.registry == "":
		return a, usagef("no schema registry: set %s or --registry (choreo dev serves http://127.0.0.1:8081)", envRegistryURL)
	}
	a.file = rest[0]
	return a, nil
}

func (a schemaArgs) open() (*schema.Registry, *schema.Schema, error) {
	text, err := os.ReadFile(a.file)
	if err != nil {
		return nil, nil, fmt.Errorf("read schema: %w", err)
	}
	s, err := schema.Parse(string(text))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", a.file, err)
	}
	var opts []schema.RegistryOption
	if u := os.Getenv(envRegistryUser); u != "" {
		opts = append(opts, schema.BasicAuth(u, os.Getenv(envRegistryPassword)))
	}
	reg, err := schema.NewRegistry(strings.Split(a.registry, ","), opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("registry %s: %w", a.registry, err)
	}
	return reg, s, nil
}

func runSchemaCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a, err := parseSchemaArgs("check", args, stderr)
	if err != nil {
		return err
	}
	reg, s, err := a.open()
	if err != nil {
		return err
	}
	if err := reg.CheckCompatible(ctx, a.subject, s); err != nil {
		return a.explain(stdout, "is NOT compatible with subject", err)
	}
	fmt.Fprintf(stdout, "%s (%s) is compatible with subject %s\n", a.file, s.FullName(), a.subject)
	return nil
}

func runSchemaRegister(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a, err := parseSchemaArgs("register", args, stderr)
	if err != nil {
		return err
	}
	reg, s, err := a.open()
	if err != nil {
		return err
	}
	id, err := reg.Register(ctx, a.subject, s)
	if err != nil {
		return a.explain(stdout, "was NOT registered under", err)
	}
	fmt.Fprintf(stdout, "registered %s (%s) under %s with id %d\n", a.file, s.FullName(), a.subject, id)
	return nil
}

// explain prints the reasons of an incompatibility and returns the error
// for exit status 1; other errors pass through.
func (a schemaArgs) explain(stdout io.Writer, what string, err error) error {
	var inc *schema.IncompatibleError
	if !errors.As(err, &inc) {
		return err
	}
	fmt.Fprintf(stdout, "%s %s %s:\n", a.file, what, a.subject)
	for _, r := range inc.Reasons {
		fmt.Fprintf(stdout, "  - %s\n", r)
	}
	return exitError{1, fmt.Errorf("%s: incompatible with %s", a.file, a.subject)}
}
