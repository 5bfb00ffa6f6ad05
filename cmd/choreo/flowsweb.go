package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/flows"
)

// The web page of `choreo flows` (package flows' Page), mounted at "/"
// beside the API, and the redrive it runs with --allow-redrive.

// allowRedriveUsage is the help of --allow-redrive.
const allowRedriveUsage = "let the web page redrive a dead letter (as 'choreo dlq redrive SERVICE P:O --yes'; asks to confirm; same-origin POSTs only; needs --registry)"

// flowsPage returns the page over view. A request for "/" with no query
// from a client that does not take HTML (curl) gets the list of the API's
// routes instead.
func flowsPage(view *flows.View, o flowsOptions, conn connection.Config, log *slog.Logger) http.Handler {
	opts := []flows.PageOption{flows.PageLogger(log)}
	if o.allowRedrive {
		opts = append(opts, flows.WithRedrive(pageRedrive(conn, o.registryURL)))
	}
	page := flows.NewPage(view, opts...)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" && r.URL.RawQuery == "" && r.Method == http.MethodGet && !strings.Contains(r.Header.Get("Accept"), "text/html") {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprint(w, flowsIndexText)
			return
		}
		page.ServeHTTP(w, r)
	})
}

// pageRedrive redrives one dead letter as `choreo dlq redrive GROUP
// PARTITION:OFFSET --yes` does (the redrive log, the loop guard, skipping
// what was redriven before), reaching the cluster as the index does and
// the registry at registryURL. Its report is the command's output.
func pageRedrive(conn connection.Config, registryURL string) flows.RedriveFunc {
	return func(ctx context.Context, group string, partition int32, offset int64) (string, error) {
		var out strings.Builder
		r := &redrive{
			f:    &dlqFlags{kafka: &kafkaFlags{brokers: strings.Join(conn.Brokers, ",")}, registry: &registryFlags{url: registryURL}},
			t:    target{topic: dlq.Topic(group), group: group},
			only: map[coord]bool{{part: partition, off: offset}: true},
			o:    redriveOptions{yes: true, maxRedrives: 3},
			// the report reads as the command's does in a pipe
			format: outputTable, stdin: strings.NewReader(""), stdout: &out, stderr: &out,
		}
		err := r.run(ctx)
		return out.String(), err
	}
}
