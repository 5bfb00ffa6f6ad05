package flows

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
	"go.yaml.in/yaml/v3"
)

// Catalog is the map of the system from live traffic: each event type with
// its topic, producers and consumers, schemas and rate; the services; and
// the same as a graph of nodes and edges.
type Catalog struct {
	GeneratedAt time.Time     `json:"generatedAt"`
	Types       []CatalogType `json:"types"`
	Services    []ServiceInfo `json:"services"`
	Graph       Graph         `json:"graph"`
	// Registry is true when registered schemas were looked up.
	Registry bool `json:"registry"`
}

// CatalogType is one event type on one topic.
type CatalogType struct {
	Type      string   `json:"type"`
	Topic     string   `json:"topic"`
	Producers []string `json:"producers"` // ce_source of its events
	Consumers []string `json:"consumers"` // groups subscribed to its topic
	// ReactedBy are the services that published events caused by events
	// of this type; Causes are the types whose events caused it.
	ReactedBy     []string  `json:"reactedBy"`
	Causes        []string  `json:"causes"`
	Terminal      bool      `json:"terminal"` // no service reacts to it: it ends flows
	Count         int64     `json:"count"`    // events in the index
	RatePerMinute float64   `json:"ratePerMinute"`
	FirstSeen     time.Time `json:"firstSeen"`
	LastSeen      time.Time `json:"lastSeen"`
	SchemaIDs     []int     `json:"schemaIds"` // seen in the values' wire prefix
	// Registered are the registry's versions under the subjects of the
	// schema ids seen and the names the subject strategies give (only
	// with a registry).
	Registered []SchemaVersion `json:"registered"`
	// Schema is the Avro schema of the latest schema id seen (only with a
	// registry, and only where asked for: the AsyncAPI document).
	Schema json.RawMessage `json:"schema,omitempty"`
}

// SchemaVersion is one registered version of a subject.
type SchemaVersion struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
	ID      int    `json:"id"`
	Seen    bool   `json:"seen"` // events with this schema id were seen
}

// Graph is the catalog as nodes (services and event types) and edges
// (publishes: service to type; consumes: type to the group subscribed to
// its topic, reacts when the group published events caused by it).
type Graph struct {
	Nodes []GraphNode `json:"nodes"`
	Edges []GraphEdge `json:"edges"`
}

// GraphNode is a service or an event type.
type GraphNode struct {
	ID    string `json:"id"`   // "service:<name>" or "type:<type>@<topic>"
	Kind  string `json:"kind"` // service or event
	Label string `json:"label"`
	Topic string `json:"topic,omitempty"`
}

// GraphEdge joins two nodes.
type GraphEdge struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Kind   string `json:"kind"` // publishes or consumes
	Reacts bool   `json:"reacts,omitempty"`
	Count  int64  `json:"count,omitempty"`
}

// RateWindow is the window of CatalogType.RatePerMinute: events in the
// last five minutes, per minute.
const RateWindow = 5 * time.Minute

// Catalog builds the catalog. With schemas, and a registry (WithRegistry),
// each type carries its Avro schema.
func (v *View) Catalog(ctx context.Context, schemas bool) (Catalog, error) {
	now := v.now()
	stats, err := v.store.TypeStats(ctx, now.Add(-RateWindow))
	if err != nil {
		return Catalog{}, err
	}
	groups, err := v.store.Groups(ctx)
	if err != nil {
		return Catalog{}, err
	}
	l, err := v.learn(ctx)
	if err != nil {
		return Catalog{}, err
	}
	reactions, err := v.store.Reactions(ctx)
	if err != nil {
		return Catalog{}, err
	}
	services, err := v.Services(ctx)
	if err != nil {
		return Catalog{}, err
	}
	c := Catalog{GeneratedAt: now.UTC(), Types: []CatalogType{}, Services: services}
	idx := map[string]int{}
	for _, st := range stats {
		if st.Type == "" {
			continue // no ce_type: not an event any service routes
		}
		k := st.Type + "\x00" + st.Topic
		i, ok := idx[k]
		if !ok {
			i = len(c.Types)
			idx[k] = i
			ct := CatalogType{Type: st.Type, Topic: st.Topic, Producers: []string{}, Consumers: []string{},
				ReactedBy: slices.Clone(l.reactors[st.Type]), Causes: slices.Clone(l.causes[st.Type]),
				Terminal: l.terminal[st.Type], SchemaIDs: []int{}, Registered: []SchemaVersion{},
				FirstSeen: st.FirstSeen, LastSeen: st.LastSeen}
			for _, g := range groups {
				if g.Subscribes(st.Topic) {
					ct.Consumers = append(ct.Consumers, g.Name)
				}
			}
			if ct.ReactedBy == nil {
				ct.ReactedBy = []string{}
			}
			if ct.Causes == nil {
				ct.Causes = []string{}
			}
			sort.Strings(ct.ReactedBy)
			sort.Strings(ct.Causes)
			c.Types = append(c.Types, ct)
		}
		ct := &c.Types[i]
		ct.Count += st.Count
		ct.RatePerMinute += float64(st.Recent) / RateWindow.Minutes()
		if st.FirstSeen.Before(ct.FirstSeen) {
			ct.FirstSeen = st.FirstSeen
		}
		if st.LastSeen.After(ct.LastSeen) {
			ct.LastSeen = st.LastSeen
		}
		if st.Source != "" && !slices.Contains(ct.Producers, st.Source) {
			ct.Producers = append(ct.Producers, st.Source)
			sort.Strings(ct.Producers)
		}
		if st.SchemaID > 0 && !slices.Contains(ct.SchemaIDs, st.SchemaID) {
			ct.SchemaIDs = append(ct.SchemaIDs, st.SchemaID)
			slices.Sort(ct.SchemaIDs)
		}
	}
	if v.registry != nil {
		if err := c.Enrich(ctx, v.registry.Client(), schemas); err != nil {
			return Catalog{}, err
		}
	}
	c.Graph = graph(c.Types, reactions)
	return c, nil
}

// graph draws the catalog's types as nodes and edges.
func graph(types []CatalogType, reactions []Reaction) Graph {
	g := Graph{Nodes: []GraphNode{}, Edges: []GraphEdge{}}
	have := map[string]bool{}
	node := func(n GraphNode) {
		if !have[n.ID] {
			have[n.ID] = true
			g.Nodes = append(g.Nodes, n)
		}
	}
	for _, t := range types {
		tid := "type:" + t.Type + "@" + t.Topic
		node(GraphNode{ID: tid, Kind: "event", Label: shortType(t.Type), Topic: t.Topic})
		for _, p := range t.Producers {
			node(GraphNode{ID: "service:" + p, Kind: "service", Label: p})
			g.Edges = append(g.Edges, GraphEdge{From: "service:" + p, To: tid, Kind: "publishes", Count: t.Count})
		}
		for _, c := range t.Consumers {
			node(GraphNode{ID: "service:" + c, Kind: "service", Label: c})
			e := GraphEdge{From: tid, To: "service:" + c, Kind: "consumes"}
			for _, r := range reactions {
				if r.Cause == t.Type && r.Source == c {
					e.Reacts = true
					e.Count += r.Count
				}
			}
			g.Edges = append(g.Edges, e)
		}
	}
	sort.SliceStable(g.Nodes, func(i, j int) bool {
		if g.Nodes[i].Kind != g.Nodes[j].Kind {
			return g.Nodes[i].Kind > g.Nodes[j].Kind // services first
		}
		return g.Nodes[i].ID < g.Nodes[j].ID
	})
	return g
}

// Enrich looks up in the registry the versions registered for each type:
// under the subjects its seen schema ids are registered under, and the
// subjects the naming strategies give (<topic>-value, <topic>-<type>,
// <type>); with schemas, it adds the Avro schema of the latest id seen.
// A registry that cannot be reached is an error; a subject or id it does
// not know is not.
func (c *Catalog) Enrich(ctx context.Context, cl *sr.Client, schemas bool) error {
	subjects, err := cl.Subjects(ctx)
	if err != nil {
		return fmt.Errorf("flows: catalog: registry subjects: %w", err)
	}
	known := map[string]bool{}
	for _, s := range subjects {
		known[s] = true
	}
	versions := map[string][]sr.SubjectSchema{}
	subjectVersions := func(subject string) ([]sr.SubjectSchema, error) {
		if v, ok := versions[subject]; ok {
			return v, nil
		}
		all, err := cl.Schemas(ctx, subject)
		if err != nil {
			if notFound(err) {
				versions[subject] = nil
				return nil, nil
			}
			return nil, fmt.Errorf("flows: catalog: registry subject %s: %w", subject, err)
		}
		versions[subject] = all
		return all, nil
	}
	for i := range c.Types {
		t := &c.Types[i]
		subs := map[string]bool{}
		for _, id := range t.SchemaIDs {
			svs, err := cl.SchemaVersionsByID(ctx, id)
			if err != nil && !notFound(err) {
				return fmt.Errorf("flows: catalog: registry schema %d: %w", id, err)
			}
			for _, sv := range svs {
				subs[sv.Subject] = true
			}
		}
		for _, s := range []string{t.Topic + "-value", t.Topic + "-" + t.Type, t.Type} {
			if known[s] {
				subs[s] = true
			}
		}
		t.Registered = []SchemaVersion{}
		var latest sr.SubjectSchema
		for _, s := range setKeys(subs) {
			all, err := subjectVersions(s)
			if err != nil {
				return err
			}
			for _, ss := range all {
				if name := avroName(ss.Schema.Schema); name != "" && name != t.Type {
					continue // another type's version under a topic's one subject
				}
				seen := slices.Contains(t.SchemaIDs, ss.ID)
				t.Registered = append(t.Registered, SchemaVersion{Subject: ss.Subject, Version: ss.Version, ID: ss.ID, Seen: seen})
				if seen && ss.ID >= latest.ID {
					latest = ss
				}
			}
		}
		if schemas {
			if latest.ID == 0 && len(t.SchemaIDs) > 0 {
				if s, err := cl.SchemaByID(ctx, t.SchemaIDs[len(t.SchemaIDs)-1]); err == nil {
					latest.Schema = s
				}
			}
			if latest.Schema.Schema != "" && json.Valid([]byte(latest.Schema.Schema)) {
				var buf bytes.Buffer
				if json.Compact(&buf, []byte(latest.Schema.Schema)) == nil {
					t.Schema = json.RawMessage(buf.Bytes())
				}
			}
		}
	}
	c.Registry = true
	return nil
}

// avroName returns the full name of a named Avro schema in JSON, or "".
func avroName(text string) string {
	var s struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	}
	if json.Unmarshal([]byte(text), &s) != nil || s.Name == "" {
		return ""
	}
	if strings.Contains(s.Name, ".") || s.Namespace == "" {
		return s.Name
	}
	return s.Namespace + "." + s.Name
}

// notFound reports whether err is the registry's 404.
func notFound(err error) bool {
	var re *sr.ResponseError
	return errors.As(err, &re) && (re.StatusCode == 404 || re.ErrorCode == 40401 || re.ErrorCode == 40402 || re.ErrorCode == 40403)
}

// AvroSchemaFormat is the AsyncAPI schemaFormat of an Avro 1.9.0 schema.
const AvroSchemaFormat = "application/vnd.apache.avro;version=1.9.0"

// AsyncAPI is an AsyncAPI 3.0.0 document, as AsyncAPIDocument builds it.
// Encode it with encoding/json, or as YAML with YAML.
type AsyncAPI struct {
	AsyncAPI           string                    `json:"asyncapi"`
	ID                 string                    `json:"id,omitempty"`
	Info               AsyncInfo                 `json:"info"`
	DefaultContentType string                    `json:"defaultContentType,omitempty"`
	Channels           map[string]AsyncChannel   `json:"channels"`
	Operations         map[string]AsyncOperation `json:"operations"`
	Components         AsyncComponents           `json:"components"`
}

// AsyncInfo is the document's info object.
type AsyncInfo struct {
	Title       string `json:"title"`
	Version     string `json:"version"`
	Description string `json:"description,omitempty"`
}

// AsyncRef is a reference object.
type AsyncRef struct {
	Ref string `json:"$ref"`
}

// AsyncChannel is a channel: one Kafka topic.
type AsyncChannel struct {
	Address     string              `json:"address"`
	Title       string              `json:"title,omitempty"`
	Description string              `json:"description,omitempty"`
	Messages    map[string]AsyncRef `json:"messages"`
}

// AsyncOperation is a service sending to or receiving from a channel.
type AsyncOperation struct {
	Action      string     `json:"action"` // send or receive
	Channel     AsyncRef   `json:"channel"`
	Title       string     `json:"title,omitempty"`
	Summary     string     `json:"summary,omitempty"`
	Description string     `json:"description,omitempty"`
	Messages    []AsyncRef `json:"messages"`
}

// AsyncComponents holds the messages.
type AsyncComponents struct {
	Messages map[string]AsyncMessage `json:"messages"`
}

// AsyncMessage is an event type.
type AsyncMessage struct {
	Name          string              `json:"name"`
	Title         string              `json:"title,omitempty"`
	Summary       string              `json:"summary,omitempty"`
	Description   string              `json:"description,omitempty"`
	ContentType   string              `json:"contentType"`
	Headers       map[string]any      `json:"headers,omitempty"`
	CorrelationID *AsyncCorrelationID `json:"correlationId,omitempty"`
	Payload       *AsyncSchema        `json:"payload,omitempty"`
}

// AsyncCorrelationID says where the correlation id is.
type AsyncCorrelationID struct {
	Description string `json:"description,omitempty"`
	Location    string `json:"location"`
}

// AsyncSchema is a multi-format schema object: an Avro schema.
type AsyncSchema struct {
	SchemaFormat string          `json:"schemaFormat"`
	Schema       json.RawMessage `json:"schema"`
}

// idChars are the characters AsyncAPI allows in component, channel and
// operation ids.
var idChars = regexp.MustCompile(`[^a-zA-Z0-9._-]`)

func asyncID(s string) string { return idChars.ReplaceAllString(s, "_") }

// ceHeaders is the JSON Schema of the CloudEvents headers every choreo
// event has.
func ceHeaders(eventType string) map[string]any {
	str := func(desc string) map[string]any { return map[string]any{"type": "string", "description": desc} }
	return map[string]any{
		"type":     "object",
		"required": []string{"ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "ce_correlationid"},
		"properties": map[string]any{
			"ce_specversion":   map[string]any{"type": "string", "const": "1.0"},
			"ce_id":            str("the event id: a UUIDv7, or a UUIDv5 derived from the event handled when published from a handler"),
			"ce_type":          map[string]any{"type": "string", "const": eventType},
			"ce_source":        str("the producing service"),
			"ce_time":          map[string]any{"type": "string", "format": "date-time"},
			"ce_correlationid": str("the business transaction"),
			"ce_causationid":   str("the id of the event whose handling produced this one"),
			"content-type":     map[string]any{"type": "string", "const": "application/avro"},
			"traceparent":      str("W3C trace context"),
		},
	}
}

// AsyncAPIDocument builds the AsyncAPI 3.0.0 document of the catalog:
// a channel per topic (address = the topic), a message per event type (in
// components, with its CloudEvents headers and, where the registry gave
// it, its Avro schema as payload), a send operation per producer and
// channel and a receive operation per consumer group and channel.
func (c *Catalog) AsyncAPIDocument(title, version string) *AsyncAPI {
	if title == "" {
		title = "Event catalog"
	}
	if version == "" {
		version = c.GeneratedAt.UTC().Format("2006.01.02-150405")
	}
	d := &AsyncAPI{
		AsyncAPI: "3.0.0",
		Info: AsyncInfo{Title: title, Version: version, Description: fmt.Sprintf(
			"Generated by choreo from live traffic on %s: the event types seen on each topic, who publishes them (ce_source) and which consumer groups read them.",
			c.GeneratedAt.UTC().Format(time.RFC3339))},
		DefaultContentType: "application/avro",
		Channels:           map[string]AsyncChannel{},
		Operations:         map[string]AsyncOperation{},
		Components:         AsyncComponents{Messages: map[string]AsyncMessage{}},
	}
	type opKey struct{ action, who, topic string }
	ops := map[opKey][]AsyncRef{}
	var opOrder []opKey
	for _, t := range c.Types {
		chID, msgID := asyncID(t.Topic), asyncID(t.Type)
		ch, ok := d.Channels[chID]
		if !ok {
			ch = AsyncChannel{Address: t.Topic, Title: t.Topic, Messages: map[string]AsyncRef{}}
		}
		ch.Messages[msgID] = AsyncRef{Ref: "#/components/messages/" + msgID}
		d.Channels[chID] = ch
		if _, ok := d.Components.Messages[msgID]; !ok {
			m := AsyncMessage{Name: t.Type, Title: shortType(t.Type), ContentType: "application/avro",
				Summary: fmt.Sprintf("%s on %s: %d seen, last at %s", t.Type, t.Topic, t.Count, t.LastSeen.UTC().Format(time.RFC3339)),
				Headers: ceHeaders(t.Type),
				CorrelationID: &AsyncCorrelationID{Description: "the business transaction (choreo trace takes it)",
					Location: "$message.header#/ce_correlationid"}}
			if len(t.Schema) > 0 {
				m.Payload = &AsyncSchema{SchemaFormat: AvroSchemaFormat, Schema: t.Schema}
			} else {
				m.Description = "The Avro schema was not available (run with a schema registry: --registry)."
			}
			d.Components.Messages[msgID] = m
		}
		msgRef := AsyncRef{Ref: "#/channels/" + chID + "/messages/" + msgID}
		for _, p := range t.Producers {
			k := opKey{"send", p, t.Topic}
			if _, ok := ops[k]; !ok {
				opOrder = append(opOrder, k)
			}
			ops[k] = append(ops[k], msgRef)
		}
		for _, g := range t.Consumers {
			k := opKey{"receive", g, t.Topic}
			if _, ok := ops[k]; !ok {
				opOrder = append(opOrder, k)
			}
			ops[k] = append(ops[k], msgRef)
		}
	}
	for _, k := range opOrder {
		id := asyncID(k.who + "." + k.action + "." + k.topic)
		what := "publishes to"
		if k.action == "receive" {
			what = "consumes (consumer group) from"
		}
		d.Operations[id] = AsyncOperation{Action: k.action, Channel: AsyncRef{Ref: "#/channels/" + asyncID(k.topic)},
			Title: k.who + " " + k.action + "s on " + k.topic, Summary: k.who + " " + what + " " + k.topic, Messages: ops[k]}
	}
	return d
}

// JSON returns the document as indented JSON.
func (d *AsyncAPI) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("flows: asyncapi: %w", err)
	}
	return append(b, '\n'), nil
}

// YAML returns the document as YAML, its keys in the order of the JSON
// encoding.
func (d *AsyncAPI) YAML() ([]byte, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("flows: asyncapi: %w", err)
	}
	var n yaml.Node // JSON is YAML: decoding keeps the key order
	if err := yaml.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("flows: asyncapi: %w", err)
	}
	plainStyle(&n)
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, fmt.Errorf("flows: asyncapi: %w", err)
	}
	return out.Bytes(), nil
}

// plainStyle drops the flow style and quotes a JSON parse leaves on the
// nodes, so the YAML reads as YAML (the encoder quotes where it must).
func plainStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		plainStyle(c)
	}
}
