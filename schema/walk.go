package schema

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/choreokit/choreo"
)

// limits bound what one decode may claim or build.
type limits struct {
	maxLen       int // longest string or bytes, in bytes
	maxZeroItems int // most items of a type that takes no bytes (null …) in one array or map
	maxDepth     int // deepest nesting of records (recursive schemas)
}

var defaultLimits = limits{maxLen: DefaultMaxBytesLength, maxZeroItems: 1 << 16, maxDepth: 256}

// dataError is a rejection found while walking Avro data. It becomes a
// *choreo.Error of its kind once the walk is over and the path is known.
type dataError struct {
	kind     choreo.ErrorKind
	sentinel error
	msg      string
	path     []string // innermost first: "name", "[3]", "items"
}

func (e *dataError) at(step string) *dataError {
	e.path = append(e.path, step)
	return e
}

// where returns the path as "items[3].name", outermost first.
func (e *dataError) where() string {
	var b strings.Builder
	for i := len(e.path) - 1; i >= 0; i-- {
		step := e.path[i]
		if b.Len() > 0 && !strings.HasPrefix(step, "[") {
			b.WriteByte('.')
		}
		b.WriteString(step)
	}
	return b.String()
}

// err returns the rejection as a *choreo.Error; op names the operation and
// the schema ("schema: decode com.acme.OrderPlaced").
func (e *dataError) err(op string) error {
	if where := e.where(); where != "" {
		return kindError(e.kind, e.sentinel, "%s: field %s: %s", op, where, e.msg)
	}
	return kindError(e.kind, e.sentinel, "%s: %s", op, e.msg)
}

func mismatchf(format string, args ...any) *dataError {
	return &dataError{kind: choreo.KindSchemaMismatch, sentinel: ErrSchemaMismatch, msg: fmt.Sprintf(format, args...)}
}

func truncatedf(format string, args ...any) *dataError {
	return &dataError{kind: choreo.KindTruncated, sentinel: ErrTruncated, msg: fmt.Sprintf(format, args...)}
}

func tooLargef(format string, args ...any) *dataError {
	return &dataError{kind: choreo.KindTooLarge, sentinel: ErrTooLarge, msg: fmt.Sprintf(format, args...)}
}

// walker reads Avro binary data strictly: every varint must fit its type,
// every length must be non-negative and within the data, every union and
// enum index must exist, every string must be UTF-8.
type walker struct {
	buf   []byte
	pos   int
	depth int
	lim   *limits
}

// check validates that body is exactly one value of n.
func (n *node) check(body []byte, lim *limits) *dataError {
	w := walker{buf: body, lim: lim}
	if err := w.validate(n); err != nil {
		return err
	}
	if w.pos != len(body) {
		return &dataError{kind: choreo.KindTrailingBytes, sentinel: ErrTrailingBytes,
			msg: fmt.Sprintf("%d bytes follow the %d-byte %s value", len(body)-w.pos, w.pos, n.name)}
	}
	return nil
}

func (w *walker) readLong() (int64, *dataError) {
	buf := w.buf[w.pos:]
	if len(buf) > 0 && buf[0] < 0x80 { // one byte: most counts, indexes, lengths
		w.pos++
		return int64(buf[0]>>1) ^ -int64(buf[0]&1), nil
	}
	var v uint64
	for i, b := range buf {
		if i == 9 {
			if b > 1 {
				return 0, mismatchf("long varint overflows 64 bits")
			}
			v |= uint64(b) << 63
			w.pos += 10
			return int64(v>>1) ^ -int64(v&1), nil
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			w.pos += i + 1
			return int64(v>>1) ^ -int64(v&1), nil
		}
	}
	return 0, truncatedVarint(buf)
}

func (w *walker) readInt() (int32, *dataError) {
	buf := w.buf[w.pos:]
	if len(buf) > 0 && buf[0] < 0x80 {
		w.pos++
		return int32(buf[0]>>1) ^ -int32(buf[0]&1), nil
	}
	var v uint32
	for i, b := range buf {
		if i == 4 {
			if b > 0x0f {
				return 0, mismatchf("int varint overflows 32 bits")
			}
			v |= uint32(b) << 28
			w.pos += 5
			return int32(v>>1) ^ -int32(v&1), nil
		}
		v |= uint32(b&0x7f) << (7 * i)
		if b < 0x80 {
			w.pos += i + 1
			return int32(v>>1) ^ -int32(v&1), nil
		}
	}
	return 0, truncatedVarint(buf)
}

func truncatedVarint(buf []byte) *dataError {
	if len(buf) == 0 {
		return truncatedf("data ends before the value")
	}
	return truncatedf("data ends inside a varint")
}

// take returns the next n bytes.
func (w *walker) take(n int, what string) ([]byte, *dataError) {
	if n > len(w.buf)-w.pos {
		return nil, truncatedf("%s of %d bytes, %d left", what, n, len(w.buf)-w.pos)
	}
	b := w.buf[w.pos : w.pos+n : w.pos+n]
	w.pos += n
	return b, nil
}

// readBytes reads a length-prefixed bytes or string value.
func (w *walker) readBytes(what string) ([]byte, *dataError) {
	var n int64
	if w.pos < len(w.buf) && w.buf[w.pos] < 0x80 { // a length under 64
		n = int64(w.buf[w.pos] >> 1)
		if w.buf[w.pos]&1 != 0 {
			n = -n - 1
		}
		w.pos++
	} else {
		var err *dataError
		if n, err = w.readLong(); err != nil {
			return nil, err
		}
	}
	if n < 0 {
		return nil, mismatchf("negative %s length %d", what, n)
	}
	if n > int64(len(w.buf)-w.pos) {
		return nil, truncatedf("%s of %d bytes, %d left", what, n, len(w.buf)-w.pos)
	}
	if int(n) > w.lim.maxLen {
		return nil, tooLargef("%s of %d bytes is over the %d-byte limit", what, n, w.lim.maxLen)
	}
	b := w.buf[w.pos : w.pos+int(n) : w.pos+int(n)]
	w.pos += int(n)
	return b, nil
}

func (w *walker) readString(what string) ([]byte, *dataError) {
	b, err := w.readBytes(what)
	if err != nil {
		return nil, err
	}
	for _, c := range b {
		if c >= utf8.RuneSelf { // not all ASCII: check properly
			if !utf8.Valid(b) {
				return nil, mismatchf("%s is not valid UTF-8", what)
			}
			break
		}
	}
	return b, nil
}

func (w *walker) enumIndex(n *node) (int, *dataError) {
	i, err := w.readInt()
	if err != nil {
		return 0, err
	}
	if i < 0 || int(i) >= len(n.symbols) {
		return 0, mismatchf("enum %s index %d out of range [0,%d)", n.name, i, len(n.symbols))
	}
	return int(i), nil
}

func (w *walker) unionIndex(n *node) (int, *dataError) {
	i, err := w.readLong()
	if err != nil {
		return 0, err
	}
	if i < 0 || i >= int64(len(n.branches)) {
		return 0, mismatchf("union index %d out of range [0,%d)", i, len(n.branches))
	}
	return int(i), nil
}

func (w *walker) enter() *dataError {
	w.depth++
	if w.depth > w.lim.maxDepth {
		return mismatchf("records nested deeper than %d", w.lim.maxDepth)
	}
	return nil
}

// blockHeader reads the header of an array or map block: the item count
// (0 ends the value) and, for a negative count, the block's byte size,
// which is returned (-1 when absent). The count is checked against the
// bytes left so that no claim can make the decoder allocate more than the
// data could hold.
func (w *walker) blockHeader(n *node, total *int) (count int, size int, err *dataError) {
	c, err := w.readLong()
	if err != nil || c == 0 {
		return 0, -1, err
	}
	size = -1
	if c < 0 {
		if c == math.MinInt64 {
			return 0, -1, mismatchf("%s block count overflows", n.name)
		}
		c = -c
		s, err := w.readLong()
		if err != nil {
			return 0, -1, err
		}
		if s < 0 {
			return 0, -1, mismatchf("negative %s block size %d", n.name, s)
		}
		if s > int64(len(w.buf)-w.pos) {
			return 0, -1, truncatedf("%s block of %d bytes, %d left", n.name, s, len(w.buf)-w.pos)
		}
		size = int(s)
	}
	per := n.items.minSize
	if n.kind == kindMap {
		per++ // the key's length
	}
	left := len(w.buf) - w.pos
	if per > 0 {
		if c > int64(left/per) {
			return 0, -1, truncatedf("%s block of %d items needs at least %d bytes, %d left", n.name, c, c*int64(per), left)
		}
	} else if c > int64(w.lim.maxZeroItems-*total) {
		return 0, -1, tooLargef("%s of more than %d empty items", n.name, w.lim.maxZeroItems)
	}
	*total += int(c)
	return int(c), size, nil
}

// validate walks one value of n.
func (w *walker) validate(n *node) *dataError {
	switch n.kind {
	case kindNull:
		return nil
	case kindBoolean:
		if w.pos >= len(w.buf) {
			return truncatedf("data ends before a boolean")
		}
		if b := w.buf[w.pos]; b > 1 {
			return mismatchf("invalid boolean byte 0x%02x", b)
		}
		w.pos++
		return nil
	case kindInt:
		_, err := w.readInt()
		return err
	case kindLong:
		_, err := w.readLong()
		return err
	case kindFloat:
		_, err := w.take(4, "float")
		return err
	case kindDouble:
		_, err := w.take(8, "double")
		return err
	case kindBytes:
		_, err := w.readBytes("bytes")
		return err
	case kindString:
		_, err := w.readString("string")
		return err
	case kindFixed:
		_, err := w.take(n.size, n.name)
		return err
	case kindEnum:
		_, err := w.enumIndex(n)
		return err
	case kindUnion:
		i, err := w.unionIndex(n)
		if err != nil {
			return err
		}
		return w.validate(n.branches[i])
	case kindRecord:
		if err := w.enter(); err != nil {
			return err
		}
		for i := range n.fields {
			var err *dataError
			// The common field types without a call more.
			switch f := n.fields[i].node; f.kind {
			case kindString:
				_, err = w.readString("string")
			case kindLong:
				_, err = w.readLong()
			case kindInt:
				_, err = w.readInt()
			default:
				err = w.validate(f)
			}
			if err != nil {
				return err.at(n.fields[i].name)
			}
		}
		w.depth--
		return nil
	case kindArray, kindMap:
		total := 0
		for {
			count, size, err := w.blockHeader(n, &total)
			if err != nil {
				return err
			}
			if count == 0 {
				return nil
			}
			start := w.pos
			for i := 0; i < count; i++ {
				if n.kind == kindMap {
					key, err := w.readString("map key")
					if err != nil {
						return err
					}
					if err := w.validate(n.items); err != nil {
						return err.at("[" + strconv.Quote(string(key)) + "]")
					}
					continue
				}
				if err := w.validate(n.items); err != nil {
					return err.at(fmt.Sprintf("[%d]", total-count+i))
				}
			}
			if size >= 0 && w.pos-start != size {
				return mismatchf("%s block size %d, but its items take %d bytes", n.name, size, w.pos-start)
			}
		}
	}
	return mismatchf("unknown node kind %d", n.kind)
}
