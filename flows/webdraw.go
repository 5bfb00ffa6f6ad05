package flows

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The page's two drawings, laid out in Go and written as inline SVG by the
// templates: a flow as a sequence diagram, and the catalog as a graph.

// Geometry of the sequence diagram, in CSS pixels.
const (
	dGutter   = 92  // the time column, left of the first lane
	dLaneW    = 188 // a lane
	dHeadY    = 8   // top of the lanes' name boxes
	dHeadH    = 32  // a name box
	dTop      = 56  // top of the first row
	dArrowGap = 16  // between the arrows of one event
	dNotes    = 200 // right of the last lane
)

// maxDiagramRows bounds the diagram (and its table): a flow of more events,
// retries and dead letters shows its first ones and says so.
const maxDiagramRows = 500

// noSourceLane is the lane of events without ce_source.
const noSourceLane = "(no ce_source)"

// diagram is a flow drawn as a sequence diagram: a lane (column) per
// service, time going down, a row per event (an arrow from its producer's
// lane to each consuming group's lane) and per retry, dead letter or
// redrive (a mark on the failing group's lane).
type diagram struct {
	Width, Height       int
	LifeTop, LifeBottom int
	Lanes               []dLane
	Rows                []dRow
	Desc                string
	Total               int // rows there would be without maxDiagramRows
}

// dLane is a lane's head.
type dLane struct {
	Name, Label string // Label may be cut
	X           int    // the lifeline
	BoxX, BoxW  int
}

// dRow is one event, or one failure or redrive of an event.
type dRow struct {
	N       int  // 1-based, shared with the table's rows
	Kind    Kind // KindEvent, KindRetry, KindDeadLetter or KindRedrive
	Top, H  int
	TimeY   int
	At      string // since the flow's start
	AtTime  time.Time
	Label   string // the event's short type
	LabelX  int
	LabelY  int
	Anchor  string // of the label: start or end
	Title   string // the row's whole story, as a tooltip
	Node    *Node
	Fail    *Failure // retry and dead-letter rows
	Rec     *Record  // redrive rows
	Lane    string   // the producer, or the failing group
	SrcX    int
	DotY    int
	BarY    int // the producer's activation bar
	BarH    int
	Arrows  []dArrow
	Badge   *dBadge
	Topic   string // where the record is
	Where   string // partition@offset
	Command string // a command to look closer
}

// dArrow is an event going to one consuming group.
type dArrow struct {
	D      string // SVG path
	Status string // as Consumption.Status
	Group  string
	Title  string
	GX, GY int // the status glyph
	Anchor string
	Glyph  string
}

// dBadge marks a retry, a dead letter or a redrive on a lane.
type dBadge struct {
	X, Y, W, H int
	TX, TY     int
	Text       string
	Note       string
	NX         int
	Anchor     string // of the note
	Href       string // a dead letter's page
}

// buildDiagram lays out f.
func buildDiagram(f Flow) diagram {
	lanes := slices.Clone(f.Lanes)
	add := func(name string) {
		if name == "" {
			name = noSourceLane
		}
		if !slices.Contains(lanes, name) {
			lanes = append(lanes, name)
		}
	}
	for _, n := range f.Nodes {
		add(n.Source)
		for _, c := range n.Consumers {
			add(c.Group)
		}
		for _, fl := range n.Failures {
			add(fl.Group)
		}
	}
	for _, r := range f.Records {
		if r.Kind == KindRedrive {
			add(r.Group)
		}
	}
	// Room on the right for the notes of the marks on the last lanes.
	d := diagram{Width: dGutter + len(lanes)*dLaneW + dNotes, LifeTop: dHeadY + dHeadH}
	laneX := map[string]int{}
	for i, name := range lanes {
		x := dGutter + i*dLaneW + dLaneW/2
		laneX[name] = x
		w := dLaneW - 18
		d.Lanes = append(d.Lanes, dLane{Name: name, Label: webCut(name, 24), X: x, BoxX: x - w/2, BoxW: w})
	}
	lastX := dGutter + (len(lanes)-1)*dLaneW + dLaneW/2
	lane := func(name string) (string, int) {
		if name == "" {
			name = noSourceLane
		}
		return name, laneX[name]
	}

	// The rows, by time: each event, then its failures and redrives
	// where they happened.
	type item struct {
		at   time.Time
		node *Node
		fail *Failure
		rec  *Record
	}
	var items []item
	nodes := map[string]*Node{}
	for i := range f.Nodes {
		n := &f.Nodes[i]
		nodes[n.EventID] = n
		items = append(items, item{at: n.Time, node: n})
		for j := range n.Failures {
			items = append(items, item{at: n.Failures[j].At, node: n, fail: &n.Failures[j]})
		}
	}
	for i := range f.Records {
		if r := &f.Records[i]; r.Kind == KindRedrive {
			items = append(items, item{at: r.Timestamp, node: nodes[r.EventID], rec: r})
		}
	}
	slices.SortStableFunc(items, func(a, b item) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		// an event before what befell it
		return cmp.Compare(boolInt(a.fail != nil || a.rec != nil), boolInt(b.fail != nil || b.rec != nil))
	})

	d.Total = len(items)
	if len(items) > maxDiagramRows {
		items = items[:maxDiagramRows]
	}
	y := dTop
	for i, it := range items {
		row := dRow{N: i + 1, Top: y, AtTime: it.at, At: offsetText(ms(it.at.Sub(f.Start))), Node: it.node}
		typ := ""
		if it.node != nil {
			typ = shortType(it.node.Type)
		}
		switch {
		case it.fail != nil || it.rec != nil:
			var g string
			b := &dBadge{W: 92, H: 20}
			if it.fail != nil {
				fl := it.fail
				row.Kind, row.Fail, g = fl.Kind, fl, fl.Group
				row.Topic, row.Where = fl.Topic, fmt.Sprintf("[%d]@%d", fl.Partition, fl.Offset)
				what := "retried"
				b.Text = "↻ retry"
				if fl.Kind == KindDeadLetter {
					what, b.Text = "dead-lettered", "✕ dead letter"
					b.Href = dlHref(fl.Group, fl.Partition, fl.Offset)
					row.Command = fl.Command
				}
				msg, _ := strings.CutPrefix(fl.ErrorMessage, fl.ErrorKind+": ")
				b.Note = webCut(fmt.Sprintf("%s: %s", fl.ErrorKind, msg), 48)
				row.Title = fmt.Sprintf("%s %s %s after %d attempts (%s: %s), to %s partition %d offset %d",
					fl.Group, what, typ, fl.Attempt, fl.ErrorKind, fl.ErrorMessage, fl.Topic, fl.Partition, fl.Offset)
			} else {
				r := it.rec
				row.Kind, row.Rec, g = KindRedrive, r, r.Group
				row.Topic, row.Where = r.Topic, fmt.Sprintf("[%d]@%d", r.Partition, r.Offset)
				b.Text = "↺ redriven"
				b.Note = webCut("sent back through "+r.Topic, 48)
				row.Title = fmt.Sprintf("%s got %s back through %s (from %s)", r.Group, typ, r.Topic, r.ReplayedFrom)
			}
			name, gx := lane(g)
			row.Lane, row.Label = name, typ
			b.X, b.Y = gx-b.W/2, y+6
			b.TX, b.TY = gx, y+20
			b.NX, b.Anchor = gx+b.W/2+6, "start"
			if gx == lastX && len(lanes) > 1 {
				b.NX, b.Anchor = gx-b.W/2-6, "end"
			}
			row.Badge = b
			row.TimeY, row.H = y+20, 34
		default:
			n := it.node
			name, sx := lane(n.Source)
			row.Kind, row.Lane, row.SrcX, row.Label = KindEvent, name, sx, typ
			row.Topic, row.Where = n.Topic, fmt.Sprintf("[%d]@%d", n.Partition, n.Offset)
			first := y + 26
			row.DotY, row.TimeY = first, first+4
			row.LabelX, row.LabelY, row.Anchor = sx+10, first-8, "start"
			if sx == lastX && len(lanes) > 1 {
				row.LabelX, row.Anchor = sx-10, "end"
			}
			var to []string
			for j, c := range n.Consumers {
				ay := first + j*dArrowGap
				_, cx := lane(c.Group)
				a := dArrow{Status: c.Status, Group: c.Group, Glyph: webGlyph(c.Status),
					Title: fmt.Sprintf("%s → %s: %s %s", name, c.Group, c.Group, strings.ToLower(consumptionText(c.Status)))}
				switch {
				case cx > sx:
					a.D, a.GX, a.GY, a.Anchor = fmt.Sprintf("M%d %dH%d", sx+4, ay, cx-8), cx+7, ay+5, "start"
				case cx < sx:
					a.D, a.GX, a.GY, a.Anchor = fmt.Sprintf("M%d %dH%d", sx-4, ay, cx+8), cx-7, ay+5, "end"
				default: // the producer consumes it too: a loop
					a.D, a.GX, a.GY, a.Anchor = fmt.Sprintf("M%d %dh28v10H%d", sx+4, ay-5, sx+10), sx+38, ay+9, "start"
				}
				row.Arrows = append(row.Arrows, a)
				to = append(to, c.Group+" "+consumptionText(c.Status))
			}
			last := first + max(len(n.Consumers)-1, 0)*dArrowGap
			row.BarY, row.BarH = first-6, last-first+12
			row.H = last - y + 18
			row.Title = fmt.Sprintf("%s published %s (%s) on %s partition %d offset %d", name, typ, n.Type, n.Topic, n.Partition, n.Offset)
			if len(to) > 0 {
				row.Title += ": " + strings.Join(to, "; ")
			}
			if !n.Seen {
				row.Title += " (only its retries or dead letters are indexed)"
			}
		}
		y += row.H
		d.Rows = append(d.Rows, row)
	}
	d.LifeBottom = y + 8
	d.Height = y + 16
	d.Desc = fmt.Sprintf("Sequence diagram: %d events across %d services (%s), time going down; the table below lists the same.",
		len(f.Nodes), len(lanes), strings.Join(lanes, ", "))
	return d
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Geometry of the catalog's graph.
const (
	gSvcW, gSvcH   = 184, 30
	gTypeW, gTypeH = 252, 42
	gColGap        = 150
	gTop           = 44
	gSvcStep       = 44
	gTypeStep      = 54
)

// graphView is the catalog drawn left to right: the producing services,
// the event types (with their topics), the consuming groups. A service
// that does both is on both sides.
type graphView struct {
	Width, Height int
	Cols          []gCol
	Nodes         []gNode
	Edges         []gEdge
	Desc          string
}

// gCol is a column's heading.
type gCol struct {
	X    int
	Text string
}

// gNode is a box: a service or an event type.
type gNode struct {
	ID     string // the catalog graph's node id
	Kind   string // service or event
	Side   string // producer, type or consumer
	Label  string
	Sub    string // an event type's topic
	Title  string
	Href   string
	X, Y   int
	W, H   int
	TX     int // text, centred
	TY, SY int // baselines of the label and the topic
}

// gEdge is a publishes or consumes edge.
type gEdge struct {
	From, To string
	Kind     string // publishes or consumes
	Reacts   bool
	D        string
	Title    string
}

// buildGraph lays out the catalog's graph: event types by topic, then
// each side's services at the mean height of the types they are joined
// to, which keeps the edges short and mostly uncrossed.
func buildGraph(c Catalog) graphView {
	var types []GraphNode
	labels := map[string]string{}
	for _, n := range c.Graph.Nodes {
		labels[n.ID] = n.Label
		if n.Kind == "event" {
			types = append(types, n)
		}
	}
	full := map[string]string{} // type node id -> full type name
	for _, t := range c.Types {
		full["type:"+t.Type+"@"+t.Topic] = t.Type
	}
	slices.SortFunc(types, func(a, b GraphNode) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Label, b.Label), cmp.Compare(a.ID, b.ID))
	})
	typeIdx := map[string]int{}
	for i, t := range types {
		typeIdx[t.ID] = i
	}
	side := func(kind string, typeEnd func(GraphEdge) (svc, typ string)) []string {
		sum, cnt := map[string]int{}, map[string]int{}
		for _, e := range c.Graph.Edges {
			if e.Kind != kind {
				continue
			}
			s, t := typeEnd(e)
			sum[s] += typeIdx[t]
			cnt[s]++
		}
		var out []string
		for s := range cnt {
			out = append(out, s)
		}
		slices.SortFunc(out, func(a, b string) int {
			// compare the mean indexes without dividing: a/ca vs b/cb
			return cmp.Or(cmp.Compare(sum[a]*cnt[b], sum[b]*cnt[a]), cmp.Compare(a, b))
		})
		return out
	}
	producers := side("publishes", func(e GraphEdge) (string, string) { return e.From, e.To })
	consumers := side("consumes", func(e GraphEdge) (string, string) { return e.To, e.From })

	g := graphView{}
	px, tx := 16, 16+gSvcW+gColGap
	cx := tx + gTypeW + gColGap
	g.Width = cx + gSvcW + 16
	colH := func(n, step, h int) int { return max(n*step-(step-h), 0) }
	hp, ht, hc := colH(len(producers), gSvcStep, gSvcH), colH(len(types), gTypeStep, gTypeH), colH(len(consumers), gSvcStep, gSvcH)
	inner := max(hp, ht, hc)
	g.Height = gTop + inner + 16
	g.Cols = []gCol{{px + gSvcW/2, "Producers (ce_source)"}, {tx + gTypeW/2, "Event types (topic)"}, {cx + gSvcW/2, "Consumers (groups)"}}
	pos := map[string][2]int{} // side+id -> left x, centre y
	for i, id := range producers {
		y := gTop + (inner-hp)/2 + i*gSvcStep
		g.Nodes = append(g.Nodes, serviceNode(id, labels[id], "producer", px, y))
		pos["p"+id] = [2]int{px, y + gSvcH/2}
	}
	for i, t := range types {
		y := gTop + (inner-ht)/2 + i*gTypeStep
		name := full[t.ID]
		if name == "" {
			name = t.Label
		}
		g.Nodes = append(g.Nodes, gNode{ID: t.ID, Kind: "event", Side: "type", Label: webCut(t.Label, 32), Sub: webCut(t.Topic, 36),
			Title: fmt.Sprintf("%s on topic %s: its flows", name, t.Topic), Href: listHref("type", name),
			X: tx, Y: y, W: gTypeW, H: gTypeH, TX: tx + gTypeW/2, TY: y + 18, SY: y + 34})
		pos["t"+t.ID] = [2]int{tx, y + gTypeH/2}
	}
	for i, id := range consumers {
		y := gTop + (inner-hc)/2 + i*gSvcStep
		g.Nodes = append(g.Nodes, serviceNode(id, labels[id], "consumer", cx, y))
		pos["c"+id] = [2]int{cx, y + gSvcH/2}
	}
	curve := func(x1, y1, x2, y2 int) string {
		return fmt.Sprintf("M%d %dC%d %d %d %d %d %d", x1, y1, x1+70, y1, x2-70, y2, x2, y2)
	}
	for _, e := range c.Graph.Edges {
		ge := gEdge{From: e.From, To: e.To, Kind: e.Kind, Reacts: e.Reacts}
		switch e.Kind {
		case "publishes":
			a, b := pos["p"+e.From], pos["t"+e.To]
			ge.D = curve(a[0]+gSvcW, a[1], b[0]-7, b[1])
			ge.Title = fmt.Sprintf("%s publishes %s (%d seen)", labels[e.From], labels[e.To], e.Count)
		case "consumes":
			a, b := pos["t"+e.From], pos["c"+e.To]
			ge.D = curve(a[0]+gTypeW, a[1], b[0]-7, b[1])
			if e.Reacts {
				ge.Title = fmt.Sprintf("%s consumes %s and reacts to it (%d events caused)", labels[e.To], labels[e.From], e.Count)
			} else {
				ge.Title = fmt.Sprintf("%s reads the topic of %s and publishes nothing in reaction", labels[e.To], labels[e.From])
			}
		default:
			continue
		}
		g.Edges = append(g.Edges, ge)
	}
	g.Desc = fmt.Sprintf("Graph of %d event types: %d producing services on the left, the types in the middle, %d consuming groups on the right; the table below lists the same.",
		len(types), len(producers), len(consumers))
	return g
}

func serviceNode(id, label, side string, x, y int) gNode {
	return gNode{ID: id, Kind: "service", Side: side, Label: webCut(label, 26), Title: label + ": the flows it takes part in",
		Href: listHref("service", label), X: x, Y: y, W: gSvcW, H: gSvcH, TX: x + gSvcW/2, TY: y + 20}
}
