// Package ordersvc is the order service of the example shop. It takes
// orders over HTTP and publishes OrderPlaced, the first event of each
// order's business transaction; then it follows the order through the
// other services' events and ends the transaction:
//
//   - PaymentDeclined: it compensates by cancelling the order
//     (OrderCancelled);
//   - PaymentAuthorized and ShipmentDispatched, both seen: it completes
//     the order (OrderCompleted).
//
// Nobody tells the services what to do next: each reacts to the events it
// cares about (choreography). The order service is where the transaction
// starts and ends, so it keeps each order's timeline, served by
// GET /orders/{id}.
//
// Events of one order arrive in order within a topic (they share the key,
// so the partition), but not across topics: ShipmentDispatched (topic
// shipments) may be handled before PaymentAuthorized (topic payments) when
// the payments partition lags. The service therefore completes an order
// when it has seen both, in whichever order they came.
//
// Orders are kept in memory, so run one instance: a restart forgets them,
// and a second instance would see events of orders the first one took. A
// real order service keeps them in a database; package paymentsvc shows
// how handler writes and idempotency marks commit together in PostgreSQL.
package ordersvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/examples/events"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
)

// Group is the service's consumer group: its identity, the scope of its
// idempotency marks, and the prefix of its retry and dead-letter topics.
const Group = "order-service"

// Order statuses, in the order an order goes through them. An order ends
// completed or cancelled.
const (
	StatusPlaced    = "placed"    // OrderPlaced published
	StatusPaid      = "paid"      // PaymentAuthorized seen
	StatusShipping  = "shipping"  // a shipment event seen
	StatusCompleted = "completed" // OrderCompleted published
	StatusDeclined  = "declined"  // PaymentDeclined seen, OrderCancelled not yet published
	StatusCancelled = "cancelled" // OrderCancelled published
)

// Limits of an order.
const (
	DefaultCurrency  = "EUR"       // of a request without a currency
	MaxAmountCents   = 100_000_000 // the largest order taken (a million euros)
	maxCustomerBytes = 254         // the longest e-mail address (RFC 5321 path)
)

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

// Service is the order service. Make one with New and call Run once.
type Service struct {
	log  *slog.Logger
	prod *producer.Producer
	cons *consumer.Consumer

	mu     sync.Mutex
	orders map[string]*order
}

// order is one order's state; its own mutex keeps two handlers of the
// same order (one per topic) from deciding at once.
type order struct {
	mu sync.Mutex
	Order
	paid, dispatched, declined bool
	shipmentID, declineReason  string
}

// Order is an order as GET /orders/{id} shows it.
type Order struct {
	ID            string  `json:"order_id"`
	CorrelationID string  `json:"correlation_id"` // of the order's business transaction
	Customer      string  `json:"customer"`
	AmountCents   int64   `json:"amount_cents"`
	Currency      string  `json:"currency"`
	Status        string  `json:"status"`
	Timeline      []Entry `json:"timeline"` // by event time
}

// Entry is one event of an order's timeline.
type Entry struct {
	EventID string    `json:"event_id"`
	Type    string    `json:"type"`   // Avro full name, e.g. shop.payments.PaymentAuthorized
	Source  string    `json:"source"` // the service that published it
	Topic   string    `json:"topic"`
	Time    time.Time `json:"time"` // when it was published (ce_time)
}

// New connects the service and checks its schemas; it creates the orders
// topic if it is missing.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := events.CreateTopics(ctx, cfg.Conn, events.TopicOrders); err != nil {
		return nil, fmt.Errorf("order service: %w", err)
	}
	prod, err := producer.New(ctx, cfg.Conn, cfg.Registry, append([]producer.Option{
		producer.Source(Group),
		// Three event types on one topic: a registry subject per type.
		producer.Subjects(schema.TopicRecordNameStrategy),
		producer.Require(events.TopicOrders, events.OrderPlaced{}, events.OrderCompleted{}, events.OrderCancelled{}),
	}, cfg.ProducerOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("order service: %w", err)
	}
	cons, err := consumer.New(cfg.Conn, cfg.Registry, Group, append([]consumer.Option{
		consumer.Logger(cfg.Logger),
		// A member that dies without leaving the group holds its
		// partitions until its session times out: 10s, not Kafka's 45s.
		consumer.ClientOptions(kgo.SessionTimeout(10*time.Second), kgo.HeartbeatInterval(time.Second)),
	}, cfg.ConsumerOptions...)...)
	if err != nil {
		_ = prod.Close(ctx)
		return nil, fmt.Errorf("order service: %w", err)
	}
	s := &Service{log: cfg.Logger, prod: prod, cons: cons, orders: map[string]*order{}}
	consumer.Handle(cons, events.TopicPayments, s.paymentAuthorized)
	consumer.Handle(cons, events.TopicPayments, s.paymentDeclined)
	consumer.Handle(cons, events.TopicShipments, s.shipmentScheduled)
	consumer.Handle(cons, events.TopicShipments, s.shipmentDispatched)
	return s, nil
}

// Consumer returns the service's consumer, for probes (Live, CheckReady)
// and statistics.
func (s *Service) Consumer() *consumer.Consumer { return s.cons }

// Run follows the orders until ctx is done, then waits for the handlers
// running (at most the consumer's ShutdownTimeout, 30s by default) and
// commits. It returns nil after a shutdown asked for by ctx. Call Close
// after it, and after the HTTP server has stopped: Place publishes with
// the producer Close closes.
func (s *Service) Run(ctx context.Context) error { return s.cons.Run(ctx) }

// Close flushes and closes the producer, waiting at most until ctx ends.
func (s *Service) Close(ctx context.Context) error {
	if err := s.prod.Close(ctx); err != nil {
		return fmt.Errorf("order service: close producer: %w", err)
	}
	return nil
}

// PlaceRequest is a new order, the body of POST /orders.
type PlaceRequest struct {
	Customer    string `json:"customer"`     // e-mail address
	AmountCents int64  `json:"amount_cents"` // more than 0, at most MaxAmountCents
	Currency    string `json:"currency"`     // ISO 4217; empty means DefaultCurrency
}

// ErrInvalidOrder is wrapped by Place's errors about the request itself.
var ErrInvalidOrder = errors.New("invalid order")

var currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)

// check returns the request's first problem, wrapping ErrInvalidOrder.
func (r *PlaceRequest) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidOrder, fmt.Sprintf(format, args...))
	}
	switch {
	case r.Customer == "":
		return bad("customer is required: the customer's e-mail address")
	case len(r.Customer) > maxCustomerBytes:
		return bad("customer is %d bytes long; at most %d", len(r.Customer), maxCustomerBytes)
	case r.AmountCents <= 0:
		return bad("amount_cents must be more than 0, got %d", r.AmountCents)
	case r.AmountCents > MaxAmountCents:
		return bad("amount_cents must be at most %d, got %d", MaxAmountCents, r.AmountCents)
	case r.Currency != "" && !currencyCode.MatchString(r.Currency):
		return bad("currency %q: want an ISO 4217 code such as EUR", r.Currency)
	}
	if a, err := mail.ParseAddress(r.Customer); err != nil || a.Address != r.Customer {
		return bad("customer %q is not an e-mail address", r.Customer)
	}
	return nil
}

// Place takes an order: it publishes OrderPlaced and returns the order
// once the broker has it. Errors about the request wrap ErrInvalidOrder;
// others mean the order was not taken and may be tried again.
func (s *Service) Place(ctx context.Context, req PlaceRequest) (Order, error) {
	if err := req.check(); err != nil {
		return Order{}, err
	}
	if req.Currency == "" {
		req.Currency = DefaultCurrency
	}
	id := choreo.NewID() // a UUIDv7: order ids sort by time
	o := &order{Order: Order{ID: id, Customer: req.Customer, AmountCents: req.AmountCents, Currency: req.Currency, Status: StatusPlaced}}
	// Keep the order before publishing: its payment may come back before
	// Publish returns.
	s.mu.Lock()
	s.orders[id] = o
	s.mu.Unlock()

	pub, err := s.prod.Publish(ctx, events.TopicOrders, id, events.OrderPlaced{
		OrderID: id, Customer: req.Customer, AmountCents: req.AmountCents, Currency: req.Currency,
	})
	if err != nil {
		s.mu.Lock()
		delete(s.orders, id)
		s.mu.Unlock()
		return Order{}, fmt.Errorf("place order: %w", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.CorrelationID = pub.Metadata.CorrelationID // a first event's own id
	o.add(entry(pub.Metadata, events.TopicOrders))
	s.log.InfoContext(choreo.WithMetadata(ctx, pub.Metadata), "order placed", "order", id, "amount_cents", req.AmountCents, "currency", req.Currency)
	return o.snapshot(), nil
}

// Order returns the order with id, and false if there is none.
func (s *Service) Order(id string) (Order, bool) {
	s.mu.Lock()
	o, ok := s.orders[id]
	s.mu.Unlock()
	if !ok {
		return Order{}, false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.snapshot(), true
}

func (s *Service) paymentAuthorized(ctx context.Context, ev consumer.Event[events.PaymentAuthorized]) error {
	return s.update(ctx, ev.Data.OrderID, entry(ev.Metadata, ev.Topic), func(o *order) {
		o.paid = true
		o.raise(StatusPaid)
	})
}

func (s *Service) paymentDeclined(ctx context.Context, ev consumer.Event[events.PaymentDeclined]) error {
	return s.update(ctx, ev.Data.OrderID, entry(ev.Metadata, ev.Topic), func(o *order) {
		o.declined = true
		o.declineReason = ev.Data.Reason
		o.raise(StatusDeclined)
	})
}

func (s *Service) shipmentScheduled(ctx context.Context, ev consumer.Event[events.ShipmentScheduled]) error {
	return s.update(ctx, ev.Data.OrderID, entry(ev.Metadata, ev.Topic), func(o *order) {
		o.shipmentID = ev.Data.ShipmentID
		o.raise(StatusShipping)
	})
}

func (s *Service) shipmentDispatched(ctx context.Context, ev consumer.Event[events.ShipmentDispatched]) error {
	return s.update(ctx, ev.Data.OrderID, entry(ev.Metadata, ev.Topic), func(o *order) {
		o.dispatched = true
		o.shipmentID = ev.Data.ShipmentID
		o.raise(StatusShipping)
	})
}

// update records an event of an order, applies it, and ends the order's
// transaction when it can.
func (s *Service) update(ctx context.Context, id string, e Entry, apply func(*order)) error {
	s.mu.Lock()
	o, ok := s.orders[id]
	if !ok {
		// Not ours, or placed before a restart: follow it all the same,
		// so that the transaction still ends.
		s.log.WarnContext(ctx, "event of an order this instance did not place", "order", id, "type", e.Type)
		o = &order{Order: Order{ID: id, Status: StatusPlaced}}
		s.orders[id] = o
	}
	s.mu.Unlock()

	o.mu.Lock()
	defer o.mu.Unlock()
	if o.add(e) { // not a copy of an event seen already
		if o.CorrelationID == "" {
			if md, ok := choreo.MetadataFrom(ctx); ok {
				o.CorrelationID = md.CorrelationID
			}
		}
		apply(o)
	}
	return s.advance(ctx, o)
}

// advance publishes the end of the order's transaction once it is due. It
// runs again when a handler is retried after a failed publish; inside the
// handler the event id is derived from the handled event's, so a publish
// repeated after an unseen success has the same id, and consumers skip it.
func (s *Service) advance(ctx context.Context, o *order) error {
	var ev schema.Event
	var status string
	switch {
	case o.Status == StatusCompleted || o.Status == StatusCancelled:
		return nil
	case o.declined:
		// The compensation of the declined payment.
		ev, status = events.OrderCancelled{OrderID: o.ID, Reason: "payment declined: " + o.declineReason, Code: events.CancelPaymentDeclined}, StatusCancelled
	case o.paid && o.dispatched:
		ev, status = events.OrderCompleted{OrderID: o.ID, ShipmentID: o.shipmentID}, StatusCompleted
	default:
		return nil // waiting for more events
	}
	pub, err := s.prod.Publish(ctx, events.TopicOrders, o.ID, ev)
	if err != nil {
		return fmt.Errorf("order %s: %w", o.ID, err)
	}
	o.add(entry(pub.Metadata, events.TopicOrders))
	o.Status = status
	s.log.InfoContext(ctx, "order "+status, "order", o.ID)
	return nil
}

// entry is the timeline entry of an event.
func entry(md choreo.Metadata, topic string) Entry {
	return Entry{EventID: md.ID, Type: md.Type, Source: md.Source, Topic: topic, Time: md.Time}
}

// add appends e to the timeline unless an event with its id is there, and
// reports whether it did.
func (o *order) add(e Entry) bool {
	for _, x := range o.Timeline {
		if x.EventID == e.EventID {
			return false
		}
	}
	o.Timeline = append(o.Timeline, e)
	return true
}

// statusRank orders the statuses an order goes through.
var statusRank = map[string]int{StatusPlaced: 0, StatusPaid: 1, StatusDeclined: 1, StatusShipping: 2, StatusCompleted: 3, StatusCancelled: 3}

// raise moves the status forward, never back: events of different topics
// may come in any order.
func (o *order) raise(status string) {
	if statusRank[status] > statusRank[o.Status] {
		o.Status = status
	}
}

// snapshot returns a copy of the order, its timeline sorted by time.
func (o *order) snapshot() Order {
	out := o.Order
	out.Timeline = slices.Clone(o.Timeline)
	slices.SortStableFunc(out.Timeline, func(a, b Entry) int { return a.Time.Compare(b.Time) })
	return out
}
