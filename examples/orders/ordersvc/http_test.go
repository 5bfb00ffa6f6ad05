package ordersvc_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/examples/orders/ordersvc"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/schema"
)

// newAPI serves the order API of a service on the test's broker; its
// consumer does not run, only the HTTP side is under test.
func newAPI(t *testing.T) *httptest.Server {
	t.Helper()
	ctx := context.Background()
	cluster := kafkatest.New(t)
	reg, err := schema.NewRegistry([]string{kafkatest.SchemaRegistry(t)})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ordersvc.New(ctx, ordersvc.Config{
		Conn:     connection.Config{Brokers: cluster.Seeds()},
		Registry: reg,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := svc.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	return srv
}

func TestOrderAPI(t *testing.T) {
	srv := newAPI(t)
	post := func(body string) (int, map[string]string, http.Header) {
		t.Helper()
		resp, err := http.Post(srv.URL+"/orders", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("POST /orders %s: answer is not a JSON object: %v", resp.Status, err)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q; want application/json", ct)
		}
		return resp.StatusCode, out, resp.Header
	}

	t.Run("bad requests", func(t *testing.T) {
		huge := `{"customer": "ada@example.com", "amount_cents": 1999, "currency": "` + strings.Repeat("E", ordersvc.MaxRequestBytes) + `"}`
		for _, tc := range []struct {
			name, body string
			status     int
			want       string
		}{
			{"empty", "", 400, "empty body: want a JSON object"},
			{"broken JSON", `{"customer": "ada@example.com", "amount_cents": 19`, 400, "body is not valid JSON: it ends too soon"},
			{"not JSON", `customer=ada`, 400, "body is not valid JSON: invalid character 'c'"},
			{"array", `[1, 2]`, 400, "body must be a JSON object, not array"},
			{"two objects", `{"customer": "ada@example.com", "amount_cents": 1} {}`, 400, "body must hold one JSON object and nothing after it"},
			{"trailing garbage", `{"customer": "ada@example.com", "amount_cents": 1} x`, 400, "body must hold one JSON object and nothing after it"},
			{"unknown field", `{"customer": "ada@example.com", "amount": 1999}`, 400, `unknown field "amount": want customer, amount_cents, currency`},
			{"amount as text", `{"customer": "ada@example.com", "amount_cents": "1999"}`, 400, "field amount_cents: want a whole number, not string"},
			{"fractional amount", `{"customer": "ada@example.com", "amount_cents": 19.99}`, 400, "field amount_cents: want a whole number, not number 19.99"},
			{"negative amount", `{"customer": "ada@example.com", "amount_cents": -5}`, 400, "amount_cents must be more than 0, got -5"},
			{"zero amount", `{"customer": "ada@example.com"}`, 400, "amount_cents must be more than 0, got 0"},
			{"amount too large", `{"customer": "ada@example.com", "amount_cents": 100000001}`, 400, "amount_cents must be at most 100000000, got 100000001"},
			{"no customer", `{"amount_cents": 1999}`, 400, "customer is required"},
			{"customer not an address", `{"customer": "Ada Lovelace", "amount_cents": 1999}`, 400, `customer "Ada Lovelace" is not an e-mail address`},
			{"bad currency", `{"customer": "ada@example.com", "amount_cents": 1999, "currency": "euro"}`, 400, `currency "euro": want an ISO 4217 code`},
			{"huge body", huge, 413, "request body is over 65536 bytes"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, out, _ := post(tc.body)
				if status != tc.status {
					t.Errorf("status %d; want %d (%v)", status, tc.status, out)
				}
				if !strings.Contains(out["error"], tc.want) {
					t.Errorf("error %q; want it to say %q", out["error"], tc.want)
				}
			})
		}
	})

	t.Run("place and get", func(t *testing.T) {
		status, out, h := post(`{"customer": "ada@example.com", "amount_cents": 1999}`)
		if status != http.StatusAccepted || out["order_id"] == "" || out["correlation_id"] == "" || out["status"] != ordersvc.StatusPlaced {
			t.Fatalf("POST /orders: %d %v; want 202 with order id, correlation id and status placed", status, out)
		}
		if loc := h.Get("Location"); loc != "/orders/"+out["order_id"] {
			t.Errorf("Location %q; want /orders/%s", loc, out["order_id"])
		}
		resp, err := http.Get(srv.URL + "/orders/" + out["order_id"])
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var o ordersvc.Order
		if err := json.NewDecoder(resp.Body).Decode(&o); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || o.ID != out["order_id"] || o.CorrelationID != out["correlation_id"] ||
			o.Currency != "EUR" || o.AmountCents != 1999 || len(o.Timeline) != 1 || o.Timeline[0].Type != "shop.orders.OrderPlaced" ||
			o.Timeline[0].Source != ordersvc.Group || o.Timeline[0].EventID != o.CorrelationID {
			t.Errorf("GET /orders/{id}: %s %+v; want the placed order with its OrderPlaced (whose id is the correlation id)", resp.Status, o)
		}
	})

	t.Run("unknown order", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/orders/nope")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `no order \"nope\"`) {
			t.Errorf("GET /orders/nope: %s %s; want 404 saying so", resp.Status, body)
		}
	})

	t.Run("wrong method", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/orders/x", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("DELETE /orders/x: %s; want 405", resp.Status)
		}
	})
}
