package paymentsvc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/choreokit/choreo"
)

// Gateway charges customers: the payment provider, outside this service.
//
// Charge must be idempotent by ChargeRequest.IdempotencyKey, as real
// payment APIs are (Stripe's Idempotency-Key header, Adyen's
// idempotency-key …): a second request with a key already charged
// returns that charge and charges nothing. That is what makes it safe to
// call the gateway again after a crash between the charge and the
// service's own record of it, which no transaction of ours can cover.
type Gateway interface {
	Charge(ctx context.Context, req ChargeRequest) (Charge, error)
}

// ChargeRequest asks the gateway to charge a customer.
type ChargeRequest struct {
	IdempotencyKey string `json:"-"` // the same key always gives the same charge
	OrderID        string `json:"order_id"`
	Customer       string `json:"customer"`
	AmountCents    int64  `json:"amount_cents"`
	Currency       string `json:"currency"`
}

// Charge is a charge the gateway made.
type Charge struct {
	AuthorizationID string `json:"authorization_id"`
	OrderID         string `json:"order_id"`
	AmountCents     int64  `json:"amount_cents"`
	Currency        string `json:"currency"`
	// Replayed is true when the idempotency key had been charged before:
	// this is that charge again, and nothing new was charged.
	Replayed bool `json:"replayed"`
}

// ErrUnavailable is wrapped by the errors of a gateway that could not be
// reached or did not answer: transient, worth retrying with the same
// idempotency key. Whether the customer was charged is unknown.
var ErrUnavailable = errors.New("payment gateway unavailable")

// SimulatedGateway is a payment gateway in memory, for the examples, the
// demo and tests. It keeps every charge by idempotency key (as the real
// provider's database would) and fails transiently at a configured rate,
// in the two ways real gateways do: before charging (connection refused,
// overloaded) and after charging (the answer is lost on the way back: the
// customer was charged, the caller does not know). The second is why the
// caller must retry with the same idempotency key.
//
// It serves the HTTP API that HTTPGateway calls, so that a test can run it
// outside the payment service's process and it survives the service being
// killed, like a real provider.
type SimulatedGateway struct {
	failureRate float64

	mu       sync.Mutex
	rnd      *rand.Rand
	byKey    map[string]Charge
	byOrder  map[string]*OrderRecord
	counters GatewayStats
}

// OrderRecord is what the simulated gateway saw of one order.
type OrderRecord struct {
	Captures int       // charges made (more than one is a double charge)
	Attempts []Attempt // every call, in order
}

// Attempt is one call to the simulated gateway.
type Attempt struct {
	At       time.Time
	Err      string // "" when the call succeeded
	Captured bool   // a charge was made by this call (also when Err says it failed)
	Replayed bool   // the key was charged before: nothing new charged
}

// GatewayStats counts the simulated gateway's calls.
type GatewayStats struct {
	Calls    int // Charge calls
	Failures int // calls that returned an error
	Captures int // charges made
	Replays  int // calls for a key charged before, answered with that charge
}

// NewSimulatedGateway returns a gateway that fails failureRate of the calls
// (0 to 1), half of them after charging. seed makes the failures
// repeatable; 0 picks one at random.
func NewSimulatedGateway(failureRate float64, seed uint64) (*SimulatedGateway, error) {
	if failureRate < 0 || failureRate > 1 || failureRate != failureRate {
		return nil, fmt.Errorf("failure rate %v: want 0 to 1", failureRate)
	}
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &SimulatedGateway{
		failureRate: failureRate,
		rnd:         rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		byKey:       map[string]Charge{},
		byOrder:     map[string]*OrderRecord{},
	}, nil
}

// Charge charges the request's amount unless its idempotency key was
// charged before, and may fail transiently (see SimulatedGateway).
func (g *SimulatedGateway) Charge(ctx context.Context, req ChargeRequest) (Charge, error) {
	if err := ctx.Err(); err != nil {
		return Charge{}, err
	}
	if req.IdempotencyKey == "" || req.OrderID == "" || req.AmountCents <= 0 {
		return Charge{}, choreo.Permanent(fmt.Errorf("invalid charge request for order %q: idempotency key, order id and a positive amount are required", req.OrderID))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.counters.Calls++
	rec := g.byOrder[req.OrderID]
	if rec == nil {
		rec = &OrderRecord{}
		g.byOrder[req.OrderID] = rec
	}
	att := Attempt{At: time.Now()}
	defer func() { rec.Attempts = append(rec.Attempts, att) }()

	fail := g.rnd.Float64() < g.failureRate
	after := g.rnd.IntN(2) == 0 // half the failures happen once the charge is made
	if fail && !after {
		g.counters.Failures++
		att.Err = "connection refused"
		return Charge{}, fmt.Errorf("charge order %s: %w: connection refused", req.OrderID, ErrUnavailable)
	}
	c, seen := g.byKey[req.IdempotencyKey]
	if seen {
		c.Replayed = true
		g.counters.Replays++
		att.Replayed = true
	} else {
		c = Charge{
			AuthorizationID: authorizationID(req.IdempotencyKey),
			OrderID:         req.OrderID,
			AmountCents:     req.AmountCents,
			Currency:        req.Currency,
		}
		g.byKey[req.IdempotencyKey] = c
		rec.Captures++
		g.counters.Captures++
		att.Captured = true
	}
	if fail {
		g.counters.Failures++
		att.Err = "timed out waiting for the answer (the charge was made)"
		return Charge{}, fmt.Errorf("charge order %s: %w: timed out waiting for the answer", req.OrderID, ErrUnavailable)
	}
	return c, nil
}

// authorizationID is the charge's id: derived from the key, so a replay
// answers with the same id.
func authorizationID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "auth_" + hex.EncodeToString(sum[:8])
}

// Order returns what the gateway saw of an order, and false if it never
// saw it.
func (g *SimulatedGateway) Order(orderID string) (OrderRecord, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	rec, ok := g.byOrder[orderID]
	if !ok {
		return OrderRecord{}, false
	}
	return OrderRecord{Captures: rec.Captures, Attempts: append([]Attempt(nil), rec.Attempts...)}, true
}

// Stats returns the gateway's counters.
func (g *SimulatedGateway) Stats() GatewayStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.counters
}

// maxRequestBytes bounds a charge request's body.
const maxRequestBytes = 64 << 10

// ServeHTTP serves POST /charges: a JSON ChargeRequest in the body, the
// idempotency key in the Idempotency-Key header. It answers 200 with the
// Charge, 503 on a (simulated) transient failure, 400 on a bad request.
func (g *SimulatedGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/charges" {
		http.Error(w, "POST /charges only", http.StatusNotFound)
		return
	}
	var req ChargeRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "bad charge request: "+err.Error(), http.StatusBadRequest)
		return
	}
	req.IdempotencyKey = r.Header.Get("Idempotency-Key")
	c, err := g.Charge(r.Context(), req)
	switch {
	case errors.Is(err, ErrUnavailable):
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(c) // the client sees a broken answer as unavailable and retries
}

// HTTPGateway is a Gateway reached over HTTP: the API SimulatedGateway
// serves, shaped like a real provider's.
type HTTPGateway struct {
	url    string
	client *http.Client
}

// NewHTTPGateway returns a gateway client for the API at baseURL. A nil
// client means one with a 10-second timeout: a gateway that hangs must
// fail the attempt (to be retried), not hold the order's key forever.
func NewHTTPGateway(baseURL string, client *http.Client) *HTTPGateway {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &HTTPGateway{url: strings.TrimRight(baseURL, "/") + "/charges", client: client}
}

// Charge posts the request. Network errors and 5xx answers wrap
// ErrUnavailable (retry with the same key); a 4xx answer is
// choreo.Permanent: sending the same request again cannot help.
func (h *HTTPGateway) Charge(ctx context.Context, req ChargeRequest) (Charge, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return Charge{}, choreo.Permanent(fmt.Errorf("charge order %s: %w", req.OrderID, err))
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return Charge{}, choreo.Permanent(fmt.Errorf("charge order %s: %w", req.OrderID, err))
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Idempotency-Key", req.IdempotencyKey)
	resp, err := h.client.Do(hr)
	if err != nil {
		return Charge{}, fmt.Errorf("charge order %s: %w: %w", req.OrderID, ErrUnavailable, err)
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(io.LimitReader(resp.Body, maxRequestBytes))
	if err != nil {
		return Charge{}, fmt.Errorf("charge order %s: %w: reading the answer: %w", req.OrderID, ErrUnavailable, err)
	}
	switch {
	case resp.StatusCode >= 500:
		return Charge{}, fmt.Errorf("charge order %s: %w: %s: %s", req.OrderID, ErrUnavailable, resp.Status, strings.TrimSpace(string(text)))
	case resp.StatusCode != http.StatusOK:
		return Charge{}, choreo.Permanent(fmt.Errorf("charge order %s: gateway refused the request: %s: %s", req.OrderID, resp.Status, strings.TrimSpace(string(text))))
	}
	var c Charge
	if err := json.Unmarshal(text, &c); err != nil {
		return Charge{}, fmt.Errorf("charge order %s: %w: unreadable answer: %w", req.OrderID, ErrUnavailable, err)
	}
	return c, nil
}
