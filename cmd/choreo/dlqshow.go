package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/dlq"
)

func newDLQShowCmd() *cobra.Command {
	var (
		f   *dlqFlags
		out *outputFlag
	)
	cmd := &cobra.Command{
		Use:   "show SERVICE PARTITION:OFFSET",
		Short: "Show one dead letter whole",
		Long: `Show the dead letter at PARTITION:OFFSET (the first column of choreo dlq
list) of SERVICE's dead-letter topic (or --topic, then SERVICE may be left
out): the original record's coordinates, key and headers, its value decoded
to JSON through the schema registry when its schema resolves (as text or
base64 otherwise), the error, the attempts and failure times, and every
redrive of it.

With --output json the envelope is printed as the library's dlq.View, with
the dead letter's place, its own headers and its redrives. Without a
registry only the readable headers are shown.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageError{msg: fmt.Sprintf("want SERVICE PARTITION:OFFSET, got %d arguments", len(args)), showUsage: true}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			service, at := "", args[len(args)-1]
			if len(args) == 2 {
				service = args[0]
			}
			t, err := f.target(service)
			if err != nil {
				return err
			}
			p, o, err := parseCoords(at)
			if err != nil {
				return err
			}
			return runDLQShow(cmd.Context(), f, t, coord{p, o}, out.format, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f = addDLQFlags(cmd)
	out = addOutputFlag(cmd)
	return cmd
}

// showView is show's JSON.
type showView struct {
	DeadLetter showPlace        `json:"dead_letter"`
	Envelope   *dlq.View        `json:"envelope"` // null when it was not decoded
	Summary    *listItem        `json:"summary"`  // what the list shows (from the envelope or the headers)
	Headers    []dlq.HeaderView `json:"headers"`  // the dead-letter record's own headers
	Redrives   []redriveRecord  `json:"redrives"` // oldest first
	Note       string           `json:"note,omitempty"`
}

// showPlace is where the dead letter is.
type showPlace struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Time      string `json:"time"`
}

// runDLQShow is `choreo dlq show`.
func runDLQShow(ctx context.Context, f *dlqFlags, t target, at coord, format string, stdout, stderr io.Writer) error {
	env, err := f.open(ctx, t, false)
	if err != nil {
		return err
	}
	defer env.close()
	warn := warner("choreo dlq show", stderr)
	known := false
	for _, p := range env.parts {
		known = known || p == at.part
	}
	if !known {
		return fmt.Errorf("no dead letter at %s: %s has partitions 0 to %d", at, env.topic, len(env.parts)-1)
	}
	start, end, err := env.offsets(ctx, env.topic, time.Time{})
	if err != nil {
		return err
	}
	first, last := start[at.part], end[at.part]-1
	switch {
	case first > last:
		return fmt.Errorf("no dead letter at %s: partition %d of %s is empty", at, at.part, env.topic)
	case at.off < first || at.off > last:
		return fmt.Errorf("no dead letter at %s: partition %d of %s holds offsets %d to %d", at, at.part, env.topic, first, last)
	}
	var rec *kgo.Record
	err = readPartitions(ctx, env.opts, env.topic, map[int32]int64{at.part: at.off}, map[int32]int64{at.part: at.off + 1}, false,
		func() bool { return true }, func(r *kgo.Record) bool { rec = r; return false }, warn)
	if err != nil {
		return err
	}
	if rec == nil || rec.Offset != at.off {
		return fmt.Errorf("no dead letter at %s: nothing readable there (a transaction marker or an aborted record)", at)
	}
	_, history, err := env.loadRedrives(ctx, &at, warn)
	if err != nil {
		return err
	}
	sc := newScanner(env, scanConfig{keepEnvelope: true, warn: warn})
	e, err := sc.entryOf(ctx, rec)
	if err != nil {
		return err
	}
	if len(history) > 0 {
		last := history[len(history)-1]
		e.redriven = &redriveState{count: last.Count, at: last.At, to: last.To, by: last.By}
	}
	v := showView{
		DeadLetter: showPlace{Topic: env.topic, Partition: rec.Partition, Offset: rec.Offset, Time: timeUTC(rec.Timestamp)},
		Redrives:   history,
	}
	if v.Redrives == nil {
		v.Redrives = []redriveRecord{}
	}
	for _, h := range rec.Headers {
		v.Headers = append(v.Headers, dlq.HeaderView{Key: h.Key, Value: dlq.Bytes(h.Value)})
	}
	it := e.item()
	v.Summary = &it
	switch {
	case e.dl != nil:
		view := e.dl.View(ctx, env.codec)
		v.Envelope = &view
	case e.invalid != "":
		v.Note = "not a dead letter: " + e.invalid
	case env.codec == nil:
		v.Note = "no schema registry (--registry, SCHEMA_REGISTRY_URL): only the readable headers are shown"
	default:
		v.Note = fmt.Sprintf("the schema registry did not answer (%v): only the readable headers are shown", sc.stats.registryErr)
	}
	if format != outputTable {
		enc := json.NewEncoder(stdout)
		if format == outputJSON {
			enc.SetIndent("", "  ")
		}
		if err := enc.Encode(v); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return nil
	}
	if err := writeShow(stdout, v, e); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// writeShow writes a dead letter for a person.
func writeShow(w io.Writer, v showView, e *entry) error {
	var b strings.Builder
	line := func(label, format string, args ...any) {
		text := fmt.Sprintf(format, args...)
		text = strings.ReplaceAll(strings.TrimRight(text, "\n"), "\n", "\n"+strings.Repeat(" ", 15))
		fmt.Fprintf(&b, "%-15s%s\n", label, text)
	}
	d := v.DeadLetter
	line("DEAD LETTER", "%s %d:%d, written %s", d.Topic, d.Partition, d.Offset, d.Time)
	if v.Note != "" {
		line("NOTE", "%s", v.Note)
	}
	s := v.Summary
	if s.Kind == "invalid" {
		line("KEY", "%s", orDash(keyText(e.key)))
	} else {
		if env := v.Envelope; env != nil {
			line("SERVICE", "%s (group %s)", env.Service, env.Group)
			line("ORIGINAL", "%s/%d/%d, %s", env.Original.Topic, env.Original.Partition, env.Original.Offset, env.Original.Timestamp)
		} else {
			line("ORIGINAL", "%s/%d/%d", s.Original.Topic, s.Original.Partition, s.Original.Offset)
		}
		line("KEY", "%s", orDash(keyText(e.key)))
		line("EVENT TYPE", "%s", orDash(s.EventType))
		line("EVENT ID", "%s", orDash(s.EventID))
		line("CORRELATION", "%s", orDash(s.CorrelationID))
		if env := v.Envelope; env != nil {
			kind := string(env.Error.Kind)
			if !env.Error.KnownKind {
				kind += " (a kind this version does not know)"
			}
			line("ERROR", "%s, %s\n%s", kind, env.Error.Type, env.Error.Message)
			line("ATTEMPTS", "%d, first failure %s, last failure %s", env.Attempts, env.FirstFailure, env.LastFailure)
		} else {
			line("ERROR", "%s\n%s", s.Kind, s.Error)
			line("ATTEMPTS", "%d", s.Attempts)
		}
		if s.RedriveCount > 0 {
			line("REDRIVE COUNT", "%d: the original failed again after a redrive from %s", s.RedriveCount, orDash(s.ReplayedFrom))
		}
	}
	if len(v.Redrives) == 0 {
		line("REDRIVES", "none")
	} else {
		var rs []string
		for _, r := range v.Redrives {
			rs = append(rs, fmt.Sprintf("%s to %s by %s (redrive count %d)", timeUTC(r.At), r.To, r.By, r.RedriveCount))
		}
		line("REDRIVES", "%s", strings.Join(rs, "\n"))
	}
	if env := v.Envelope; env != nil {
		o := env.Original
		fmt.Fprintf(&b, "\nORIGINAL HEADERS")
		if o.HeadersTruncated {
			b.WriteString(" (cut to fit the dead-letter topic)")
		}
		b.WriteByte('\n')
		for _, h := range o.Headers {
			fmt.Fprintf(&b, "  %s: %s\n", h.Key, bytesText(h.Value))
		}
		b.WriteString("\nORIGINAL VALUE")
		switch {
		case o.Value == nil:
			b.WriteString(": none (a tombstone)\n")
		case o.ValueError != "":
			fmt.Fprintf(&b, " (not decoded: %s)\n%s\n", o.ValueError, bytesText(o.Value.(dlq.Bytes)))
		default:
			fmt.Fprintf(&b, " (%s)\n", o.ValueSchema)
			js, err := json.MarshalIndent(o.Value, "", "  ")
			if err != nil {
				return err
			}
			b.Write(js)
			b.WriteByte('\n')
		}
		if o.ValueTruncated {
			b.WriteString("the value was cut to fit the dead-letter topic: this dead letter cannot be redriven\n")
		}
	} else {
		b.WriteString("\nHEADERS\n")
		if len(v.Headers) == 0 {
			b.WriteString("  none\n")
		}
		for _, h := range v.Headers {
			fmt.Fprintf(&b, "  %s: %s\n", h.Key, bytesText(h.Value))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// bytesText shows bytes as text when they are, else as base64 (what JSON
// shows).
func bytesText(v dlq.Bytes) string {
	js, err := v.MarshalJSON()
	if err != nil {
		return fmt.Sprintf("%x", []byte(v))
	}
	var s string
	if json.Unmarshal(js, &s) == nil {
		return s
	}
	return string(js)
}
