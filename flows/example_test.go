package flows_test

import (
	"context"
	"log"
	"net/http"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/flows"
	"github.com/choreokit/choreo/flows/sqlstore"
)

// The flow index as a library: index the cluster KAFKA_BROKERS names into
// an embedded store, and serve the API that choreo trace, catalog and
// flows stuck ask.
func ExampleNewIndexer() {
	ctx := context.Background()
	conn, err := connection.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	store, err := sqlstore.OpenSQLite(ctx, "/var/lib/choreo-flows")
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	ix, err := flows.NewIndexer(conn, store, flows.Topics(`^(orders|payments|shipments)$|\.(dlq|redrive|retry\..*)$`))
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		log.Fatal(http.ListenAndServe("127.0.0.1:8080", flows.NewHandler(flows.NewView(store), flows.WithIndexer(ix))))
	}()
	if err := ix.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// One flow's causal tree, from a running index.
func ExampleClient_Flow() {
	ctx := context.Background()
	cl, err := flows.NewClient("http://127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	matches, err := cl.Lookup(ctx, "order-42", 1) // a correlation id, an event id or a key
	if err != nil || len(matches) == 0 {
		log.Fatal("no such flow: ", err)
	}
	f, err := cl.Flow(ctx, matches[0].CorrelationID, flows.Thresholds{})
	if err != nil {
		log.Fatal(err)
	}
	for _, n := range f.Nodes {
		log.Printf("%*s%s by %s, +%.1fms", 2*n.Depth, "", n.Type, n.Source, n.SinceStartMs)
	}
}
