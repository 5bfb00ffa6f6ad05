// Package reliability is choreo's fault suite: each test runs services on
// Kafka, injects one fault (a consumer killed with SIGKILL, a rebalance
// storm, a broker restart, a schema registry or PostgreSQL outage, a storm
// of poison records or of duplicates, a large backlog behind a slow
// handler), and checks at the end that every event sent has its effect
// exactly once and that nothing was lost. Each reports its figures (events
// in, effects, duplicates, lost, time to recover); with RELIABILITY_REPORT
// set to a path, the package writes them there as a Markdown table, which
// docs/RELIABILITY.md quotes.
//
// The package has no code outside its tests. It runs in two sizes:
//
//   - short (the default, part of go test ./...): the embedded broker
//     unless KAFKA_BROKERS is set, seconds-long faults, a few thousand
//     events;
//   - full (RELIABILITY_FULL=1, set by .ci/run against Apache Kafka and
//     PostgreSQL started by deploy/local): minute-long faults, tens of
//     thousands of events.
//
// Tests that need PostgreSQL (effects exactly once across processes) skip
// with "DATABASE_URL not set" when it is unset. Faults that stop a server
// (Kafka, PostgreSQL) touch only a server started by deploy/local's
// scripts, found by the script's own status command on the same port.
package reliability
