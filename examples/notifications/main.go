// Command notifications is the example shop's notification service
// (consumer group notification-service): it e-mails customers (here: logs
// the e-mails) when an order is received, dispatched or cancelled. It is
// best effort, and its failures never hold the other services back (see
// package notificationsvc).
//
//	go run ./examples/notifications
//
// Environment:
//
//	KAFKA_BROKERS         seed brokers (required); KAFKA_SASL_*, KAFKA_TLS* as package connection reads them
//	SCHEMA_REGISTRY_URL   schema registry (required)
//	HTTP_ADDR             /healthz, /readyz and /metrics (default :8084)
//	OTEL_*                OpenTelemetry exporters (nothing is exported when unset)
//
// On SIGTERM or Ctrl-C it stops taking events, finishes the running ones
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
	"syscall"
	"time"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/examples/notifications/notificationsvc"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/tracing"
)

func main() {
	// JSON logs with the trace, correlation and event ids of the event
	// being handled (tracing.NewLogHandler reads them from the context).
	slog.SetDefault(slog.New(tracing.NewLogHandler(slog.NewJSONHandler(os.Stderr, nil))))
	if err := run(); err != nil {
		slog.Error("notification service failed", "err", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }() // a second Ctrl-C kills at once

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

	// Metrics on /metrics; traces and metrics also go where OTEL_* say.
	reader, metrics, err := tracing.PrometheusHandler()
	if err != nil {
		return err
	}
	shutdownTracing, err := tracing.Setup(ctx, notificationsvc.Group, tracing.WithMetricReader(reader))
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
	ln, err := net.Listen("tcp", envString("HTTP_ADDR", ":8084"))
	if err != nil {
		return err
	}
	svc, err := notificationsvc.New(ctx, notificationsvc.Config{Conn: conn, Registry: reg})
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
	slog.Info("notification service started", "addr", ln.Addr().String())

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
		slog.Info("notification service stopped")
	}
	return err
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
