// Package shippingsvc is the shipping service of the example shop: for
// every PaymentAuthorized it schedules a shipment (ShipmentScheduled), and
// for every shipment scheduled it dispatches the parcel
// (ShipmentDispatched), both on topic shipments.
//
// The service reacts to its own event: scheduling and dispatching are two
// steps with a record between them, as they would be with a warehouse in
// between (here the parcel leaves at once). Each step is a handler that
// may fail and be retried on its own.
//
// Its only effects are the events it publishes, and inside a handler an
// event's id is derived from the handled event's (see package producer).
// Handling an event again, after a restart made the memory idempotency
// store forget it, publishes the same events under the same ids, and the
// services downstream skip them: no database is needed for exactly-once
// effects here. The shipment id and tracking number are derived from the
// order id for the same reason: a repeated step must say the same thing.
package shippingsvc

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/examples/events"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
)

// Group is the service's consumer group: its identity, the scope of its
// idempotency marks, and the prefix of its retry and dead-letter topics.
const Group = "shipping-service"

// Config is what the service needs.
type Config struct {
	Conn     connection.Config // Kafka
	Registry *schema.Registry  // schemas
	Logger   *slog.Logger      // nil: slog.Default()

	// ConsumerOptions and ProducerOptions are added to the service's own
	// (the demo shortens the retry delays with them).
	ConsumerOptions []consumer.Option
	ProducerOptions []producer.Option
}

// Service is the shipping service. Make one with New and call Run once.
type Service struct {
	log  *slog.Logger
	prod *producer.Producer
	cons *consumer.Consumer
}

// New connects the service and checks its schemas; it creates the
// shipments topic if it is missing.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := events.CreateTopics(ctx, cfg.Conn, events.TopicShipments); err != nil {
		return nil, fmt.Errorf("shipping service: %w", err)
	}
	prod, err := producer.New(ctx, cfg.Conn, cfg.Registry, append([]producer.Option{
		producer.Source(Group),
		// Two event types on one topic: a registry subject per type.
		producer.Subjects(schema.TopicRecordNameStrategy),
		producer.Require(events.TopicShipments, events.ShipmentScheduled{}, events.ShipmentDispatched{}),
	}, cfg.ProducerOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("shipping service: %w", err)
	}
	cons, err := consumer.New(cfg.Conn, cfg.Registry, Group, append([]consumer.Option{
		consumer.Logger(cfg.Logger),
		// A member that dies without leaving the group holds its
		// partitions until its session times out: 10s, not Kafka's 45s.
		consumer.ClientOptions(kgo.SessionTimeout(10*time.Second), kgo.HeartbeatInterval(time.Second)),
	}, cfg.ConsumerOptions...)...)
	if err != nil {
		_ = prod.Close(ctx)
		return nil, fmt.Errorf("shipping service: %w", err)
	}
	s := &Service{log: cfg.Logger, prod: prod, cons: cons}
	consumer.Handle(cons, events.TopicPayments, s.paymentAuthorized)
	consumer.Handle(cons, events.TopicShipments, s.shipmentScheduled)
	return s, nil
}

// Consumer returns the service's consumer, for probes (Live, CheckReady)
// and statistics.
func (s *Service) Consumer() *consumer.Consumer { return s.cons }

// Run ships paid orders until ctx is done, then waits for the handlers
// running (at most the consumer's ShutdownTimeout, 30s by default) and
// commits. It returns nil after a shutdown asked for by ctx. Call Close
// after it.
func (s *Service) Run(ctx context.Context) error { return s.cons.Run(ctx) }

// Close flushes and closes the producer, waiting at most until ctx ends.
func (s *Service) Close(ctx context.Context) error {
	if err := s.prod.Close(ctx); err != nil {
		return fmt.Errorf("shipping service: close producer: %w", err)
	}
	return nil
}

// carriers are the carriers shipments go with.
var carriers = []string{"DHL", "UPS", "PostNL"}

// paymentAuthorized schedules the paid order's shipment. PaymentDeclined,
// the other event on topic payments, has no handler here: the consumer
// skips it (and counts it).
func (s *Service) paymentAuthorized(ctx context.Context, ev consumer.Event[events.PaymentAuthorized]) error {
	id := ev.Data.OrderID
	h := digest("shipment", id)
	shipment := events.ShipmentScheduled{
		OrderID:       id,
		ShipmentID:    "shp_" + hex.EncodeToString(h[:6]),
		Carrier:       carriers[binary.BigEndian.Uint32(h[6:10])%uint32(len(carriers))],
		EstimatedDays: 2 + int32(h[10]%3),
	}
	if _, err := s.prod.Publish(ctx, events.TopicShipments, id, shipment); err != nil {
		return fmt.Errorf("schedule shipment of order %s: %w", id, err)
	}
	s.log.InfoContext(ctx, "shipment scheduled", "order", id, "shipment", shipment.ShipmentID, "carrier", shipment.Carrier)
	return nil
}

// shipmentScheduled dispatches a scheduled shipment.
func (s *Service) shipmentScheduled(ctx context.Context, ev consumer.Event[events.ShipmentScheduled]) error {
	sh := ev.Data
	h := digest("tracking", sh.ShipmentID)
	dispatched := events.ShipmentDispatched{
		OrderID:        sh.OrderID,
		ShipmentID:     sh.ShipmentID,
		TrackingNumber: fmt.Sprintf("%s%010d", sh.Carrier[:2], binary.BigEndian.Uint64(h[:8])%10_000_000_000),
		Carrier:        sh.Carrier,
	}
	if _, err := s.prod.Publish(ctx, events.TopicShipments, sh.OrderID, dispatched); err != nil {
		return fmt.Errorf("dispatch shipment %s: %w", sh.ShipmentID, err)
	}
	s.log.InfoContext(ctx, "shipment dispatched", "order", sh.OrderID, "shipment", sh.ShipmentID, "tracking", dispatched.TrackingNumber)
	return nil
}

// digest hashes a purpose and an id: ids derived from it are the same
// every time the same step runs for the same order.
func digest(purpose, id string) [32]byte {
	return sha256.Sum256([]byte(purpose + ":" + id))
}
