package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/term"

	"github.com/choreokit/choreo/dlq"
)

// redriveOptions are the flags of `choreo dlq redrive`.
type redriveOptions struct {
	dryRun      bool
	rate        string
	yes         bool
	again       bool
	to          string
	maxRedrives int
}

func newDLQRedriveCmd() *cobra.Command {
	var (
		f   *dlqFlags
		ff  *filterFlags
		out *outputFlag
		o   redriveOptions
	)
	cmd := &cobra.Command{
		Use:     "redrive SERVICE [PARTITION:OFFSET ...]",
		Aliases: []string{"replay"},
		Short:   "Send dead letters back to the service that failed them",
		Long: `Send SERVICE's dead letters (all of them, those the filters select, or those
at the PARTITION:OFFSETs given) back to SERVICE through its redrive topic,
SERVICE.redrive, which that service's consumer reads and no other service
does. Each goes with its original key, value and headers (the same ce_id:
the service's idempotency store skips an event it handled meanwhile) and
is handled as if read from its original topic; one that fails again is
retried and dead-lettered again as usual, its new dead letter naming this
one (choreo-replayed-from) and counting the redrives (choreo-redrive-count).

Every redrive is recorded in the compacted topic SERVICE.dlq.redrives, so
list and show say what was redriven, and redriving the same dead letters
again sends nothing unless --again. Dead letters of an original redriven
--max-redrives times already are skipped (the loop guard), and so are dead
letters whose original was cut to fit the dead-letter topic, and records
that are not dead letters. Duplicates of one dead letter are sent once.

It asks before sending unless --yes, shows its progress on a terminal
(plain lines otherwise), keeps to --rate, and stops cleanly on Ctrl-C,
reporting what it sent (running it again sends the rest). --dry-run lists
what would be sent and sends nothing. --to TOPIC republishes to any topic
instead, such as the original one (every service reading it gets them).

Exit status: 0 when everything selected was sent (or nothing was to be), 1
when a send failed, the run was interrupted or not confirmed, 2 for a usage
error.`,
		Args: func(cmd *cobra.Command, args []string) error { return nil },
		RunE: func(cmd *cobra.Command, args []string) error {
			service := ""
			if len(args) > 0 {
				if _, _, err := parseCoords(args[0]); err != nil || f.topic == "" {
					service, args = args[0], args[1:]
				}
			}
			t, err := f.target(service)
			if err != nil {
				return err
			}
			var only map[coord]bool
			for _, a := range args {
				p, off, err := parseCoords(a)
				if err != nil {
					return err
				}
				if only == nil {
					only = map[coord]bool{}
				}
				only[coord{p, off}] = true
			}
			filt, err := ff.parse(cmd)
			if err != nil {
				return err
			}
			rate, err := parseRate(o.rate)
			if err != nil {
				return err
			}
			if o.maxRedrives < 0 {
				return usagef("--max-redrives %d: want 0 (no limit) or more", o.maxRedrives)
			}
			if o.to == "" && t.group == "" {
				return usagef("--topic %s does not name a service's dead-letter topic (<service>.dlq): name the SERVICE whose redrive topic to use, or --to TOPIC", t.topic)
			}
			r := &redrive{f: f, t: t, filt: filt, only: only, o: o, rate: rate, format: out.format,
				stdin: cmd.InOrStdin(), stdout: cmd.OutOrStdout(), stderr: cmd.ErrOrStderr()}
			return r.run(cmd.Context())
		},
	}
	f = addDLQFlags(cmd)
	ff = addFilterFlags(cmd)
	out = addOutputFlag(cmd)
	fs := cmd.Flags()
	fs.BoolVar(&o.dryRun, "dry-run", false, "list what would be sent (in --output's format) and send nothing")
	fs.StringVar(&o.rate, "rate", "", "send at most this many dead letters a second: N or N/s (or N/m a minute); default: as fast as the cluster takes them")
	fs.BoolVarP(&o.yes, "yes", "y", false, "do not ask for confirmation")
	fs.BoolVar(&o.again, "again", false, "send dead letters that were redriven before, too")
	fs.StringVar(&o.to, "to", "", "republish to this topic instead of the service's redrive topic (every service reading it gets them)")
	fs.IntVar(&o.maxRedrives, "max-redrives", 3, "skip dead letters whose original was redriven this many times already (0: no limit)")
	return cmd
}

// parseRate reads --rate: N, N/s or N/m.
func parseRate(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	num, per := s, time.Second
	if n, unit, ok := strings.Cut(s, "/"); ok {
		num = n
		switch unit {
		case "s":
		case "m":
			per = time.Minute
		default:
			num = "bad"
		}
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n <= 0 {
		return 0, usagef("--rate %q: want a number of dead letters a second, such as 50, 50/s or 600/m", s)
	}
	return n / per.Seconds(), nil
}

// redrive is one run of `choreo dlq redrive`.
type redrive struct {
	f      *dlqFlags
	t      target
	filt   *filter
	only   map[coord]bool
	o      redriveOptions
	rate   float64 // per second; 0: no limit
	format string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	env  *dlqEnv
	dest string // where the records go
	warn func(string)
}

// decision is what redrive does with a dead letter.
type decision int

const (
	send decision = iota
	skipRedriven
	skipLoop
	skipTruncated
	skipInvalid
	skipNotAsked
)

// tally counts the decisions of a pass.
type tally [skipNotAsked + 1]int64

// decide says what to do with e.
func (r *redrive) decide(e *entry) decision {
	switch {
	case r.only != nil && !r.only[coord{e.part, e.off}]:
		return skipNotAsked
	case e.invalid != "":
		return skipInvalid
	case e.truncated:
		return skipTruncated
	case e.redriven != nil && !r.o.again:
		return skipRedriven
	case r.o.maxRedrives > 0 && e.sum.RedriveCount >= r.o.maxRedrives:
		return skipLoop
	}
	return send
}

// run does the redrive: a first pass over the dead letters to count what
// would be sent, the question, then a second pass over the same offsets
// that sends.
func (r *redrive) run(ctx context.Context) error {
	env, err := r.f.open(ctx, r.t, true)
	if err != nil {
		return err
	}
	defer env.close()
	r.env = env
	r.warn = warner("choreo dlq redrive", r.stderr)
	r.dest = r.o.to
	if r.dest == "" {
		r.dest = dlq.RedriveTopic(r.t.group)
	}
	if err := r.checkDestination(ctx); err != nil {
		return err
	}
	redrives, _, err := env.loadRedrives(ctx, nil, r.warn)
	if err != nil {
		return err
	}

	// Pass 1: count, and list for --dry-run.
	cfg := scanConfig{filter: r.filt, redrives: redrives, needEnvelope: true, warn: r.warn}
	if r.only != nil {
		cfg.start, cfg.end = r.narrow(ctx)
	}
	sc := newScanner(env, cfg)
	var counts tally
	found := map[coord]bool{}
	var lw *listWriter
	if r.o.dryRun {
		lw = newListWriter(r.stdout, r.format, termWidth(r.stdout))
	}
	var writeErr error
	err = sc.run(ctx, func(e *entry) bool {
		d := r.decide(e)
		counts[d]++
		if r.only != nil && d != skipNotAsked {
			found[coord{e.part, e.off}] = true
		}
		if d == send && lw != nil {
			writeErr = lw.add(e)
		}
		return writeErr == nil
	})
	if lw != nil {
		if cerr := lw.close(); writeErr == nil {
			writeErr = cerr
		}
	}
	if writeErr != nil {
		return fmt.Errorf("write: %w", writeErr)
	}
	if err != nil {
		return err
	}
	for c := range r.only {
		if !found[c] {
			r.warn(fmt.Sprintf("no dead letter at %s matches (not there, or filtered out)", c))
		}
	}
	n := counts[send]
	if sc.stats.matched == 0 {
		noteScan(r.stderr, "choreo dlq redrive", env.topic, sc.stats, r.filt)
	}
	if r.o.dryRun {
		fmt.Fprintf(r.stderr, "choreo dlq redrive: dry run: would send %s of %s to %s%s; nothing sent\n", plural(n, "dead letter", "dead letters"), env.topic, r.dest, r.skipped(counts))
		return nil
	}
	if n == 0 {
		fmt.Fprintf(r.stdout, "nothing to redrive from %s%s\n", env.topic, r.skipped(counts))
		return nil
	}
	if !r.o.yes {
		if err := r.confirm(n, counts); err != nil {
			return err
		}
	}
	if err := env.ensureRedriveLog(ctx); err != nil {
		return err
	}

	// Pass 2: the same offsets, the same decisions; send.
	cfg.start, cfg.end, cfg.keepEnvelope = sc.cfg.start, sc.cfg.end, true
	sc2 := newScanner(env, cfg)
	s := newSender(r, n)
	var sendErr error
	var counts2 tally
	err = sc2.run(ctx, func(e *entry) bool {
		d := r.decide(e)
		counts2[d]++
		if d == send {
			sendErr = s.add(ctx, e)
		}
		return sendErr == nil && ctx.Err() == nil
	})
	if err == nil && sendErr == nil && ctx.Err() == nil {
		sendErr = s.flush(ctx)
	}
	s.progress.finish()
	interrupted := ctx.Err() != nil
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	counts2[send] = s.sent
	r.summary(counts2, s, interrupted)
	switch {
	case interrupted:
		return fmt.Errorf("interrupted: sent %d of %d dead letters; run the same command again to send the rest (what was sent is skipped)", s.sent, n)
	case sendErr != nil && s.failed == 0:
		return sendErr
	case s.failed > 0:
		return fmt.Errorf("%d of %d dead letters could not be sent: %w", s.failed, n, s.firstErr)
	}
	return nil
}

// checkDestination makes sure the destination topic exists, and notes a
// service that is not running.
func (r *redrive) checkDestination(ctx context.Context) error {
	td, err := r.env.adm.ListTopics(ctx, r.dest)
	if err != nil {
		return fmt.Errorf("look up %s: %w", r.dest, err)
	}
	if d, ok := td[r.dest]; !ok || d.Err != nil {
		if r.o.to != "" {
			return fmt.Errorf("topic %s (--to) does not exist", r.dest)
		}
		return fmt.Errorf("topic %s does not exist: a service creates its redrive topic when it starts (choreo with redrive support); start %s once, or create the topic, or republish with --to TOPIC",
			r.dest, r.t.group)
	}
	if r.o.to != "" {
		return nil
	}
	groups, err := r.env.adm.DescribeGroups(ctx, r.t.group)
	if err != nil {
		return nil // only a note: not worth failing for
	}
	if g, ok := groups[r.t.group]; !ok || g.Err != nil || len(g.Members) == 0 {
		r.warn(fmt.Sprintf("no member of group %s is running: what is redriven waits in %s until the service runs", r.t.group, r.dest))
	}
	return nil
}

// narrow returns offsets that cover just the dead letters asked for.
func (r *redrive) narrow(ctx context.Context) (start, end map[int32]int64) {
	start, end = map[int32]int64{}, map[int32]int64{}
	for c := range r.only {
		if s, ok := start[c.part]; !ok || c.off < s {
			start[c.part] = c.off
		}
		if e, ok := end[c.part]; !ok || c.off+1 > e {
			end[c.part] = c.off + 1
		}
	}
	return start, end
}

// skipped describes what a pass skipped, for a message: "" when nothing.
func (r *redrive) skipped(c tally) string {
	var parts []string
	if c[skipRedriven] > 0 {
		parts = append(parts, fmt.Sprintf("%d redriven before (--again sends them)", c[skipRedriven]))
	}
	if c[skipLoop] > 0 {
		parts = append(parts, fmt.Sprintf("%d whose original was redriven %d times already (--max-redrives)", c[skipLoop], r.o.maxRedrives))
	}
	if c[skipTruncated] > 0 {
		parts = append(parts, fmt.Sprintf("%d cut to fit the topic (cannot be redriven)", c[skipTruncated]))
	}
	if c[skipInvalid] > 0 {
		parts = append(parts, fmt.Sprintf("%d records that are not dead letters", c[skipInvalid]))
	}
	if len(parts) == 0 {
		return ""
	}
	return "; skipping " + strings.Join(parts, ", ")
}

// confirm asks on stderr and reads the answer from stdin.
func (r *redrive) confirm(n int64, c tally) error {
	who := fmt.Sprintf("only %s reads it", r.t.group)
	if r.o.to != "" {
		who = "every service reading it gets them"
	}
	fmt.Fprintf(r.stderr, "Redrive %s of %s to %s (%s)%s? [y/N] ", plural(n, "dead letter", "dead letters"), r.env.topic, r.dest, who, r.skipped(c))
	line, _ := bufio.NewReader(r.stdin).ReadString('\n')
	if f, ok := r.stdin.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		fmt.Fprintln(r.stderr) // the answer was not echoed
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errors.New("not confirmed: nothing sent (--yes skips the question)")
}

// summary writes what a redrive did.
func (r *redrive) summary(c tally, s *sender, interrupted bool) {
	w := r.stdout
	fmt.Fprintf(w, "redrive of %s to %s", r.env.topic, r.dest)
	if interrupted {
		fmt.Fprint(w, " (interrupted)")
	}
	fmt.Fprintln(w)
	rows := []struct {
		name string
		n    int64
		note string
	}{
		{"sent", s.sent, ""},
		{"redriven before", c[skipRedriven], "--again sends them"},
		{fmt.Sprintf("over --max-redrives %d", r.o.maxRedrives), c[skipLoop], "their originals keep failing: look at the cause"},
		{"cut to fit", c[skipTruncated], "cannot be redriven: republish from the producer"},
		{"not dead letters", c[skipInvalid], ""},
		{"failed", s.failed, ""},
	}
	for _, row := range rows {
		line := fmt.Sprintf("  %-24s%d", row.name, row.n)
		if row.n > 0 && row.note != "" {
			line += "  (" + row.note + ")"
		}
		fmt.Fprintln(w, line)
	}
	if s.unrecorded > 0 {
		fmt.Fprintf(w, "  %-24s%d  (sent but not recorded in %s: a rerun sends them again, and the service skips them)\n", "not recorded", s.unrecorded, dlq.RedriveLog(r.env.topic))
	} else if s.sent > 0 {
		fmt.Fprintf(w, "recorded in %s\n", dlq.RedriveLog(r.env.topic))
	}
}

// sender sends redrives in batches, at the rate asked, and records each
// acknowledged one in the redrive log.
type sender struct {
	r        *redrive
	batch    []*entry
	bytes    int
	next     time.Time // when the next record may go, with a rate
	progress progress

	sent, failed, unrecorded int64
	firstErr                 error
}

// Batches: as many records as fit these, or fewer with a low rate.
const (
	sendBatch      = 256
	sendBatchBytes = 4 << 20
)

func newSender(r *redrive, total int64) *sender {
	return &sender{r: r, progress: newProgress(r.stderr, total)}
}

// add queues e, waiting first as the rate says, and sends the batch when
// it is full. Waiting ends early when ctx ends (the batch then is not
// sent).
func (s *sender) add(ctx context.Context, e *entry) error {
	if s.r.rate > 0 {
		now := time.Now()
		if s.next.After(now) {
			if err := s.flush(ctx); err != nil {
				return err
			}
			t := time.NewTimer(time.Until(s.next))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil
			}
		} else {
			s.next = now
		}
		s.next = s.next.Add(time.Duration(float64(time.Second) / s.r.rate))
	}
	s.batch = append(s.batch, e)
	s.bytes += e.size
	if len(s.batch) >= sendBatch || s.bytes >= sendBatchBytes {
		return s.flush(ctx)
	}
	return nil
}

// flush sends the batch and records what was acknowledged. What is sent
// completes even if ctx ends meanwhile, within a bound, so that the count
// of what was sent is right.
func (s *sender) flush(ctx context.Context) error {
	if len(s.batch) == 0 {
		return nil
	}
	r := s.r
	recs := make([]*kgo.Record, len(s.batch))
	for i, e := range s.batch {
		from := &kgo.Record{Topic: r.env.topic, Partition: e.part, Offset: e.off}
		if r.o.to != "" {
			recs[i] = e.dl.ReplayTo(r.o.to, from)
		} else {
			recs[i] = e.dl.Replay(from)
			recs[i].Topic = r.dest // the service named, whatever group the envelope says
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	results := r.env.cl.ProduceSync(sctx, recs...)
	var logs []*kgo.Record
	at := dlqNow()
	by := dlqWho()
	for i, res := range results {
		e := s.batch[i]
		if res.Err != nil {
			s.failed++
			if s.firstErr == nil {
				s.firstErr = fmt.Errorf("redrive of %d:%d to %s: %w", e.part, e.off, r.dest, res.Err)
			}
			r.warn(fmt.Sprintf("redrive of %d:%d to %s failed: %v", e.part, e.off, r.dest, res.Err))
			continue
		}
		s.sent++
		count := 1
		if e.redriven != nil {
			count = e.redriven.count + 1
		}
		c := coord{e.part, e.off}
		lr, err := r.env.redriveLogRecord(c, redriveRecord{
			DeadLetter:   fmt.Sprintf("%s/%d/%d", r.env.topic, e.part, e.off),
			Original:     fmt.Sprintf("%s/%d/%d", e.sum.OriginalTopic, e.sum.OriginalPartition, e.sum.OriginalOffset),
			EventID:      e.sum.EventID,
			At:           at,
			To:           res.Record.Topic,
			By:           by,
			Count:        count,
			RedriveCount: e.sum.RedriveCount + 1,
			Duplicates:   e.dups,
		})
		if err != nil {
			s.unrecorded++
			continue
		}
		logs = append(logs, lr)
	}
	if len(logs) > 0 {
		for _, res := range r.env.cl.ProduceSync(sctx, logs...) {
			if res.Err != nil {
				s.unrecorded++
				r.warn(fmt.Sprintf("redrive sent but not recorded in %s: %v", dlq.RedriveLog(r.env.topic), res.Err))
			}
		}
	}
	s.progress.add(len(s.batch))
	s.batch, s.bytes = s.batch[:0], 0
	return nil
}

// progress shows how a redrive goes.
type progress interface {
	add(n int)
	finish()
}

// newProgress returns a progress bar on a terminal, plain lines (at most
// one every plainEvery) otherwise.
func newProgress(w io.Writer, total int64) progress {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return barProgress{progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("redrive"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("dead letters"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetWidth(30),
			progressbar.OptionClearOnFinish(),
		)}
	}
	return &plainProgress{w: w, total: total, start: time.Now()}
}

// barProgress is a terminal's progress bar.
type barProgress struct{ bar *progressbar.ProgressBar }

func (b barProgress) add(n int) { _ = b.bar.Add(n) }
func (b barProgress) finish()   { _ = b.bar.Close() }

// plainEvery is how often plain progress lines are written.
var plainEvery = 2 * time.Second

// plainProgress writes a line now and then: sent, total, rate, time left.
type plainProgress struct {
	w          io.Writer
	total      int64
	done       int64
	start      time.Time
	lastReport time.Time
}

func (p *plainProgress) add(n int) {
	p.done += int64(n)
	now := time.Now()
	if now.Sub(p.lastReport) < plainEvery && p.done < p.total {
		return
	}
	p.lastReport = now
	elapsed := now.Sub(p.start).Seconds()
	rate := float64(p.done) / max(elapsed, 1e-3)
	left := ""
	if rate > 0 && p.done < p.total {
		left = fmt.Sprintf(", about %v left", time.Duration(float64(p.total-p.done)/rate*float64(time.Second)).Round(time.Second))
	}
	fmt.Fprintf(p.w, "choreo dlq redrive: sent %d of %d (%.0f/s%s)\n", p.done, p.total, rate, left)
}

func (p *plainProgress) finish() {}
