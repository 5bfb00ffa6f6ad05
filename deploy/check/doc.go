// Package check cross-checks the deployment files of choreo against its
// code. No Docker or Kubernetes runs where choreo is built, so these files
// are checked by tests instead: `go test ./...` in deploy/check parses
// docker-compose.yml, deploy/Dockerfile, deploy/prometheus/prometheus.yml
// and every manifest under deploy/k8s, and compares what they say with what
// the code does:
//
//   - Facts are read from the code, not restated: the example services'
//     consumer groups, source and output topics, HTTP ports and the
//     environment variables their programs read are found by parsing
//     examples/ with go/parser (and go list for the packages each program
//     builds with); the retry and dead-letter topics, their partitions and
//     max.message.bytes are what a real consumer.Consumer says it needs;
//     metric and label names are scraped from tracing.PrometheusHandler after
//     recording every instrument; the consumer's shutdown timeout is read
//     from consumer/options.go; the CLI's commands and flags from
//     cmd/choreo.
//   - Kubernetes manifests are decoded strictly (unknown or duplicate fields
//     fail) into the official types (k8s.io/api apps/v1 and core/v1, the
//     Prometheus Operator's monitoring/v1) or, for Strimzi and KEDA, into
//     small typed structs of the fields used here; compose files through
//     compose-go (validated against the Compose specification); Prometheus'
//     configuration with Prometheus' own loader; rules and dashboard queries
//     with Prometheus' rule and PromQL parsers.
//
// Each check is a function from the loaded Files to a list of problems, so
// that the tests can also break a value and see the check fail.
//
// This is a module of its own so that the main module does not depend on
// k8s.io/api, Prometheus or compose-go.
package check
