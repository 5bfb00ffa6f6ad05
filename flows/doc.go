// Package flows sees the choreography: it indexes the metadata of every
// choreo event on the cluster (never the payload) and answers what a
// conductor would have known: one business transaction's causal tree
// across services, who has consumed each event and who has not, where it
// was retried or dead-lettered, the catalog of event types with their
// producers and consumers, and the flows that started and did not finish.
//
// # Indexing
//
// An Indexer reads every topic matching Topics (default: every topic but
// internal ones, including the services' retry, dead-letter and redrive
// topics) in a consumer group of its own (DefaultGroup, "choreo-flows"),
// so the services do no work for it. For each record it keeps the
// CloudEvents headers (ce_id, ce_type, ce_source, ce_time,
// ce_correlationid, ce_causationid), the record's coordinates and key,
// the schema id of the value's wire prefix, and for the toolkit's topics
// (recognised by name: <group>.retry.<n>-<delay>, <group>.dlq,
// <group>.redrive) who failed the event, why and when. Records without
// ce_id are counted and skipped (dead letters excepted: they are indexed
// outside any flow). It commits its offsets only after its Store has the
// records; writes are idempotent, so a restart indexes again what was not
// committed, with no duplicates.
//
// Every RefreshInterval it reads the other consumer groups' subscriptions
// and committed offsets (kadm ListGroups, DescribeGroups, FetchOffsets): a
// group has consumed an event when its committed offset on the event's
// partition is past the event's offset.
//
// # Answering
//
// A View answers from the Store: flows with filters and a status, one
// flow's causal tree and lanes, an event, the catalog (also as an
// AsyncAPI 3.0 document), the stuck flows with their reasons, a service's
// dead letters. Handler serves those answers as a JSON API and Prometheus
// metrics (StuckMetric); Client asks a running one. The stores are in
// package flows/sqlstore: embedded SQLite, or PostgreSQL.
//
// # Stuck flows
//
// A flow is stuck when its last event is not of a terminal type and is
// older than the threshold (stalled), when a group subscribed to one of
// its events' topics has not consumed it within the threshold
// (unconsumed), or when one of its events was dead-lettered and not
// redriven since. Terminal types are learned from the traffic: the types
// no service reacts to (never the causation of another event). The
// threshold is learned from the durations of finished flows: their p99
// times 3, at least MinAfter. Both can be set instead (Thresholds).
package flows
