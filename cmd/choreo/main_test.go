package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
)

// TestCommandLine checks the command tree itself: version, help, completion,
// and what a malformed command line gets.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout []string // each must appear on stdout
		stderr []string // each must appear on stderr
		usage  bool     // for an error: the usage follows the message
	}{
		{name: "version", args: []string{"--version"}, code: 0,
			stdout: []string{"choreo version "}},
		{name: "help lists the commands", args: []string{"--help"}, code: 0,
			stdout: []string{"dev ", "schema ", "completion ", "--version"}},
		{name: "help command", args: []string{"help", "schema", "register"}, code: 0,
			stdout: []string{"choreo schema register --subject SUBJECT FILE.avsc", "--registry"}},
		{name: "schema check help", args: []string{"schema", "check", "--help"}, code: 0,
			stdout: []string{"Usage:\n  choreo schema check --subject SUBJECT FILE.avsc", "FILE.avsc", "--subject string", "--registry string"}},
		{name: "schema help", args: []string{"schema", "-h"}, code: 0,
			stdout: []string{"choreo schema [command]", "check ", "register "}},
		{name: "completion", args: []string{"completion", "bash"}, code: 0,
			stdout: []string{"bash completion", "choreo"}},
		{name: "completion of commands", args: []string{"__complete", "d"}, code: 0,
			stdout: []string{"dev"}, stderr: []string{"ShellCompDirectiveNoFileComp"}},
		{name: "completion of a schema file", args: []string{"__complete", "schema", "check", ""}, code: 0,
			stdout: []string{"avsc"}, stderr: []string{"ShellCompDirectiveFilterFileExt"}},
		{name: "no command", args: nil, code: 2,
			stderr: []string{"choreo: want a command: bench, catalog, demo, dev, dlq, flows, schema or trace", "Available Commands:"}, usage: true},
		{name: "unknown command near dev", args: []string{"deb"}, code: 2,
			stderr: []string{`choreo: unknown command "deb", did you mean demo, dev or dlq?`}},
		{name: "unknown command far from all", args: []string{"frobnicate"}, code: 2,
			stderr: []string{`choreo: unknown command "frobnicate" (see 'choreo --help')`}},
		{name: "unknown subcommand near check", args: []string{"schema", "chek"}, code: 2,
			stderr: []string{`choreo schema: unknown command "chek", did you mean check?`}},
		{name: "unknown flag of dev", args: []string{"dev", "--bogus"}, code: 2,
			stderr: []string{"choreo dev: unknown flag: --bogus", "choreo dev [flags]", "--listen string", "--registry-listen string", "--data-dir string", "--partitions int"}, usage: true},
		{name: "bad flag value", args: []string{"dev", "--partitions", "many"}, code: 2,
			stderr: []string{`choreo dev: invalid argument "many" for "--partitions" flag`, "--partitions int"}, usage: true},
		{name: "single-dash long flag", args: []string{"dev", "-listen", ":0"}, code: 2,
			stderr: []string{"long flags take two dashes: --listen"}, usage: true},
		{name: "unknown root flag", args: []string{"--bogus"}, code: 2,
			stderr: []string{"choreo: unknown flag: --bogus", "Available Commands:"}, usage: true},
		{name: "missing schema file", args: []string{"schema", "register", "--subject", "s"}, code: 2,
			stderr: []string{"choreo schema register: want exactly one schema file, got 0", "--subject string"}, usage: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("status %d; want %d (stdout %q, stderr %q)", code, tc.code, stdout.String(), stderr.String())
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout %q; want it to contain %q", stdout.String(), want)
				}
			}
			for _, want := range tc.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr %q; want it to contain %q", stderr.String(), want)
				}
			}
			if tc.code == 0 {
				if len(tc.stderr) == 0 && stderr.Len() != 0 {
					t.Errorf("stderr %q; want nothing", stderr.String())
				}
				return
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q; want nothing on an error", stdout.String())
			}
			checkErrorOutput(t, stderr.String(), "choreo", tc.stderr[0], tc.usage)
		})
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--version"}, &stdout, &stderr); code != 0 {
		t.Fatalf("status %d; want 0 (stderr %q)", code, stderr.String())
	}
	// In a test binary the main module has no version: "(devel)".
	want := regexp.MustCompile(`^choreo version (\(devel\)|v\S+) go\S+ \S+/\S+\n$`)
	if !want.MatchString(stdout.String()) {
		t.Errorf("--version printed %q; want it to match %s", stdout.String(), want)
	}
}
