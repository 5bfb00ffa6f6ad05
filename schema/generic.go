package schema

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/hamba/avro/v2"
)

// value walks one value of n, strictly as validate does, and returns it as
// a JSON-ready Go value (see Codec.DecodeGeneric for the mapping).
func (w *walker) value(n *node) (any, *dataError) {
	switch n.kind {
	case kindNull:
		return nil, nil
	case kindBoolean:
		if w.pos >= len(w.buf) {
			return nil, truncatedf("data ends before a boolean")
		}
		b := w.buf[w.pos]
		if b > 1 {
			return nil, mismatchf("invalid boolean byte 0x%02x", b)
		}
		w.pos++
		return b == 1, nil
	case kindInt:
		i, err := w.readInt()
		if err != nil {
			return nil, err
		}
		switch n.logical {
		case avro.Date:
			return time.Unix(int64(i)*86400, 0).UTC().Format(time.DateOnly), nil
		case avro.TimeMillis:
			return clock(time.Duration(i)*time.Millisecond, "15:04:05.000"), nil
		}
		return i, nil
	case kindLong:
		i, err := w.readLong()
		if err != nil {
			return nil, err
		}
		switch n.logical {
		case avro.TimestampMillis:
			return time.UnixMilli(i).UTC().Format(time.RFC3339Nano), nil
		case avro.TimestampMicros:
			return time.UnixMicro(i).UTC().Format(time.RFC3339Nano), nil
		case avro.LocalTimestampMillis:
			return time.UnixMilli(i).UTC().Format("2006-01-02T15:04:05.999999999"), nil
		case avro.LocalTimestampMicros:
			return time.UnixMicro(i).UTC().Format("2006-01-02T15:04:05.999999999"), nil
		case avro.TimeMicros:
			return clock(time.Duration(i)*time.Microsecond, "15:04:05.000000"), nil
		}
		return i, nil
	case kindFloat:
		b, err := w.take(4, "float")
		if err != nil {
			return nil, err
		}
		f := math.Float32frombits(binary.LittleEndian.Uint32(b))
		if v, ok := nonFinite(float64(f)); ok {
			return v, nil
		}
		return f, nil
	case kindDouble:
		b, err := w.take(8, "double")
		if err != nil {
			return nil, err
		}
		f := math.Float64frombits(binary.LittleEndian.Uint64(b))
		if v, ok := nonFinite(f); ok {
			return v, nil
		}
		return f, nil
	case kindBytes:
		b, err := w.readBytes("bytes")
		if err != nil {
			return nil, err
		}
		if n.logical == avro.Decimal {
			return decimalString(b, n.scale), nil
		}
		return base64.StdEncoding.EncodeToString(b), nil
	case kindString:
		b, err := w.readString("string")
		if err != nil {
			return nil, err
		}
		return string(b), nil
	case kindFixed:
		b, err := w.take(n.size, n.name)
		if err != nil {
			return nil, err
		}
		switch {
		case n.logical == avro.Decimal:
			return decimalString(b, n.scale), nil
		case n.logical == avro.Duration && n.size == 12:
			return map[string]any{
				"months": binary.LittleEndian.Uint32(b[0:4]),
				"days":   binary.LittleEndian.Uint32(b[4:8]),
				"millis": binary.LittleEndian.Uint32(b[8:12]),
			}, nil
		}
		return base64.StdEncoding.EncodeToString(b), nil
	case kindEnum:
		i, err := w.enumIndex(n)
		if err != nil {
			return nil, err
		}
		return n.symbols[i], nil
	case kindUnion:
		i, err := w.unionIndex(n)
		if err != nil {
			return nil, err
		}
		return w.value(n.branches[i])
	case kindRecord:
		if err := w.enter(); err != nil {
			return nil, err
		}
		m := make(map[string]any, len(n.fields))
		for i := range n.fields {
			v, err := w.value(n.fields[i].node)
			if err != nil {
				return nil, err.at(n.fields[i].name)
			}
			m[n.fields[i].name] = v
		}
		w.depth--
		return m, nil
	case kindArray:
		arr := []any{}
		total := 0
		for {
			count, size, err := w.blockHeader(n, &total)
			if err != nil {
				return nil, err
			}
			if count == 0 {
				return arr, nil
			}
			start := w.pos
			for i := 0; i < count; i++ {
				v, err := w.value(n.items)
				if err != nil {
					return nil, err.at("[" + strconv.Itoa(len(arr)) + "]")
				}
				arr = append(arr, v)
			}
			if size >= 0 && w.pos-start != size {
				return nil, mismatchf("%s block size %d, but its items take %d bytes", n.name, size, w.pos-start)
			}
		}
	case kindMap:
		m := map[string]any{}
		total := 0
		for {
			count, size, err := w.blockHeader(n, &total)
			if err != nil {
				return nil, err
			}
			if count == 0 {
				return m, nil
			}
			start := w.pos
			for i := 0; i < count; i++ {
				key, err := w.readString("map key")
				if err != nil {
					return nil, err
				}
				v, err := w.value(n.items)
				if err != nil {
					return nil, err.at("[" + strconv.Quote(string(key)) + "]")
				}
				m[string(key)] = v
			}
			if size >= 0 && w.pos-start != size {
				return nil, mismatchf("%s block size %d, but its items take %d bytes", n.name, size, w.pos-start)
			}
		}
	}
	return nil, mismatchf("unknown node kind %d", n.kind)
}

// clock formats a time of day.
func clock(d time.Duration, layout string) string {
	return time.Time{}.Add(d).Format(layout)
}

// nonFinite returns the JSON-ready text of NaN and the infinities, which
// encoding/json cannot encode as numbers.
func nonFinite(f float64) (string, bool) {
	switch {
	case math.IsNaN(f):
		return "NaN", true
	case math.IsInf(f, 1):
		return "Infinity", true
	case math.IsInf(f, -1):
		return "-Infinity", true
	}
	return "", false
}

// decimalString renders an Avro decimal (big-endian two's-complement
// unscaled value) with scale digits after the point.
func decimalString(b []byte, scale int) string {
	v := new(big.Int).SetBytes(b)
	if len(b) > 0 && b[0]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	neg := v.Sign() < 0
	digits := new(big.Int).Abs(v).String()
	if scale > 0 {
		if len(digits) <= scale {
			digits = strings.Repeat("0", scale-len(digits)+1) + digits
		}
		digits = digits[:len(digits)-scale] + "." + digits[len(digits)-scale:]
	}
	if neg {
		return "-" + digits
	}
	return digits
}
