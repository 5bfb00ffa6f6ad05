package paymentsvc_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/examples/payments/paymentsvc"
)

func req(order string) paymentsvc.ChargeRequest {
	return paymentsvc.ChargeRequest{IdempotencyKey: "order:" + order, OrderID: order, Customer: "ada@example.com", AmountCents: 1999, Currency: "EUR"}
}

// The same key is charged once, however often it is asked; another key is
// another charge, even for the same order: the caller must keep its key.
func TestSimulatedGatewayIsIdempotentByKey(t *testing.T) {
	ctx := context.Background()
	g, err := paymentsvc.NewSimulatedGateway(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	first, err := g.Charge(ctx, req("o-1"))
	if err != nil || first.Replayed || first.AuthorizationID == "" {
		t.Fatalf("first charge: %+v, %v; want a new charge", first, err)
	}
	again, err := g.Charge(ctx, req("o-1"))
	if err != nil || !again.Replayed || again.AuthorizationID != first.AuthorizationID {
		t.Fatalf("second charge with the key: %+v, %v; want the first one replayed", again, err)
	}
	if rec, _ := g.Order("o-1"); rec.Captures != 1 || len(rec.Attempts) != 2 {
		t.Errorf("order record %+v; want 1 capture in 2 attempts", rec)
	}
	other := req("o-1")
	other.IdempotencyKey = "random-key"
	if _, err := g.Charge(ctx, other); err != nil {
		t.Fatal(err)
	}
	if rec, _ := g.Order("o-1"); rec.Captures != 2 {
		t.Errorf("captures %d after a charge under another key; want 2 (a double charge)", rec.Captures)
	}
	if s := g.Stats(); s != (paymentsvc.GatewayStats{Calls: 3, Captures: 2, Replays: 1}) {
		t.Errorf("stats %+v", s)
	}
}

// Transient failures happen before and after the charge; both are
// retryable, and a retry with the same key never charges twice.
func TestSimulatedGatewayFailsTransiently(t *testing.T) {
	ctx := context.Background()
	if _, err := paymentsvc.NewSimulatedGateway(1.5, 1); err == nil {
		t.Error("failure rate 1.5 accepted")
	}
	g, err := paymentsvc.NewSimulatedGateway(0.5, 42)
	if err != nil {
		t.Fatal(err)
	}
	var before, after int
	for i := range 200 {
		order := "o-" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26))
		for attempt := 1; ; attempt++ {
			c, err := g.Charge(ctx, req(order))
			if err == nil {
				if c.AuthorizationID == "" {
					t.Fatalf("order %s: no authorization id", order)
				}
				break
			}
			if !errors.Is(err, paymentsvc.ErrUnavailable) || choreo.IsPermanent(err) {
				t.Fatalf("order %s: %v; want a retryable ErrUnavailable", order, err)
			}
			if strings.Contains(err.Error(), "timed out") {
				after++
			} else {
				before++
			}
			if attempt > 50 {
				t.Fatalf("order %s: 50 failures in a row", order)
			}
		}
		if rec, _ := g.Order(order); rec.Captures != 1 {
			t.Fatalf("order %s: %d captures after retries; want 1", order, rec.Captures)
		}
	}
	if before == 0 || after == 0 {
		t.Errorf("failures before the charge %d, after it %d; want both kinds", before, after)
	}
}

// The HTTP client and the simulated gateway's server speak the same API:
// charges, replays, transient 503s as ErrUnavailable, 400s as permanent.
func TestHTTPGateway(t *testing.T) {
	ctx := context.Background()
	sim, err := paymentsvc.NewSimulatedGateway(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	defer srv.Close()
	gw := paymentsvc.NewHTTPGateway(srv.URL+"/", nil)

	c, err := gw.Charge(ctx, req("o-1"))
	if err != nil || c.Replayed || c.OrderID != "o-1" || c.AmountCents != 1999 {
		t.Fatalf("charge over HTTP: %+v, %v", c, err)
	}
	again, err := gw.Charge(ctx, req("o-1"))
	if err != nil || !again.Replayed || again.AuthorizationID != c.AuthorizationID {
		t.Fatalf("replay over HTTP: %+v, %v", again, err)
	}

	bad := req("o-2")
	bad.AmountCents = -1
	if _, err := gw.Charge(ctx, bad); err == nil || !choreo.IsPermanent(err) || !strings.Contains(err.Error(), "400 Bad Request") {
		t.Errorf("negative amount over HTTP: %v; want a permanent 400", err)
	}

	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	if _, err := paymentsvc.NewHTTPGateway(down.URL, nil).Charge(ctx, req("o-3")); !errors.Is(err, paymentsvc.ErrUnavailable) || choreo.IsPermanent(err) {
		t.Errorf("503: %v; want a retryable ErrUnavailable", err)
	}
	down.Close()
	if _, err := paymentsvc.NewHTTPGateway(down.URL, nil).Charge(ctx, req("o-3")); !errors.Is(err, paymentsvc.ErrUnavailable) {
		t.Errorf("connection refused: %v; want ErrUnavailable", err)
	}
}
