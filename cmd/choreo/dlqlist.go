package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/choreokit/choreo/dlq"
)

func newDLQListCmd() *cobra.Command {
	var (
		f      *dlqFlags
		ff     *filterFlags
		out    *outputFlag
		limit  int
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "list SERVICE",
		Short: "List a service's dead letters, one row each",
		Long: `List the dead letters of SERVICE (the consumer group; its topic is
SERVICE.dlq, or --topic): where each is, when it was written, the original
record's topic/partition/offset and key, the event type, the error kind and
message (cut to the terminal's width), the attempts, the correlation id,
and how many times it was redriven (choreo dlq redrive).

The topic is read without joining a consumer group: nothing is committed.
Reading stops at the end offsets taken at start, or goes on with --follow
until interrupted. Duplicates of one dead letter (the same original, and
redrive count) are shown once, with their count (DUPS). Records that are
not dead letters are listed with the kind "invalid" and the reason.

Without a schema registry (or with one that does not answer) the list is
made from the dead letters' readable headers: the same columns, the error
message cut at 1 KiB.

A filter that matches nothing prints nothing (JSON: []) and a note on
standard error; the exit status is 0.`,
		Args: serviceArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := f.target(firstArg(args))
			if err != nil {
				return err
			}
			filt, err := ff.parse(cmd)
			if err != nil {
				return err
			}
			if limit < 0 {
				return usagef("--limit %d: want 0 (no limit) or more", limit)
			}
			return runDLQList(cmd.Context(), f, t, filt, out.format, limit, follow, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f = addDLQFlags(cmd)
	ff = addFilterFlags(cmd)
	out = addOutputFlag(cmd)
	cmd.Flags().IntVar(&limit, "limit", 0, "show at most this many dead letters (0: all)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep reading new dead letters until interrupted")
	return cmd
}

// firstArg returns args[0], or "".
func firstArg(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

// warner returns a function that writes a warning line to stderr, each
// text once.
func warner(cmdPath string, stderr io.Writer) func(string) {
	said := map[string]bool{}
	return func(msg string) {
		if said[msg] {
			return
		}
		said[msg] = true
		fmt.Fprintf(stderr, "%s: warning: %s\n", cmdPath, msg)
	}
}

// runDLQList is `choreo dlq list`.
func runDLQList(ctx context.Context, f *dlqFlags, t target, filt *filter, format string, limit int, follow bool, stdout, stderr io.Writer) error {
	env, err := f.open(ctx, t, false)
	if err != nil {
		return err
	}
	defer env.close()
	warn := warner("choreo dlq list", stderr)
	redrives, _, err := env.loadRedrives(ctx, nil, warn)
	if err != nil {
		return err
	}
	sc := newScanner(env, scanConfig{filter: filt, follow: follow, redrives: redrives, warn: warn})
	lw := newListWriter(stdout, format, termWidth(stdout))
	var writeErr error
	err = sc.run(ctx, func(e *entry) bool {
		if writeErr = lw.add(e); writeErr != nil {
			return false
		}
		return limit <= 0 || lw.n < limit
	})
	if cerr := lw.close(); writeErr == nil {
		writeErr = cerr
	}
	if writeErr != nil {
		return fmt.Errorf("write: %w", writeErr)
	}
	if err != nil {
		if follow && errors.Is(err, context.Canceled) {
			return nil // --follow ends with Ctrl-C
		}
		return err
	}
	noteScan(stderr, "choreo dlq list", env.topic, sc.stats, filt)
	return nil
}

// noteScan writes the notes that go with a scan's result on stderr: no
// match, duplicates left out.
func noteScan(stderr io.Writer, cmdPath, topic string, st scanStats, filt *filter) {
	switch {
	case st.read == 0 && !filt.any():
		fmt.Fprintf(stderr, "%s: no dead letters in %s\n", cmdPath, topic)
	case st.matched == 0:
		fmt.Fprintf(stderr, "%s: none of the %d records read from %s matches the filters\n", cmdPath, st.read, topic)
	}
	if st.lateDuplicates > 0 {
		fmt.Fprintf(stderr, "%s: %d later duplicates of dead letters shown above were left out (their DUPS count does not include them)\n", cmdPath, st.lateDuplicates)
	}
}

// termWidth is the width to cut table rows to: the terminal's, else
// $COLUMNS, else 0 (no cut).
func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
			return cols
		}
	}
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 0 {
		return n
	}
	return 0
}

// listItem is a dead letter as list prints it in JSON.
type listItem struct {
	Partition     int32         `json:"partition"`
	Offset        int64         `json:"offset"`
	Time          string        `json:"time"`
	Kind          string        `json:"kind"` // the error kind, or "invalid"
	Error         string        `json:"error"`
	Original      *originalRef  `json:"original"`
	Key           dlq.Bytes     `json:"key"`
	EventType     string        `json:"event_type,omitempty"`
	EventID       string        `json:"event_id,omitempty"`
	CorrelationID string        `json:"correlation_id,omitempty"`
	Attempts      int           `json:"attempts"`
	Duplicates    int           `json:"duplicates"`              // further dead letters of the same failure, not listed
	RedriveCount  int           `json:"redrive_count"`           // redrives of the original before this failure
	ReplayedFrom  string        `json:"replayed_from,omitempty"` // the dead letter the failed record was redriven from
	Redriven      *redrivenView `json:"redriven"`                // redrives of this dead letter, from the redrive log
	From          string        `json:"from,omitempty"`          // "envelope" or "headers"; none for an invalid record
}

// originalRef names the original record.
type originalRef struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// item returns e for JSON.
func (e *entry) item() listItem {
	it := listItem{Partition: e.part, Offset: e.off, Time: timeUTC(e.time), Key: dlq.Bytes(e.key), Redriven: e.redriven.view()}
	if e.invalid != "" {
		it.Kind, it.Error = "invalid", e.invalid
		return it
	}
	s := e.sum
	it.Kind, it.Error = string(s.Kind), s.Message
	it.Original = &originalRef{s.OriginalTopic, s.OriginalPartition, s.OriginalOffset}
	it.EventType, it.EventID, it.CorrelationID = s.EventType, s.EventID, s.CorrelationID
	it.Attempts, it.Duplicates, it.RedriveCount, it.ReplayedFrom = s.Attempts, e.dups, s.RedriveCount, s.ReplayedFrom
	it.From = "envelope"
	if e.fromHeaders {
		it.From = "headers"
	}
	return it
}

// The table's columns: the widest each may be (0: as wide as its widest
// cell), the narrowest it may be made to leave the error message
// minError (0: never narrowed), and whether a cut keeps its end (ids and
// coordinates differ at the end) rather than its start. The last column,
// the error message, takes what is left of the terminal.
var listColumns = []listColumn{
	{name: "DEAD LETTER"}, {name: "TIME"}, {name: "ORIGINAL", max: 48, keepEnd: true},
	{name: "KEY", max: 24, min: 8, shrinkRank: 2}, {name: "TYPE", max: 32}, {name: "KIND"},
	{name: "ATTEMPTS"}, {name: "DUPS"}, {name: "REDRIVEN"}, {name: "CORRELATION", max: 36, min: 13, keepEnd: true, shrinkRank: 1},
	{name: "ERROR"},
}

// listColumn is a column of the table.
type listColumn struct {
	name       string
	max, min   int
	keepEnd    bool
	shrinkRank int // order in which columns are narrowed, 1 first; 0: never
}

// minError is the error message's width the other columns are narrowed
// for, on a narrow terminal.
const minError = 40

// row returns e's table cells.
func (e *entry) row() []string {
	coords := strconv.FormatInt(int64(e.part), 10) + ":" + strconv.FormatInt(e.off, 10)
	tm := e.time.UTC().Format(time.RFC3339)
	if e.invalid != "" {
		return []string{coords, tm, "-", cell(keyText(e.key)), "-", "invalid", "-", "-", e.redriven.describe(), "-", oneLine(e.invalid)}
	}
	s := e.sum
	typ := s.EventType
	if i := strings.LastIndexByte(typ, '.'); i >= 0 {
		typ = typ[i+1:]
	}
	dups := "-"
	if e.dups > 0 {
		dups = strconv.Itoa(e.dups)
	}
	// The kind has a column: "permanent: card declined" says it twice.
	msg, _ := strings.CutPrefix(oneLine(s.Message), string(s.Kind)+": ")
	return []string{coords, tm, fmt.Sprintf("%s/%d/%d", s.OriginalTopic, s.OriginalPartition, s.OriginalOffset),
		cell(keyText(e.key)), cell(typ), cell(string(s.Kind)), strconv.Itoa(s.Attempts), dups, e.redriven.describe(),
		cell(s.CorrelationID), msg}
}

// cell returns s, or "-" for an empty s.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return oneLine(s)
}

// keyText shows a key: as text when it is, in hex (0x…) otherwise; "-"
// for no key.
func keyText(k []byte) string {
	switch {
	case k == nil:
		return ""
	case utf8.Valid(k) && !strings.ContainsFunc(string(k), func(r rune) bool { return r < ' ' || r == 0x7f }):
		return string(k)
	}
	return "0x" + hex.EncodeToString(k)
}

// listWriter writes entries as a table (streamed: the column widths are
// those of the first rows), a JSON array (streamed) or JSON lines.
type listWriter struct {
	w      io.Writer
	format string
	width  int // terminal width, 0: unknown
	n      int // entries written

	rows   [][]string // the first rows, until the widths are fixed
	widths []int
}

// tableSample is how many rows fix the table's column widths.
const tableSample = 256

func newListWriter(w io.Writer, format string, width int) *listWriter {
	return &listWriter{w: w, format: format, width: width}
}

// add writes one entry.
func (lw *listWriter) add(e *entry) error {
	lw.n++
	switch lw.format {
	case outputJSON:
		b, err := json.MarshalIndent(e.item(), "  ", "  ")
		if err != nil {
			return err
		}
		sep := ",\n  "
		if lw.n == 1 {
			sep = "[\n  "
		}
		_, err = fmt.Fprintf(lw.w, "%s%s", sep, b)
		return err
	case outputJSONL:
		b, err := json.Marshal(e.item())
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(lw.w, "%s\n", b)
		return err
	}
	if lw.widths == nil {
		lw.rows = append(lw.rows, e.row())
		if len(lw.rows) < tableSample {
			return nil
		}
		return lw.fix()
	}
	return lw.writeRow(e.row())
}

// fix sets the column widths from the rows held and writes them.
func (lw *listWriter) fix() error {
	lw.widths = make([]int, len(listColumns))
	for i, c := range listColumns {
		lw.widths[i] = len(c.name)
	}
	for _, r := range lw.rows {
		for i, c := range r {
			lw.widths[i] = max(lw.widths[i], utf8.RuneCountInString(c))
		}
	}
	for i, c := range listColumns {
		if c.max > 0 {
			lw.widths[i] = min(lw.widths[i], max(c.max, len(c.name)))
		}
	}
	last := len(listColumns) - 1
	if lw.width > 0 {
		used := func() int {
			n := 0
			for _, w := range lw.widths[:last] {
				n += w + 2
			}
			return n
		}
		// Narrow the columns that may be, in order, until the error
		// message has its room (or they are all at their narrowest).
		for rank := 1; lw.width-used() < minError; rank++ {
			i := slices.IndexFunc(listColumns, func(c listColumn) bool { return c.shrinkRank == rank })
			if i < 0 {
				break
			}
			if lw.widths[i] > listColumns[i].min {
				lw.widths[i] = max(listColumns[i].min, lw.widths[i]-(minError-(lw.width-used())))
			}
		}
		lw.widths[last] = max(lw.width-used(), 20)
	} else {
		lw.widths[last] = 0 // no cut
	}
	head := make([]string, len(listColumns))
	for i, c := range listColumns {
		head[i] = c.name
	}
	if err := lw.writeRow(head); err != nil {
		return err
	}
	for _, r := range lw.rows {
		if err := lw.writeRow(r); err != nil {
			return err
		}
	}
	lw.rows = nil
	return nil
}

// writeRow writes cells padded to the widths, each cut to its width.
func (lw *listWriter) writeRow(cells []string) error {
	var b strings.Builder
	last := len(cells) - 1
	for i, c := range cells {
		w := lw.widths[i]
		if i == last {
			if w > 0 {
				c = cutText(c, w)
			}
			b.WriteString(c)
			break
		}
		if listColumns[i].keepEnd {
			c = cutStart(c, w)
		} else {
			c = cutText(c, w)
		}
		b.WriteString(c)
		b.WriteString(strings.Repeat(" ", w-utf8.RuneCountInString(c)+2))
	}
	b.WriteByte('\n')
	_, err := io.WriteString(lw.w, b.String())
	return err
}

// cutText cuts s to at most n runes, ending with … when cut.
func cutText(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n <= 1 {
		return "…"
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// cutStart cuts s to at most n runes keeping its end, starting with …
// when cut.
func cutStart(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n <= 1 {
		return "…"
	}
	r := []rune(s)
	return "…" + string(r[len(r)-(n-1):])
}

// close ends the output.
func (lw *listWriter) close() error {
	switch lw.format {
	case outputJSON:
		if lw.n == 0 {
			_, err := io.WriteString(lw.w, "[]\n")
			return err
		}
		_, err := io.WriteString(lw.w, "\n]\n")
		return err
	case outputJSONL:
		return nil
	}
	if lw.widths == nil && len(lw.rows) > 0 {
		return lw.fix()
	}
	return nil
}

func newDLQStatsCmd() *cobra.Command {
	var (
		f   *dlqFlags
		ff  *filterFlags
		out *outputFlag
		by  string
	)
	cmd := &cobra.Command{
		Use:   "stats SERVICE",
		Short: "Count a service's dead letters by error kind, event type and topic",
		Long: `Count the dead letters of SERVICE (or --topic) by error kind, event type
and original topic, with the oldest and the newest; --by hour or day adds a
histogram of when they were written. Duplicates are counted once (and
reported), records that are not dead letters as invalid. The filters of
choreo dlq list apply. Read without joining a consumer group.`,
		Args: serviceArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := f.target(firstArg(args))
			if err != nil {
				return err
			}
			filt, err := ff.parse(cmd)
			if err != nil {
				return err
			}
			var bucket time.Duration
			switch by {
			case "":
			case "hour":
				bucket = time.Hour
			case "day":
				bucket = 24 * time.Hour
			default:
				return usagef("--by %q: want hour or day", by)
			}
			return runDLQStats(cmd.Context(), f, t, filt, out.format, by, bucket, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f = addDLQFlags(cmd)
	ff = addFilterFlags(cmd)
	out = addOutputFlag(cmd)
	cmd.Flags().StringVar(&by, "by", "", "add a histogram of the dead letters by hour or day")
	_ = cmd.RegisterFlagCompletionFunc("by", cobra.FixedCompletions([]string{"hour", "day"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// statsView is stats in JSON.
type statsView struct {
	Topic       string     `json:"topic"`
	DeadLetters int64      `json:"dead_letters"` // distinct failures counted
	Duplicates  int64      `json:"duplicates"`   // further dead letters of the same failures, not counted
	Invalid     int64      `json:"invalid"`      // records that are not dead letters
	Redriven    int64      `json:"redriven"`     // dead letters redriven at least once
	Oldest      *statsEnd  `json:"oldest"`
	Newest      *statsEnd  `json:"newest"`
	ByKind      []countOf  `json:"by_kind"`
	ByType      []countOf  `json:"by_type"`
	ByTopic     []countOf  `json:"by_topic"`
	Histogram   *histogram `json:"histogram,omitempty"`
	From        string     `json:"from"` // "envelope" or "headers"
}

// statsEnd is the oldest or newest dead letter.
type statsEnd struct {
	Time      string `json:"time"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// countOf is one row of a count.
type countOf struct {
	Name  string `json:"name"`
	Count int64  `json:"count"`
}

// histogram counts dead letters per bucket.
type histogram struct {
	By      string   `json:"by"`
	Buckets []bucket `json:"buckets"`
}

// bucket is one bucket of a histogram.
type bucket struct {
	Start string `json:"start"`
	Count int64  `json:"count"`
}

// runDLQStats is `choreo dlq stats`.
func runDLQStats(ctx context.Context, f *dlqFlags, t target, filt *filter, format, by string, bucketSize time.Duration, stdout, stderr io.Writer) error {
	env, err := f.open(ctx, t, false)
	if err != nil {
		return err
	}
	defer env.close()
	warn := warner("choreo dlq stats", stderr)
	redrives, _, err := env.loadRedrives(ctx, nil, warn)
	if err != nil {
		return err
	}
	sc := newScanner(env, scanConfig{filter: filt, redrives: redrives, warn: warn})
	v := statsView{Topic: env.topic, From: "envelope"}
	kinds, types, topics := map[string]int64{}, map[string]int64{}, map[string]int64{}
	buckets := map[int64]int64{}
	var oldest, newest *entry
	headers := false
	err = sc.run(ctx, func(e *entry) bool {
		if e.invalid != "" {
			v.Invalid++
			return true
		}
		v.DeadLetters++
		headers = headers || e.fromHeaders
		if e.redriven != nil {
			v.Redriven++
		}
		kinds[string(e.sum.Kind)]++
		types[orDash(e.sum.EventType)]++
		topics[e.sum.OriginalTopic]++
		if oldest == nil || e.time.Before(oldest.time) {
			oldest = &entry{part: e.part, off: e.off, time: e.time}
		}
		if newest == nil || !e.time.Before(newest.time) {
			newest = &entry{part: e.part, off: e.off, time: e.time}
		}
		if bucketSize > 0 {
			buckets[e.time.UTC().Truncate(bucketSize).Unix()]++
		}
		return true
	})
	if err != nil {
		return err
	}
	v.Duplicates = sc.stats.duplicates + sc.stats.lateDuplicates
	if headers {
		v.From = "headers"
	}
	end := func(e *entry) *statsEnd {
		if e == nil {
			return nil
		}
		return &statsEnd{Time: timeUTC(e.time), Partition: e.part, Offset: e.off}
	}
	v.Oldest, v.Newest = end(oldest), end(newest)
	v.ByKind, v.ByType, v.ByTopic = sortedCounts(kinds), sortedCounts(types), sortedCounts(topics)
	if bucketSize > 0 {
		v.Histogram = &histogram{By: by, Buckets: []bucket{}}
		if oldest != nil {
			// Every bucket from the oldest to the newest, empty ones too.
			for at := oldest.time.UTC().Truncate(bucketSize); !at.After(newest.time); at = at.Add(bucketSize) {
				v.Histogram.Buckets = append(v.Histogram.Buckets, bucket{Start: timeUTC(at), Count: buckets[at.Unix()]})
				if len(v.Histogram.Buckets) > 10000 {
					break
				}
			}
		}
	}
	if err := writeStats(stdout, format, v); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	noteScan(stderr, "choreo dlq stats", env.topic, sc.stats, filt)
	return nil
}

// plural returns "1 thing" or "n things".
func plural(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.FormatInt(n, 10) + " " + many
}

// orDash returns s, or "-" for "".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// sortedCounts returns m by count, largest first, then by name.
func sortedCounts(m map[string]int64) []countOf {
	out := make([]countOf, 0, len(m))
	for k, n := range m {
		out = append(out, countOf{k, n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// writeStats writes v as text or JSON.
func writeStats(w io.Writer, format string, v statsView) error {
	if format != outputTable {
		enc := json.NewEncoder(w)
		if format == outputJSON {
			enc.SetIndent("", "  ")
		}
		return enc.Encode(v)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-14s%s\n", "TOPIC", v.Topic)
	fmt.Fprintf(&b, "%-14s%d", "DEAD LETTERS", v.DeadLetters)
	var notes []string
	if v.Duplicates > 0 {
		notes = append(notes, plural(v.Duplicates, "duplicate", "duplicates")+" not counted")
	}
	if v.Invalid > 0 {
		notes = append(notes, plural(v.Invalid, "record that is not a dead letter", "records that are not dead letters"))
	}
	if len(notes) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(notes, ", "))
	}
	b.WriteByte('\n')
	fmt.Fprintf(&b, "%-14s%d\n", "REDRIVEN", v.Redriven)
	for _, e := range []struct {
		name string
		e    *statsEnd
	}{{"OLDEST", v.Oldest}, {"NEWEST", v.Newest}} {
		if e.e != nil {
			fmt.Fprintf(&b, "%-14s%s  %d:%d\n", e.name, e.e.Time, e.e.Partition, e.e.Offset)
		}
	}
	if v.From == "headers" {
		fmt.Fprintf(&b, "%-14s%s\n", "READ FROM", "the readable headers (no registry)")
	}
	for _, sec := range []struct {
		name string
		rows []countOf
	}{{"ERROR KIND", v.ByKind}, {"EVENT TYPE", v.ByType}, {"ORIGINAL TOPIC", v.ByTopic}} {
		if len(sec.rows) == 0 {
			continue
		}
		w := len(sec.name)
		for _, r := range sec.rows {
			w = max(w, utf8.RuneCountInString(r.Name))
		}
		fmt.Fprintf(&b, "\n%-*s  %s\n", w, sec.name, "COUNT")
		for _, r := range sec.rows {
			fmt.Fprintf(&b, "%-*s  %d\n", w, r.Name, r.Count)
		}
	}
	if h := v.Histogram; h != nil && len(h.Buckets) > 0 {
		var top int64
		for _, bk := range h.Buckets {
			top = max(top, bk.Count)
		}
		fmt.Fprintf(&b, "\n%-20s  %5s\n", strings.ToUpper(h.By), "COUNT")
		for _, bk := range h.Buckets {
			bar := 0
			if top > 0 {
				bar = int((bk.Count*40 + top - 1) / top)
			}
			fmt.Fprintf(&b, "%-20s  %5d  %s\n", bk.Start, bk.Count, strings.Repeat("#", bar))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
