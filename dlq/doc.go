// Package dlq is choreo's dead-letter path: the envelope a record that a
// service gave up on is kept in, the Writer that puts it on the service's
// dead-letter topic, and the reader side (Decode, Replay, View) that
// operators and the CLI use to inspect and replay it.
//
// The consumer runtime decides when to dead-letter (poison bytes, a
// permanent error, exhausted retries, a panic …); it builds the envelope
// with New and writes it with Writer.Write, and commits past the record
// only once Write returned nil.
//
// # Topics
//
// Each consuming service (consumer group) has one dead-letter topic,
// Topic(group) = "<group>.dlq": an event that poisons one service may be
// fine for the others, and a replay must reach only the service that
// failed. The name says whose dead letters they are and what the topic is
// for. TopicFor checks that the name is a legal topic name.
//
// The topic is created like any other (by an operator, a deployment, or
// the broker's auto-creation; the consumer runtime creates its own). A
// dead letter is larger than its original by the envelope's overhead:
// the error message (up to 16 KiB), the copies of a few headers, a few
// hundred bytes of fields. Give the writer the limit its records must
// keep to with MaxRecordBytes: the smaller of the topic's
// max.message.bytes and the client's kgo.ProducerBatchMaxBytes. A dead
// letter that would be larger is then cut to fit (the original value
// keeps its first bytes, the largest header values are cut) and says so
// in the envelope, with the size and SHA-256 of the whole value: it can
// always be written, but not replayed. Without MaxRecordBytes, a record
// over the topic's limit fails Write every time, and a caller that keeps
// the original uncommitted until Write succeeds holds its partition.
//
// # The envelope
//
// The record value is Avro record choreo.dlq.DeadLetter (deadletter.avsc,
// returned by Schema) in the Confluent wire format, its schema registered
// under the topic's subject ("<group>.dlq-value") like any other. It holds:
//
//	original          the record whole: topic, partition, offset, timestamp,
//	                  key, value and headers (in order, repeats kept;
//	                  null key, value and header values stay null); the
//	                  value's size and SHA-256; value_truncated and
//	                  headers_truncated when it was cut to fit
//	error             kind (a choreo.ErrorKind), message (cut at 16 KiB),
//	                  type (the Go type of the cause, as %T prints it)
//	attempts          delivery attempts made, across retry tiers
//	first_failure     when handling first failed
//	last_failure      when handling last failed
//	service, group    who failed
//	event_id          the ce_id header (nullable)
//	event_type        the ce_type header (nullable)
//	correlation_id    the ce_correlationid header (nullable)
//	dead_lettered_at  when the dead letter was written
//
// Fields that may be missing in later versions have defaults, and the
// error kind is a string, not an enum, so readers of this version read
// envelopes of the next one (Decode resolves the writer schema against
// this one).
//
// # The record
//
// The dead-letter record has the original key, so a key's dead letters
// stay together and in order, and these headers beside the value, numbers
// in decimal text:
//
//	choreo-original-topic      the original topic
//	choreo-original-partition  its partition
//	choreo-original-offset     its offset
//	choreo-error-kind          the error kind
//	choreo-error-message       the message on one line (line breaks and tabs
//	                           as spaces), cut at 1 KiB on a UTF-8 boundary
//	choreo-attempt             the attempts
//	content-type               application/avro (of the envelope)
//	ce_id, ce_type, ce_correlationid, traceparent, tracestate
//	                           copied from the original when it has them,
//	                           so tools and traces see them. ce_type is the
//	                           original event's type, not the envelope's.
//	choreo-redrive-count, choreo-replayed-from
//	                           copied too, for an original that was a
//	                           redrive: how many redrives it had had, and
//	                           the dead letter it was redriven from
//
// Peek reads these headers without a registry.
//
// Redact names headers (such as "authorization") whose values are replaced
// by "[redacted]" in the envelope and in the copied headers.
//
// # Delivery and duplicates
//
// Write returns once the broker acknowledged the record; with an
// idempotent client producing with acks=all (franz-go's defaults), an
// acknowledged dead letter is on every in-sync replica. Every failure is
// returned, so the caller can keep the original uncommitted and retry.
//
// A retry can duplicate: if the broker stored the record but the
// acknowledgement was lost (a timeout, a restart), writing again stores a
// second, identical dead letter. The idempotent producer removes
// duplicates only within one producer session, and a consumer that
// restarts before committing dead-letters the record again anyway.
// Readers should therefore treat dead letters with the same original
// (topic, partition, offset) and the same choreo-redrive-count as one: a
// redriven record that fails again is a new failure of the same original,
// whose dead letter has a higher count.
//
// # Reading and redriving
//
// Decode reads and checks a dead-letter record; anything that is not a
// valid envelope fails with ErrInvalidEnvelope and never panics. Peek
// reads the readable headers only. View gives a JSON-ready picture of a
// dead letter, with the original value decoded when the registry knows
// its schema.
//
// Replay rebuilds the original record for the failing service's redrive
// topic, RedriveTopic(group) = "<group>.redrive": the consumer runtime
// reads it always and routes its records by their original topic, and no
// other service reads it, so a redrive reaches only the service that
// failed. The original ce_id is kept, so that service skips an event it
// handled meanwhile. A choreo-redrive-count header counts the redrives
// (the loop guard of `choreo dlq redrive`), and choreo-replayed-from names
// the dead letter; a redrive that fails again is dead-lettered again with
// both. ReplayTo rebuilds it for any topic, for a deliberate republish.
// `choreo dlq redrive` records each redrive in a compacted topic,
// RedriveLog(topic) = "<dlq topic>.redrives".
package dlq
