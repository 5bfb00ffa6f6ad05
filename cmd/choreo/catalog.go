package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/choreokit/choreo/flows"
)

// Output formats of choreo catalog beyond the shared ones.
const (
	outputAsyncAPI     = "asyncapi"      // AsyncAPI 3.0.0, YAML
	outputAsyncAPIJSON = "asyncapi-json" // AsyncAPI 3.0.0, JSON
)

var catalogFormats = append(append([]string(nil), outputFormats...), outputAsyncAPI, outputAsyncAPIJSON)

// catalogOutput is --output of choreo catalog: the shared formats and
// AsyncAPI.
type catalogOutput struct{ format string }

func (o *catalogOutput) String() string { return o.format }
func (o *catalogOutput) Type() string   { return "format" }

// Set accepts table, json, jsonl, asyncapi or asyncapi-json.
func (o *catalogOutput) Set(s string) error {
	for _, f := range catalogFormats {
		if s == f {
			o.format = s
			return nil
		}
	}
	return fmt.Errorf("want %s", orList(catalogFormats))
}

func newCatalogCmd() *cobra.Command {
	var fl *flowsClientFlag
	var reg *registryFlags
	out := &catalogOutput{format: outputTable}
	var title, version string
	cmd := &cobra.Command{
		Use:   "catalog",
		Short: "List the event types from live traffic: topics, producers, consumers, schemas (or an AsyncAPI document)",
		Long: `Ask a running 'choreo flows' for the map of the system as the traffic shows
it: each event type with its topic, its producers (ce_source), its
consumers (the consumer groups subscribed to its topic, from the brokers),
the schema ids seen in its records and the versions registered for it,
its rate over the last five minutes and when it was last seen.

With --registry (or SCHEMA_REGISTRY_URL), the registered versions and the
Avro schemas are looked up here; otherwise the index's own registry, if
it has one, gives them. --output asyncapi writes an AsyncAPI 3.0.0
document (YAML; asyncapi-json for JSON): a channel per topic, a send
operation per producer, a receive operation per consumer group, and a
message per event type with its Avro schema as payload.`,
		Args: usageArgs(cobra.NoArgs, func(args []string) string {
			return fmt.Sprintf("unexpected argument %q", args[0])
		}),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := fl.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			w := cmd.OutOrStdout()
			asyncapi := out.format == outputAsyncAPI || out.format == outputAsyncAPIJSON
			local := strings.TrimSpace(reg.url) != ""
			if asyncapi && !local && title == "" && version == "" {
				format := "yaml"
				if out.format == outputAsyncAPIJSON {
					format = "json"
				}
				b, err := cl.AsyncAPI(ctx, format)
				if err != nil {
					return flowsError(cl, err)
				}
				_, err = w.Write(b)
				return err
			}
			cat, err := cl.Catalog(ctx)
			if err != nil {
				return flowsError(cl, err)
			}
			if local {
				r, err := reg.client()
				if err != nil {
					return err
				}
				if err := cat.Enrich(ctx, r.Client(), asyncapi); err != nil {
					return err
				}
			}
			if asyncapi {
				doc := cat.AsyncAPIDocument(title, version)
				var b []byte
				if out.format == outputAsyncAPIJSON {
					b, err = doc.JSON()
				} else {
					b, err = doc.YAML()
				}
				if err != nil {
					return err
				}
				_, err = w.Write(b)
				return err
			}
			o := &outputFlag{format: out.format}
			switch o.format {
			case outputJSON: // the whole catalog: types, services, graph
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(cat)
			case outputJSONL: // a type a line
				return writeOutput(w, o, nil, cat.Types, nil)
			}
			if len(cat.Types) == 0 {
				fmt.Fprintln(w, "No events indexed yet.")
				return nil
			}
			now := cat.GeneratedAt
			return writeOutput(w, o, []string{"TYPE", "TOPIC", "PRODUCERS", "CONSUMERS", "SCHEMAS", "RATE/MIN", "COUNT", "LAST SEEN"}, cat.Types,
				func(t flows.CatalogType) []string {
					name := t.Type
					if t.Terminal {
						name += " (terminal)"
					}
					return []string{name, t.Topic, list(t.Producers), list(t.Consumers), schemasText(t, cat.Registry),
						strconv.FormatFloat(t.RatePerMinute, 'f', 1, 64), strconv.FormatInt(t.Count, 10), ago(now, t.LastSeen)}
				})
		},
	}
	fl = addFlowsFlag(cmd)
	reg = addRegistryFlag(cmd)
	cmd.Flags().VarP(out, "output", "o", "output format: "+orList(catalogFormats))
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(catalogFormats, cobra.ShellCompDirectiveNoFileComp))
	cmd.Flags().StringVar(&title, "title", "", "AsyncAPI info.title (default: Event catalog)")
	cmd.Flags().StringVar(&version, "version", "", "AsyncAPI info.version (default: the generation time)")
	return cmd
}

func list(l []string) string {
	if len(l) == 0 {
		return "-"
	}
	return strings.Join(l, ", ")
}

// schemasText writes the ids seen and the versions registered: "id 3
// (orders-value v2); v1".
func schemasText(t flows.CatalogType, registry bool) string {
	var seen []string
	for _, id := range t.SchemaIDs {
		s := "id " + strconv.Itoa(id)
		var vs []string
		for _, r := range t.Registered {
			if r.ID == id {
				vs = append(vs, fmt.Sprintf("%s v%d", r.Subject, r.Version))
			}
		}
		if len(vs) > 0 {
			s += " (" + strings.Join(vs, ", ") + ")"
		}
		seen = append(seen, s)
	}
	out := list(seen)
	if !registry {
		return out
	}
	var other []string
	for _, r := range t.Registered {
		if !r.Seen {
			other = append(other, fmt.Sprintf("v%d", r.Version))
		}
	}
	sort.Strings(other)
	if len(other) > 0 {
		out += "; also registered " + strings.Join(other, ", ")
	}
	return out
}
