package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/examples/events"
	"github.com/choreokit/choreo/examples/notifications/notificationsvc"
	"github.com/choreokit/choreo/examples/orders/ordersvc"
	"github.com/choreokit/choreo/examples/payments/paymentsvc"
	"github.com/choreokit/choreo/examples/shipping/shippingsvc"
)

// demoFacts is what the demo learned about its orders, once the services
// stopped: the input of the checks and the report.
type demoFacts struct {
	limitCents int64
	orders     []demoOrder
	ledger     map[string]string // payment service's rows: order id → status; nil without a database
}

// demoOrder is one placed order as the services and the gateway saw it.
type demoOrder struct {
	id          string
	amountCents int64
	known       bool                   // the order service has it
	view        ordersvc.Order         // its state and timeline
	gateway     paymentsvc.OrderRecord // the gateway's calls for it
}

// Event type names (Avro full names) of the timeline.
var (
	typePlaced     = events.OrderPlaced{}.AvroSchema().FullName()
	typeCompleted  = events.OrderCompleted{}.AvroSchema().FullName()
	typeCancelled  = events.OrderCancelled{}.AvroSchema().FullName()
	typeAuthorized = events.PaymentAuthorized{}.AvroSchema().FullName()
	typeDeclined   = events.PaymentDeclined{}.AvroSchema().FullName()
	typeScheduled  = events.ShipmentScheduled{}.AvroSchema().FullName()
	typeDispatched = events.ShipmentDispatched{}.AvroSchema().FullName()
)

// declined reports whether the payment rule declines the order.
func (o demoOrder) declined(limit int64) bool { return o.amountCents > limit }

// count returns how many distinct events of each type the timeline holds.
func (o demoOrder) count() map[string]int {
	n := map[string]int{}
	seen := map[string]bool{}
	for _, e := range o.view.Timeline {
		if !seen[e.EventID] {
			seen[e.EventID] = true
			n[e.Type]++
		}
	}
	return n
}

// eventTime returns the time of the first event of type t, and false.
func (o demoOrder) eventTime(t string) (time.Time, bool) {
	for _, e := range o.view.Timeline {
		if e.Type == t {
			return e.Time, true
		}
	}
	return time.Time{}, false
}

// latency returns the time from OrderPlaced to the event that ended the
// order, and false if it has not ended.
func (o demoOrder) latency() (time.Duration, bool) {
	start, ok := o.eventTime(typePlaced)
	if !ok {
		return 0, false
	}
	for _, t := range []string{typeCompleted, typeCancelled} {
		if end, ok := o.eventTime(t); ok {
			return end.Sub(start), true
		}
	}
	return 0, false
}

// failures returns the gateway calls for the order that failed.
func (o demoOrder) failures() int {
	n := 0
	for _, a := range o.gateway.Attempts {
		if a.Err != "" {
			n++
		}
	}
	return n
}

// demoDeadLetter is a dead letter written during the run.
type demoDeadLetter struct {
	topic     string
	partition int32
	offset    int64
	dl        *dlq.DeadLetter // nil when it could not be decoded
	decodeErr string
}

// checkDemo returns what is inconsistent, one line per problem: every
// order must have ended as the payment rule says (paid, shipped and
// completed; or declined and cancelled), with each of those events once,
// charged at most once (exactly once when paid), and none may be lost;
// the poison record must be in the dead-letter topics of the services
// that handle OrderPlaced.
func checkDemo(f demoFacts, dls []demoDeadLetter, poisonKey string) []string {
	var problems []string
	for _, o := range f.orders {
		bad := func(format string, args ...any) {
			problems = append(problems, fmt.Sprintf("order %s: ", o.id)+fmt.Sprintf(format, args...))
		}
		if !o.known {
			bad("lost: the order service does not know it")
			continue
		}
		n := o.count()
		want := map[string]int{typePlaced: 1, typeAuthorized: 1, typeScheduled: 1, typeDispatched: 1, typeCompleted: 1}
		status, captures := ordersvc.StatusCompleted, 1
		if o.declined(f.limitCents) {
			want = map[string]int{typePlaced: 1, typeDeclined: 1, typeCancelled: 1}
			status, captures = ordersvc.StatusCancelled, 0
		}
		if o.view.Status != status {
			bad("status %s; want %s (amount %s, limit %s)", o.view.Status, status, money(o.amountCents), money(f.limitCents))
		}
		for _, t := range sortedKeys(want, n) {
			if n[t] != want[t] {
				bad("%d %s events; want %d", n[t], shortType(t), want[t])
			}
		}
		if o.gateway.Captures > 1 {
			bad("charged %d times", o.gateway.Captures)
		} else if o.gateway.Captures != captures {
			bad("charged %d times; want %d", o.gateway.Captures, captures)
		}
		if f.ledger != nil {
			wantRow := paymentsvc.StatusAuthorized
			if o.declined(f.limitCents) {
				wantRow = paymentsvc.StatusDeclined
			}
			if got := f.ledger[o.id]; got != wantRow {
				bad("payments table says %q; want %q", got, wantRow)
			}
		}
	}
	if poisonKey != "" {
		got := map[string]bool{}
		for _, d := range dls {
			if d.dl != nil && string(d.dl.Original.Key) == poisonKey {
				got[d.dl.Group] = true
			}
		}
		for _, g := range []string{paymentsvc.Group, notificationsvc.Group} {
			if !got[g] {
				problems = append(problems, fmt.Sprintf("the poison record is not in %s: lost", dlq.Topic(g)))
			}
		}
	}
	return problems
}

// sortedKeys returns the keys of the maps, sorted.
func sortedKeys(ms ...map[string]int) []string {
	var out []string
	for _, m := range ms {
		for k := range m {
			if !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
	}
	sort.Strings(out)
	return out
}

// shortType drops the namespace of an event type.
func shortType(t string) string {
	if i := strings.LastIndexByte(t, '.'); i >= 0 {
		return t[i+1:]
	}
	return t
}

// money formats cents as units with two decimals.
func money(cents int64) string {
	return fmt.Sprintf("%d.%02d", cents/100, cents%100)
}

// demoReport is what the demo prints at the end.
type demoReport struct {
	facts       demoFacts
	deadLetters []demoDeadLetter
	stats       map[string]consumer.Stats
	gateway     paymentsvc.GatewayStats
	emails      int
	elapsed     time.Duration
	chaosNote   string
	problems    []string
	timelines   int
}

// write prints the timelines, the summary and the dead letters.
func (r demoReport) write(out io.Writer) {
	for _, o := range r.pickTimelines() {
		fmt.Fprintln(out)
		r.writeTimeline(out, o)
	}
	fmt.Fprintln(out)
	r.writeSummary(out)
	if len(r.deadLetters) > 0 {
		fmt.Fprintln(out)
		r.writeDeadLetters(out)
	}
}

// pickTimelines chooses orders worth showing: one that went through
// without a hitch, one whose payment was retried, one cancelled, then
// others.
func (r demoReport) pickTimelines() []demoOrder {
	var out []demoOrder
	taken := map[string]bool{}
	take := func(ok func(demoOrder) bool) {
		for _, o := range r.facts.orders {
			if len(out) < r.timelines && !taken[o.id] && o.known && ok(o) {
				out = append(out, o)
				taken[o.id] = true
				return
			}
		}
	}
	limit := r.facts.limitCents
	take(func(o demoOrder) bool { return !o.declined(limit) && o.failures() == 0 })
	take(func(o demoOrder) bool { return o.failures() > 0 })
	take(func(o demoOrder) bool { return o.declined(limit) })
	for len(out) < r.timelines && len(out) < len(r.facts.orders) {
		before := len(out)
		take(func(demoOrder) bool { return true })
		if len(out) == before {
			break
		}
	}
	return out
}

// timelineLine is one line of an order's timeline.
type timelineLine struct {
	at         time.Time
	who, what  string
	annotation string
}

// writeTimeline prints an order's events and gateway calls, each with the
// delay since the order was placed.
func (r demoReport) writeTimeline(out io.Writer, o demoOrder) {
	end := "has not ended"
	if d, ok := o.latency(); ok {
		end = fmt.Sprintf("%s in %s", o.view.Status, ms(d))
	}
	fmt.Fprintf(out, "Order %s, %s %s, %s\n", o.id, money(o.amountCents), o.view.Currency, end)
	fmt.Fprintf(out, "  correlation id %s\n", o.view.CorrelationID)
	var lines []timelineLine
	for _, e := range o.view.Timeline {
		lines = append(lines, timelineLine{at: e.Time, who: e.Source, what: shortType(e.Type)})
	}
	for i, a := range o.gateway.Attempts {
		switch {
		case a.Err != "":
			what := "gateway call failed: " + a.Err
			lines = append(lines, timelineLine{at: a.At, who: paymentsvc.Group, what: what, annotation: fmt.Sprintf("retried (call %d)", i+1)})
		case a.Replayed:
			lines = append(lines, timelineLine{at: a.At, who: paymentsvc.Group, what: "gateway call answered with the earlier charge", annotation: "not charged again"})
		case i > 0:
			lines = append(lines, timelineLine{at: a.At, who: paymentsvc.Group, what: "gateway call succeeded", annotation: fmt.Sprintf("call %d", i+1)})
		}
	}
	slices.SortStableFunc(lines, func(a, b timelineLine) int { return a.at.Compare(b.at) })
	start, _ := o.eventTime(typePlaced)
	// Delays right-aligned, services left-aligned: padded by hand, as
	// tabwriter aligns every column one way.
	width := 0
	for _, l := range lines {
		width = max(width, len(ms(l.at.Sub(start))))
	}
	for _, l := range lines {
		who := fmt.Sprintf("%-22s", l.who)
		line := fmt.Sprintf("  %*s  %s %s", width+1, "+"+ms(l.at.Sub(start)), who, l.what)
		if l.annotation != "" {
			line += "  [" + l.annotation + "]"
		}
		fmt.Fprintln(out, line)
	}
}

// ms formats a duration in milliseconds with one decimal.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
}

// writeSummary prints the one-screen summary.
func (r demoReport) writeSummary(out io.Writer) {
	var completed, cancelled, other int
	var all, clean, retried []time.Duration
	for _, o := range r.facts.orders {
		switch o.view.Status {
		case ordersvc.StatusCompleted:
			completed++
		case ordersvc.StatusCancelled:
			cancelled++
		default:
			other++
		}
		if d, ok := o.latency(); ok {
			all = append(all, d)
			if o.failures() > 0 {
				retried = append(retried, d)
			} else {
				clean = append(clean, d)
			}
		}
	}
	fmt.Fprintln(out, "Summary")
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	line := fmt.Sprintf("%d placed: %d completed, %d cancelled (declined over %s)", len(r.facts.orders), completed, cancelled, money(r.facts.limitCents))
	if other > 0 {
		line += fmt.Sprintf(", %d not ended", other)
	}
	fmt.Fprintf(tw, "  orders\t%s\n", line)
	fmt.Fprintf(tw, "  charges\t%d made for %d calls to the gateway: %d failed transiently, %d answered with an earlier charge\n",
		r.gateway.Captures, r.gateway.Calls, r.gateway.Failures, r.gateway.Replays)
	var inProcess, forwarded int64
	var per []string
	for _, g := range demoGroups() {
		s := r.stats[g]
		inProcess += s.Retried
		forwarded += s.Forwarded
		if s.Retried+s.Forwarded > 0 {
			per = append(per, fmt.Sprintf("%s %d", g, s.Retried+s.Forwarded))
		}
	}
	retriesLine := fmt.Sprintf("%d handler attempts retried in process, %d events through retry topics", inProcess, forwarded)
	if len(per) > 0 {
		retriesLine += " (" + strings.Join(per, ", ") + ")"
	}
	fmt.Fprintf(tw, "  retries\t%s\n", retriesLine)
	fmt.Fprintf(tw, "  dead letters\t%s\n", r.deadLetterCounts())
	var dups int64
	for _, s := range r.stats {
		dups += s.Duplicates
	}
	fmt.Fprintf(tw, "  duplicates\t%d events delivered again and skipped by the idempotency stores\n", dups)
	fmt.Fprintf(tw, "  e-mails\t%d sent by %s\n", r.emails, notificationsvc.Group)
	fmt.Fprintf(tw, "  latency\tOrderPlaced to completed or cancelled: %s\n", percentiles(all))
	fmt.Fprintf(tw, "\t  without gateway failures: %s\n", percentiles(clean))
	fmt.Fprintf(tw, "\t  with gateway failures:    %s\n", percentiles(retried))
	if r.chaosNote != "" {
		fmt.Fprintf(tw, "  chaos\t%s\n", r.chaosNote)
	}
	fmt.Fprintf(tw, "  time\t%s\n", r.elapsed.Round(time.Millisecond))
	if len(r.problems) == 0 {
		fmt.Fprintf(tw, "  consistency\tok: every order paid, shipped and completed, or declined and cancelled; none charged twice; none lost\n")
	} else {
		fmt.Fprintf(tw, "  consistency\t%d problems:\n", len(r.problems))
		for _, p := range r.problems[:min(len(r.problems), 20)] {
			fmt.Fprintf(tw, "\t  %s\n", p)
		}
		if len(r.problems) > 20 {
			fmt.Fprintf(tw, "\t  … and %d more\n", len(r.problems)-20)
		}
	}
	tw.Flush()
}

// demoGroups are the services' groups in the order of the choreography.
func demoGroups() []string {
	return []string{ordersvc.Group, paymentsvc.Group, shippingsvc.Group, notificationsvc.Group}
}

// deadLetterCounts says how many dead letters each service wrote, by kind.
func (r demoReport) deadLetterCounts() string {
	if len(r.deadLetters) == 0 {
		return "none"
	}
	by := map[string]map[string]int{}
	for _, d := range r.deadLetters {
		g, kind := strings.TrimSuffix(d.topic, dlq.Suffix), "undecodable"
		if d.dl != nil {
			g, kind = d.dl.Group, string(d.dl.Error.Kind)
		}
		if by[g] == nil {
			by[g] = map[string]int{}
		}
		by[g][kind]++
	}
	var parts []string
	for _, g := range demoGroups() {
		var kinds []string
		for _, k := range sortedKeys(by[g]) {
			kinds = append(kinds, fmt.Sprintf("%s %d", k, by[g][k]))
		}
		if len(kinds) > 0 {
			parts = append(parts, fmt.Sprintf("%s: %s", g, strings.Join(kinds, ", ")))
		}
	}
	return fmt.Sprintf("%d (%s)", len(r.deadLetters), strings.Join(parts, "; "))
}

// writeDeadLetters prints the dead letters of the run.
func (r demoReport) writeDeadLetters(out io.Writer) {
	fmt.Fprintln(out, "Dead letters (the poison record injected into topic orders, and anything else that failed for good)")
	dls := slices.Clone(r.deadLetters)
	slices.SortStableFunc(dls, func(a, b demoDeadLetter) int {
		return slices.Index(demoGroups(), strings.TrimSuffix(a.topic, dlq.Suffix)) - slices.Index(demoGroups(), strings.TrimSuffix(b.topic, dlq.Suffix))
	})
	for _, d := range dls {
		if d.dl == nil {
			fmt.Fprintf(out, "  %s/%d@%d: not a dead-letter envelope: %s\n", d.topic, d.partition, d.offset, d.decodeErr)
			continue
		}
		o := d.dl.Original
		typ := "-"
		if d.dl.EventType != nil {
			typ = *d.dl.EventType
		}
		fmt.Fprintf(out, "  %s, partition %d, offset %d: the record at %s/%d@%d, key %q, type %s\n",
			d.topic, d.partition, d.offset, o.Topic, o.Partition, o.Offset, o.Key, typ)
		kind := string(d.dl.Error.Kind)
		fmt.Fprintf(out, "      %s after %d attempt(s): %s\n", kind, d.dl.Attempts, cutLine(strings.TrimPrefix(d.dl.Error.Message, kind+": "), 160))
	}
}

// cutLine cuts s to n bytes on one line.
func cutLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// percentiles returns "p50 …, p99 … (n orders)" by the nearest-rank
// method, or "no orders".
func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no orders"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("p50 %s, p99 %s, max %s (%d orders)", ms(percentile(s, 50)), ms(percentile(s, 99)), ms(s[len(s)-1]), len(s))
}

// percentile returns the p-th percentile of sorted, nearest rank.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 × n)
	return sorted[max(rank, 1)-1]
}

// progressLine shows a line of progress: rewritten in place on a terminal,
// printed once a second when it changed otherwise (a log, a pipe).
type progressLine struct {
	out io.Writer
	tty bool
}

func newProgressLine(out io.Writer) *progressLine {
	tty := false
	if f, ok := out.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressLine{out: out, tty: tty}
}

// run shows text() until stop is called; stop shows it a last time.
func (p *progressLine) run(text func() string) (stop func()) {
	every := time.Second
	if p.tty {
		every = 100 * time.Millisecond
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	last := ""
	show := func(final bool) {
		t := text()
		switch {
		case p.tty:
			fmt.Fprintf(p.out, "\r\033[K%s", t)
			if final {
				fmt.Fprintln(p.out)
			}
		case t != last:
			fmt.Fprintln(p.out, t)
		}
		last = t
	}
	go func() {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				show(true)
				return
			case <-tick.C:
				show(false)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}
