package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/choreokit/choreo/flows"
)

func newTraceCmd() *cobra.Command {
	var fl *flowsClientFlag
	var th *thresholdFlags
	var out *outputFlag
	var limit int
	cmd := &cobra.Command{
		Use:   "trace CORRELATION-ID|EVENT-ID|KEY",
		Short: "Show one business transaction's causal tree across the services",
		Long: `Ask a running 'choreo flows' for the flow that the argument names (its
correlation id, the id of one of its events, or the key of its events,
such as an order id) and print its causal tree: each event under the event
that caused it, with the service that published it, its topic, partition
and offset, its time since the flow's first event, which subscribed
consumer groups have consumed it and which not yet, and the retries and
dead letters where they happened. A key shared by several flows prints
each (at most --limit, the most recent first).`,
		Args: usageArgs(cobra.ExactArgs(1), func(args []string) string {
			return fmt.Sprintf("want one correlation id, event id or key, got %d arguments", len(args))
		}),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := th.thresholds(cmd)
			if err != nil {
				return err
			}
			ref := strings.TrimSpace(args[0])
			if ref == "" {
				return usagef("want a correlation id, event id or key, got an empty argument")
			}
			if limit < 1 {
				return usagef("--limit %d: want at least 1", limit)
			}
			cl, err := fl.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			matches, err := cl.Lookup(ctx, ref, limit)
			if err != nil {
				return flowsError(cl, err)
			}
			if len(matches) == 0 {
				what := ""
				if st, err := cl.Stats(ctx); err == nil {
					what = fmt.Sprintf(" (%d events in %d flows indexed; is it older than the retention, or on a topic --topics leaves out?)", st.Records, st.Flows)
				}
				return fmt.Errorf("no flow, event or key %q in the index at %s%s", ref, cl.URL(), what)
			}
			var fs []flows.Flow
			for _, m := range matches {
				f, err := cl.Flow(ctx, m.CorrelationID, t)
				if errors.Is(err, flows.ErrNotFound) {
					continue // pruned meanwhile
				}
				if err != nil {
					return flowsError(cl, err)
				}
				fs = append(fs, f)
			}
			w := cmd.OutOrStdout()
			if out.format != outputTable {
				return writeOutput(w, out, nil, fs, nil)
			}
			for i, f := range fs {
				if i > 0 {
					fmt.Fprintln(w)
				}
				writeTree(w, f)
			}
			return nil
		},
	}
	fl = addFlowsFlag(cmd)
	th = addThresholdFlags(cmd)
	out = addOutputFlag(cmd)
	cmd.Flags().IntVar(&limit, "limit", 5, "flows to show when a key names several")
	return cmd
}

// writeTree prints a flow: a header, then its causal tree.
func writeTree(w io.Writer, f flows.Flow) {
	key := ""
	if f.RootKey != "" {
		key = ", key " + f.RootKey
	}
	fmt.Fprintf(w, "Flow %s%s: %s\n", f.CorrelationID, key, statusText(f))
	fmt.Fprintf(w, "  started %s with %s, %d events across %d services in %s\n",
		f.Start.UTC().Format(time.RFC3339Nano), shortType(f.RootType), f.Events, len(f.Lanes), fmtDuration(f.Duration()))
	fmt.Fprintf(w, "  services: %s\n", strings.Join(f.Lanes, " → "))
	for _, r := range f.Reasons {
		fmt.Fprintf(w, "  ! %s: %s (look closer: %s)\n", r.Kind, r.Detail, r.Command)
	}
	fmt.Fprintln(w)
	byID := map[string]flows.Node{}
	var roots []string
	for _, n := range f.Nodes {
		byID[n.EventID] = n
		if n.Depth == 0 {
			roots = append(roots, n.EventID)
		}
	}
	var walk func(id, prefix string, last, root bool)
	walk = func(id, prefix string, last, root bool) {
		n := byID[id]
		branch, more := "├─ ", "│  "
		if last {
			branch, more = "└─ ", "   "
		}
		if root {
			branch, more = "", ""
		}
		where := fmt.Sprintf("%s[%d]@%d", n.Topic, n.Partition, n.Offset)
		seen := ""
		if !n.Seen {
			seen = " (only its retries or dead letters are indexed)"
		}
		fmt.Fprintf(w, "%s%s%s  by %s on %s  +%s%s\n", prefix, branch, shortType(n.Type), orDash(n.Source), where, fmtDuration(time.Duration(n.SinceStartMs*float64(time.Millisecond))), seen)
		inner := prefix + more
		bar := inner
		if len(n.Children) > 0 {
			bar += "│  "
		} else {
			bar += "   "
		}
		fmt.Fprintf(w, "%s  id %s%s\n", bar, n.EventID, copiesText(n.Copies))
		if len(n.Consumers) > 0 {
			var parts []string
			for _, c := range n.Consumers {
				parts = append(parts, c.Group+" "+consumerMark(c.Status))
			}
			fmt.Fprintf(w, "%s  consumers: %s\n", bar, strings.Join(parts, ", "))
		} else {
			fmt.Fprintf(w, "%s  consumers: none subscribed to %s\n", bar, n.Topic)
		}
		for _, fl := range n.Failures {
			at := "+" + fmtDuration(time.Duration(fl.SinceStartMs*float64(time.Millisecond)))
			msg := fl.ErrorKind
			if fl.ErrorMessage != "" {
				msg += ": " + fl.ErrorMessage
			}
			if fl.Kind == flows.KindDeadLetter {
				state := ""
				if fl.Consumed {
					state = " (redriven since)"
				}
				fmt.Fprintf(w, "%s  ✗ dead-lettered by %s at %s after %d attempts%s: %s → %s\n", bar, fl.Group, at, fl.Attempt, state, msg, fl.Command)
			} else {
				state := "waiting"
				if fl.Consumed {
					state = "retried"
				}
				fmt.Fprintf(w, "%s  ↻ %s failed it at %s (attempt %d, %s on %s): %s\n", bar, fl.Group, at, fl.Attempt, state, fl.Topic, msg)
			}
		}
		for i, c := range n.Children {
			walk(c, inner, i == len(n.Children)-1, false)
		}
	}
	for _, id := range roots {
		walk(id, "", true, true)
	}
}

func statusText(f flows.Flow) string {
	switch f.Status {
	case flows.StatusCompleted:
		return "completed (its last event is of a type no service reacts to)"
	case flows.StatusRunning:
		return "running"
	case flows.StatusDeadLetter:
		return "dead letter"
	case flows.StatusStuck:
		return "stuck (no news for over " + f.Criteria.AfterText + ", or an event not consumed within it)"
	}
	return string(f.Status)
}

func consumerMark(status string) string {
	switch status {
	case "consumed":
		return "✓"
	case "pending":
		return "… not yet"
	case "retrying":
		return "↻ retrying"
	case "dead_letter":
		return "✗ dead letter"
	case "redriven":
		return "✓ redriven"
	}
	return status
}

func copiesText(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (published %d more times with the same id)", n)
}

// fmtDuration writes d short: 0s, 850µs, 12.3ms, 1.25s, 3m20s.
func fmtDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}
