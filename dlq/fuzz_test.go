package dlq_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/dlq"
)

// FuzzDecode feeds arbitrary record values to Decode. It must never panic,
// must reject with ErrInvalidEnvelope (the static codec never has an
// outage), and what it accepts must re-encode to a value that decodes to
// the same dead letter, and must view, encode to JSON and replay.
func FuzzDecode(f *testing.F) {
	codec := staticCodec()
	valid := encode(f, codec, idEnvelope, dlq.Schema(), sample())
	f.Add(valid)
	f.Add(valid[:len(valid)-1])
	f.Add(append(append([]byte{}, valid...), 0))
	f.Add(encode(f, codec, idEnvelopeNext, nextEnvelopeSchema, sample()))
	f.Add(encode(f, codec, idOrder, orderPlacedSchema, OrderPlaced{OrderID: "o", AmountCents: 1}))
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 1})
	f.Add([]byte("not avro"))

	ctx := context.Background()
	f.Fuzz(func(t *testing.T, value []byte) {
		from := &kgo.Record{Topic: "grp.dlq", Partition: 1, Offset: 2, Value: value}
		dl, err := dlq.Decode(ctx, codec, from)
		if err != nil {
			if !errors.Is(err, dlq.ErrInvalidEnvelope) {
				t.Fatalf("Decode: %v; want an error wrapping ErrInvalidEnvelope", err)
			}
			if dl != nil {
				t.Fatal("Decode returned a dead letter with its error")
			}
			return
		}
		again := encode(t, codec, idEnvelope, dlq.Schema(), dl)
		dl2, err := dlq.Decode(ctx, codec, &kgo.Record{Value: again})
		if err != nil {
			t.Fatalf("re-encoded dead letter does not decode: %v", err)
		}
		if again2 := encode(t, codec, idEnvelope, dlq.Schema(), dl2); !bytes.Equal(again, again2) {
			t.Fatalf("re-encoding is not stable:\n%x\n%x", again, again2)
		}
		if _, err := json.Marshal(dl.View(ctx, codec)); err != nil {
			t.Fatalf("view does not encode to JSON: %v", err)
		}
		if r := dl.Replay(from); r.Topic != dlq.RedriveTopic(dl.Group) {
			t.Fatalf("replay to %q; want %q", r.Topic, dlq.RedriveTopic(dl.Group))
		}
		if r := dl.ReplayTo(dl.Original.Topic, from); r.Topic != dl.Original.Topic {
			t.Fatalf("replay to %q; want %q", r.Topic, dl.Original.Topic)
		}
	})
}
