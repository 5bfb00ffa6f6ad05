// Package notificationsvc is the notification service of the example
// shop: it e-mails the customer when an order is received, dispatched or
// cancelled.
//
// It is best effort, and nothing it does can hold the other services
// back: it is a consumer group of its own, so its lag, its retries (in
// process, then through its own retry topics) and its dead letters
// (notification-service.dlq) are its own, and no other service waits for
// its events because it publishes none. An e-mail that cannot be sent is
// retried and finally dead-lettered, from where it can be replayed.
//
// The payment and shipment events do not carry the customer's address, so
// the service remembers it from OrderPlaced until the order's last e-mail.
// It remembers in memory: after a restart, an order placed before it gets
// no more e-mails (logged). Best effort.
package notificationsvc

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/examples/events"
	"github.com/choreokit/choreo/schema"
)

// Group is the service's consumer group: its identity, the scope of its
// idempotency marks, and the prefix of its retry and dead-letter topics.
const Group = "notification-service"

// Email is an e-mail to a customer.
type Email struct {
	To, Subject, Body string
	OrderID           string
}

// Mailer sends e-mails. An error is retried (see the package doc).
type Mailer interface {
	Send(ctx context.Context, e Email) error
}

// LogMailer "sends" e-mails by logging them.
type LogMailer struct{ Logger *slog.Logger }

// Send logs the e-mail at Info.
func (m LogMailer) Send(ctx context.Context, e Email) error {
	m.Logger.InfoContext(ctx, "email sent", "to", e.To, "subject", e.Subject, "order", e.OrderID)
	return nil
}

// Config is what the service needs.
type Config struct {
	Conn     connection.Config // Kafka
	Registry *schema.Registry  // schemas
	Mailer   Mailer            // nil: LogMailer with Logger
	Logger   *slog.Logger      // nil: slog.Default()

	// ConsumerOptions are added to the service's own (the demo shortens
	// the retry delays with them).
	ConsumerOptions []consumer.Option
}

// Service is the notification service. Make one with New and call Run
// once.
type Service struct {
	log    *slog.Logger
	mailer Mailer
	cons   *consumer.Consumer

	mu        sync.Mutex
	addresses map[string]string // order id → customer's address, until its last e-mail
}

// New connects the service.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Mailer == nil {
		cfg.Mailer = LogMailer{Logger: cfg.Logger}
	}
	cons, err := consumer.New(cfg.Conn, cfg.Registry, Group, append([]consumer.Option{
		consumer.Logger(cfg.Logger),
		// A member that dies without leaving the group holds its
		// partitions until its session times out: 10s, not Kafka's 45s.
		consumer.ClientOptions(kgo.SessionTimeout(10*time.Second), kgo.HeartbeatInterval(time.Second)),
	}, cfg.ConsumerOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("notification service: %w", err)
	}
	s := &Service{log: cfg.Logger, mailer: cfg.Mailer, cons: cons, addresses: map[string]string{}}
	consumer.Handle(cons, events.TopicOrders, s.orderPlaced)
	consumer.Handle(cons, events.TopicOrders, s.orderCancelled)
	consumer.Handle(cons, events.TopicShipments, s.shipmentDispatched)
	return s, nil
}

// Consumer returns the service's consumer, for probes (Live, CheckReady)
// and statistics.
func (s *Service) Consumer() *consumer.Consumer { return s.cons }

// Run sends e-mails until ctx is done, then waits for the handlers
// running (at most the consumer's ShutdownTimeout, 30s by default) and
// commits. It returns nil after a shutdown asked for by ctx.
func (s *Service) Run(ctx context.Context) error { return s.cons.Run(ctx) }

// Close does nothing: the service publishes nothing. It is there so that
// the four services stop the same way.
func (s *Service) Close(context.Context) error { return nil }

func (s *Service) orderPlaced(ctx context.Context, ev consumer.Event[events.OrderPlaced]) error {
	o := ev.Data
	s.mu.Lock()
	s.addresses[o.OrderID] = o.Customer
	s.mu.Unlock()
	return s.mailer.Send(ctx, Email{
		To: o.Customer, OrderID: o.OrderID,
		Subject: "We received your order",
		Body:    fmt.Sprintf("Thank you. We are taking payment of %s for order %s.", money(o.AmountCents, o.Currency), o.OrderID),
	})
}

func (s *Service) shipmentDispatched(ctx context.Context, ev consumer.Event[events.ShipmentDispatched]) error {
	d := ev.Data
	return s.last(ctx, d.OrderID, "Your order is on its way",
		fmt.Sprintf("%s is bringing order %s; tracking number %s.", d.Carrier, d.OrderID, d.TrackingNumber))
}

func (s *Service) orderCancelled(ctx context.Context, ev consumer.Event[events.OrderCancelled]) error {
	c := ev.Data
	return s.last(ctx, c.OrderID, "Your order was cancelled", fmt.Sprintf("Order %s was cancelled: %s.", c.OrderID, c.Reason))
}

// last sends an order's last e-mail and forgets the order's address once
// it is sent.
func (s *Service) last(ctx context.Context, orderID, subject, body string) error {
	s.mu.Lock()
	to, ok := s.addresses[orderID]
	s.mu.Unlock()
	if !ok {
		s.log.InfoContext(ctx, "no address for the order (placed before a restart?); e-mail not sent", "order", orderID, "subject", subject)
		return nil
	}
	if err := s.mailer.Send(ctx, Email{To: to, Subject: subject, Body: body, OrderID: orderID}); err != nil {
		return fmt.Errorf("e-mail to the customer of order %s: %w", orderID, err)
	}
	s.mu.Lock()
	delete(s.addresses, orderID)
	s.mu.Unlock()
	return nil
}

// money formats an amount in cents.
func money(cents int64, currency string) string {
	return fmt.Sprintf("%d.%02d %s", cents/100, cents%100, currency)
}
