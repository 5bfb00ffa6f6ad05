// Package paymentsvc is the payment service of the example shop: it
// reacts to OrderPlaced by charging the customer through a payment
// gateway, or by declining an amount over its limit, and publishes
// PaymentAuthorized or PaymentDeclined on the payments topic.
//
// It must never charge an order twice, even when it is killed between
// charging and committing its offset and the order's event is delivered
// again. Three things see to that, each covering what the one before
// cannot:
//
//  1. The consumer's idempotency store skips an event whose id (ce_id) it
//     has processed. The memory store remembers only while the process
//     lives; with a database (Config.DB) the mark is in PostgreSQL and
//     commits in one transaction with the payment row and the outgoing
//     event (the transactional outbox): all or nothing, exactly once.
//  2. The ledger keeps one payment per order id (the business key): an
//     order that comes again under another event id gets the decision it
//     had, not a second charge.
//  3. The gateway is called with the order's idempotency key, so a charge
//     made just before a crash, that neither the mark nor the ledger saw,
//     is answered again by the gateway instead of made again.
//
// Package main in the directory above runs it as a process; `choreo demo`
// runs it in its own process beside the other services.
package paymentsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/examples/events"
	"github.com/choreokit/choreo/idempotency/pgstore"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
)

// Group is the service's consumer group: its identity, the scope of its
// idempotency marks, and the prefix of its retry and dead-letter topics.
const Group = "payment-service"

// DefaultLimitCents is the amount above which a payment is declined when
// Config.LimitCents is 0.
const DefaultLimitCents = 100_000

// Config is what the service needs.
type Config struct {
	Conn     connection.Config // Kafka
	Registry *schema.Registry  // schemas
	Gateway  Gateway           // the payment provider (required)

	// LimitCents is the largest amount authorized; more is declined.
	// 0 means DefaultLimitCents.
	LimitCents int64

	// DB, when not nil, makes payments exactly once across crashes: the
	// idempotency marks, the payments table and the outbox of the events
	// to publish live in this database. Nil keeps everything in memory.
	DB *pgxpool.Pool

	Logger *slog.Logger // nil: slog.Default()

	// ConsumerOptions and ProducerOptions are added to the service's own
	// (the demo shortens the retry delays with them).
	ConsumerOptions []consumer.Option
	ProducerOptions []producer.Option
}

// Service is the payment service. Make one with New and call Run once.
type Service struct {
	cfg    Config
	log    *slog.Logger
	prod   *producer.Producer
	cons   *consumer.Consumer
	ledger ledger
	outbox *pgstore.Outbox // nil without a database
}

// New connects the service and checks its schemas; it creates the payments
// topic if missing, and with a database its tables.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Gateway == nil {
		return nil, errors.New("payment service: no gateway")
	}
	if cfg.LimitCents < 0 {
		return nil, fmt.Errorf("payment service: limit %d cents: want 0 (the default) or more", cfg.LimitCents)
	}
	if cfg.LimitCents == 0 {
		cfg.LimitCents = DefaultLimitCents
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Service{cfg: cfg, log: cfg.Logger}
	if err := events.CreateTopics(ctx, cfg.Conn, events.TopicPayments); err != nil {
		return nil, fmt.Errorf("payment service: %w", err)
	}

	consumerOpts := []consumer.Option{
		consumer.Logger(cfg.Logger),
		// A member that dies without leaving the group (SIGKILL, OOM) holds
		// its partitions until its session times out; 10s (Kafka's default
		// is 45s) lets a restarted or surviving instance take over sooner.
		consumer.ClientOptions(kgo.SessionTimeout(10*time.Second), kgo.HeartbeatInterval(time.Second)),
	}
	producerOpts := []producer.Option{
		producer.Source(Group),
		// Two event types on one topic: a registry subject per type.
		producer.Subjects(schema.TopicRecordNameStrategy),
		// Fail at start, not at the first order, if the registry holds an
		// incompatible version of our schemas.
		producer.Require(events.TopicPayments, events.PaymentAuthorized{}, events.PaymentDeclined{}),
	}
	if cfg.DB != nil {
		store, err := pgstore.New(ctx, cfg.DB)
		if err != nil {
			return nil, fmt.Errorf("payment service: %w", err)
		}
		if err := createPaymentsTable(ctx, cfg.DB); err != nil {
			return nil, fmt.Errorf("payment service: %w", err)
		}
		// Relay every 20ms rather than pgstore's 100ms: each poll is one
		// cheap query, and the payment step is on every order's path.
		s.outbox, err = pgstore.NewOutbox(ctx, cfg.DB, pgstore.RelayInterval(20*time.Millisecond), pgstore.OutboxLogger(cfg.Logger))
		if err != nil {
			return nil, fmt.Errorf("payment service: %w", err)
		}
		s.ledger = pgLedger{}
		consumerOpts = append(consumerOpts, consumer.Store(store))
		producerOpts = append(producerOpts, producer.Outbox(s.outbox))
	} else {
		s.ledger = newMemoryLedger() // and the consumer's default memory store
	}

	prod, err := producer.New(ctx, cfg.Conn, cfg.Registry, append(producerOpts, cfg.ProducerOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("payment service: %w", err)
	}
	cons, err := consumer.New(cfg.Conn, cfg.Registry, Group, append(consumerOpts, cfg.ConsumerOptions...)...)
	if err != nil {
		_ = prod.Close(ctx)
		return nil, fmt.Errorf("payment service: %w", err)
	}
	consumer.Handle(cons, events.TopicOrders, s.orderPlaced)
	s.prod, s.cons = prod, cons
	return s, nil
}

// Consumer returns the service's consumer, for probes (Live, CheckReady)
// and statistics.
func (s *Service) Consumer() *consumer.Consumer { return s.cons }

// Run handles orders until ctx is done, then waits for the handlers
// running (at most the consumer's ShutdownTimeout, 30s by default) and
// commits. It returns nil after a shutdown asked for by ctx. Call Close
// after it.
func (s *Service) Run(ctx context.Context) error {
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	relayDone := make(chan error, 1)
	if s.outbox != nil {
		// The relay sends the events that committed transactions left in
		// the outbox, through a client of its own (idempotent, acks=all:
		// franz-go's defaults). It stops with the consumer; what it has
		// not sent yet waits in the table for the next start.
		opts, err := s.cfg.Conn.ClientOptions()
		if err != nil {
			return fmt.Errorf("payment service: %w", err)
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			return fmt.Errorf("payment service: outbox relay client: %w", err)
		}
		defer cl.Close()
		go func() {
			err := s.outbox.Relay(runCtx, cl)
			if err != nil {
				// Without its relay the service would take orders and
				// never publish their payments: stop it.
				stop(fmt.Errorf("payment service: outbox relay: %w", err))
			}
			relayDone <- err
		}()
	} else {
		relayDone <- nil
	}

	err := s.cons.Run(runCtx)
	stop(nil)
	if rerr := <-relayDone; rerr != nil {
		err = errors.Join(err, rerr)
	}
	return err
}

// Close flushes and closes the producer, waiting at most until ctx ends.
func (s *Service) Close(ctx context.Context) error {
	if err := s.prod.Close(ctx); err != nil {
		return fmt.Errorf("payment service: close producer: %w", err)
	}
	return nil
}

// orderPlaced decides an order's payment, once, and publishes the
// decision.
func (s *Service) orderPlaced(ctx context.Context, ev consumer.Event[events.OrderPlaced]) error {
	o := ev.Data
	p, known, err := s.ledger.get(ctx, o.OrderID)
	if err != nil {
		return err
	}
	if known {
		// The order was decided before, under another event id (or the
		// memory store forgot this one): publish the same decision again.
		// Its event id is derived from this event's, so downstream skips
		// it if it has seen it.
		s.log.InfoContext(ctx, "order already decided; not charging again", "order", o.OrderID, "status", p.Status)
	} else {
		if p, err = s.decide(ctx, ev); err != nil {
			return err
		}
		if p, err = s.ledger.put(ctx, p); err != nil {
			return err
		}
	}
	return s.publish(ctx, p)
}

// decide declines an amount over the limit and charges the others.
func (s *Service) decide(ctx context.Context, ev consumer.Event[events.OrderPlaced]) (Payment, error) {
	o := ev.Data
	p := Payment{OrderID: o.OrderID, AmountCents: o.AmountCents, Currency: o.Currency}
	if o.AmountCents > s.cfg.LimitCents {
		p.Status = StatusDeclined
		p.Reason = fmt.Sprintf("amount %d cents is over the limit of %d", o.AmountCents, s.cfg.LimitCents)
		p.LimitCents = s.cfg.LimitCents
		s.log.InfoContext(ctx, "payment declined", "order", o.OrderID, "amount_cents", o.AmountCents, "limit_cents", s.cfg.LimitCents)
		return p, nil
	}
	// With a database this runs inside the event's transaction, which
	// stays open (holding a pool connection) while the gateway answers:
	// the price of recording the charge, the mark and the event together.
	// The gateway client's timeout bounds it.
	c, err := s.cfg.Gateway.Charge(ctx, ChargeRequest{
		IdempotencyKey: "order:" + o.OrderID, // the same for every attempt, in every process
		OrderID:        o.OrderID,
		Customer:       o.Customer,
		AmountCents:    o.AmountCents,
		Currency:       o.Currency,
	})
	if err != nil {
		// Retryable unless the gateway said the request itself is wrong
		// (choreo.Permanent): the consumer calls us again, then forwards
		// the event to the retry topics, then dead-letters it.
		s.log.WarnContext(ctx, "payment gateway failed; the order will be retried", "order", o.OrderID, "attempt", ev.Attempt, "err", err)
		return Payment{}, fmt.Errorf("charge order %s: %w", o.OrderID, err)
	}
	p.Status = StatusAuthorized
	p.AuthorizationID = c.AuthorizationID
	s.log.InfoContext(ctx, "payment authorized", "order", o.OrderID, "amount_cents", o.AmountCents,
		"authorization", c.AuthorizationID, "replayed", c.Replayed, "attempt", ev.Attempt)
	return p, nil
}

// publish sends the decision. Inside the handler, the event's id derives
// from the handled event's: publishing it again gives the same id.
func (s *Service) publish(ctx context.Context, p Payment) error {
	var ev schema.Event
	switch p.Status {
	case StatusAuthorized:
		ev = events.PaymentAuthorized{OrderID: p.OrderID, AuthorizationID: p.AuthorizationID, AmountCents: p.AmountCents, Currency: p.Currency}
	case StatusDeclined:
		ev = events.PaymentDeclined{OrderID: p.OrderID, AmountCents: p.AmountCents, Reason: p.Reason, LimitCents: p.LimitCents}
	default:
		return fmt.Errorf("payment of order %s has unknown status %q", p.OrderID, p.Status)
	}
	if _, err := s.prod.Publish(ctx, events.TopicPayments, p.OrderID, ev); err != nil {
		return fmt.Errorf("publish payment of order %s: %w", p.OrderID, err)
	}
	return nil
}
