// Command payments is the example shop's payment service (consumer group
// payment-service): for every OrderPlaced on topic orders it charges the
// customer through a payment gateway, or declines an amount over its limit,
// and publishes PaymentAuthorized or PaymentDeclined on topic payments. It
// never charges an order twice (see package paymentsvc).
//
//	go run ./examples/payments
//
// Environment:
//
//	KAFKA_BROKERS         seed brokers (required); KAFKA_SASL_*, KAFKA_TLS* as package connection reads them
//	SCHEMA_REGISTRY_URL   schema registry (required)
//	DATABASE_URL          PostgreSQL: idempotency marks, payments and outbox there (optional; memory otherwise)
//	HTTP_ADDR             /healthz, /readyz and /metrics (default :8082)
//	PAYMENT_LIMIT_CENTS   amounts above are declined (default 100000)
//	PAYMENT_FAILURE_RATE  share of gateway calls that fail transiently, 0 to 1 (default 0.2)
//	PAYMENT_GATEWAY_URL   a gateway's HTTP API (default: a simulated gateway in this process)
//	OTEL_*                OpenTelemetry exporters (nothing is exported when unset)
//
// On SIGTERM or Ctrl-C it stops taking events, waits for the running ones
// (at most the consumer's shutdown timeout, 30s), commits and exits 0: give
// it a longer grace period than that (Kubernetes'
// terminationGracePeriodSeconds).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/examples/payments/paymentsvc"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/tracing"
)

func main() {
	// JSON logs with the trace, correlation and event ids of the event
	// being handled (tracing.NewLogHandler reads them from the context).
	slog.SetDefault(slog.New(tracing.NewLogHandler(slog.NewJSONHandler(os.Stderr, nil))))
	if err := run(); err != nil {
		slog.Error("payment service failed", "err", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }() // a second Ctrl-C kills at once

	limit, err := envInt("PAYMENT_LIMIT_CENTS", paymentsvc.DefaultLimitCents)
	if err != nil {
		return err
	}
	rate, err := envFloat("PAYMENT_FAILURE_RATE", 0.2)
	if err != nil {
		return err
	}
	conn, err := connection.FromEnv()
	if err != nil {
		return err
	}
	if len(conn.Brokers) == 0 {
		return errors.New("KAFKA_BROKERS is not set (`go run ./cmd/choreo dev` prints the export lines)")
	}
	reg, err := schema.NewRegistry([]string{os.Getenv("SCHEMA_REGISTRY_URL")})
	if err != nil {
		return fmt.Errorf("SCHEMA_REGISTRY_URL: %w", err)
	}

	var gateway paymentsvc.Gateway
	if url := os.Getenv("PAYMENT_GATEWAY_URL"); url != "" {
		gateway = paymentsvc.NewHTTPGateway(url, nil)
	} else {
		// A stand-in for the provider. It lives in this process, so it
		// forgets its idempotency keys on restart, as a real one would not.
		if gateway, err = paymentsvc.NewSimulatedGateway(rate, 0); err != nil {
			return fmt.Errorf("PAYMENT_FAILURE_RATE: %w", err)
		}
	}

	var db *pgxpool.Pool
	if url := os.Getenv("DATABASE_URL"); url != "" {
		cfg, err := pgxpool.ParseConfig(url)
		if err != nil {
			return fmt.Errorf("DATABASE_URL: %w", err)
		}
		// Each handler holds a connection for its transaction, and the
		// outbox relay needs one: more than the consumer's 16 handlers.
		cfg.MaxConns = max(cfg.MaxConns, 20)
		if db, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
			return fmt.Errorf("DATABASE_URL: %w", err)
		}
		defer db.Close()
	}

	// Metrics on /metrics; traces and metrics also go where OTEL_* say.
	reader, metrics, err := tracing.PrometheusHandler()
	if err != nil {
		return err
	}
	shutdownTracing, err := tracing.Setup(ctx, paymentsvc.Group, tracing.WithMetricReader(reader))
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(ctx); err != nil {
			slog.Warn("flushing telemetry", "err", err)
		}
	}()

	// Listen before joining the group: a port in use fails the start.
	ln, err := net.Listen("tcp", envString("HTTP_ADDR", ":8082"))
	if err != nil {
		return err
	}
	svc, err := paymentsvc.New(ctx, paymentsvc.Config{
		Conn: conn, Registry: reg, Gateway: gateway, LimitCents: int64(limit), DB: db,
	})
	if err != nil {
		ln.Close()
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("GET /healthz", svc.Consumer().LiveHandler())
	mux.Handle("GET /readyz", svc.Consumer().ReadyHandler())
	mux.Handle("GET /metrics", metrics)
	return serve(ctx, ln, mux, svc)
}

// service is what serve runs: a consumer (Run) and a producer (Close).
type service interface {
	Run(ctx context.Context) error
	Close(ctx context.Context) error
}

// serve runs the service and the HTTP server until ctx is done or either
// fails. Then both stop at once: the HTTP server finishes the requests it
// has (5s at most), the service the events it is handling (its shutdown
// timeout) and commits. Last, the producer flushes what is buffered.
func serve(ctx context.Context, ln net.Listener, h http.Handler, svc service) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			cancel(fmt.Errorf("http server: %w", err))
		}
	}()
	httpStopped := make(chan error, 1)
	go func() {
		<-ctx.Done()
		shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		httpStopped <- srv.Shutdown(shutdownCtx)
	}()
	slog.Info("payment service started", "addr", ln.Addr().String())

	err := svc.Run(ctx)
	cancel(nil) // when the service failed on its own, stop the HTTP server too
	if serr := <-httpStopped; serr != nil {
		err = errors.Join(err, fmt.Errorf("http server shutdown: %w", serr))
	}
	if cause := context.Cause(ctx); !errors.Is(cause, context.Canceled) {
		err = errors.Join(cause, err) // the HTTP server failed
	}
	closeCtx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	if cerr := svc.Close(closeCtx); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err == nil {
		slog.Info("payment service stopped")
	}
	return err
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s=%q: want a whole number above 0", name, v)
	}
	return n, nil
}

func envFloat(name string, def float64) (float64, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f > 1 {
		return 0, fmt.Errorf("%s=%q: want a number from 0 to 1", name, v)
	}
	return f, nil
}
