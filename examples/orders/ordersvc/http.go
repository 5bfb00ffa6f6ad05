package ordersvc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
)

// MaxRequestBytes bounds the body of POST /orders: an order is a few dozen
// bytes, and an unbounded body is memory anyone can make the service spend.
const MaxRequestBytes = 64 << 10

// Handler serves the order API:
//
//	POST /orders       {"customer": "ada@example.com", "amount_cents": 1999, "currency": "EUR"}
//	                   202 Accepted, Location: /orders/{id},
//	                   {"order_id": …, "correlation_id": …, "status": "placed"}
//	GET  /orders/{id}  200 with the order and its timeline, or 404
//
// Mistakes in the request are answered 400 (413 for a body over
// MaxRequestBytes) with {"error": "…"} saying what is wrong; an order that
// could not be published is 503, and can be tried again.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", s.postOrder)
	mux.HandleFunc("GET /orders/{id}", s.getOrder)
	return mux
}

// placed is the answer to POST /orders.
type placed struct {
	OrderID       string `json:"order_id"`
	CorrelationID string `json:"correlation_id"`
	Status        string `json:"status"`
}

func (s *Service) postOrder(w http.ResponseWriter, r *http.Request) {
	req, status, err := decodeOrder(w, r)
	if err != nil {
		writeError(w, status, err.Error())
		return
	}
	o, err := s.Place(r.Context(), req)
	switch {
	case errors.Is(err, ErrInvalidOrder):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		s.log.ErrorContext(r.Context(), "order not placed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "the order could not be placed; try again")
		return
	}
	w.Header().Set("Location", "/orders/"+o.ID)
	writeJSON(w, http.StatusAccepted, placed{OrderID: o.ID, CorrelationID: o.CorrelationID, Status: o.Status})
}

// decodeOrder reads the request body: one JSON object with known fields
// only, at most MaxRequestBytes. It returns the HTTP status of a failure.
func decodeOrder(w http.ResponseWriter, r *http.Request) (PlaceRequest, int, error) {
	var req PlaceRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	dec.DisallowUnknownFields() // a misspelt "amount" must not become an order of 0
	err := dec.Decode(&req)
	var syntax *json.SyntaxError
	if err == nil {
		// Nothing but white space may follow the object.
		switch extra := dec.Decode(new(json.RawMessage)); {
		case extra == io.EOF:
			return req, 0, nil
		case extra == nil, errors.As(extra, &syntax):
			return req, http.StatusBadRequest, errors.New("body must hold one JSON object and nothing after it")
		default:
			err = extra // too large, or the connection failed
		}
	}
	var tooLarge *http.MaxBytesError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooLarge):
		return req, http.StatusRequestEntityTooLarge, fmt.Errorf("request body is over %d bytes", tooLarge.Limit)
	case errors.Is(err, io.EOF):
		return req, http.StatusBadRequest, errors.New(`empty body: want a JSON object such as {"customer": "ada@example.com", "amount_cents": 1999}`)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return req, http.StatusBadRequest, errors.New("body is not valid JSON: it ends too soon")
	case errors.As(err, &syntax):
		return req, http.StatusBadRequest, fmt.Errorf("body is not valid JSON: %v (at byte %d)", syntax, syntax.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return req, http.StatusBadRequest, fmt.Errorf("body must be a JSON object, not %s", typ.Value)
		}
		return req, http.StatusBadRequest, fmt.Errorf("field %s: want %s, not %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return req, http.StatusBadRequest, fmt.Errorf("unknown field %s: want customer, amount_cents, currency", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return req, http.StatusBadRequest, fmt.Errorf("bad request body: %v", err)
}

// jsonKind names a Go kind as a JSON value.
func jsonKind(kind string) string {
	switch kind {
	case "int64", "int", "int32":
		return "a whole number"
	case "string":
		return "a string"
	}
	return kind
}

func (s *Service) getOrder(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	o, ok := s.Order(id)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no order %q", id))
		return
	}
	writeJSON(w, http.StatusOK, o)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		// The client went away; nothing to tell it.
		slog.Debug("writing the answer", "err", err)
	}
}
