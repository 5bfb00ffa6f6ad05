package schema

import (
	"encoding/binary"

	"github.com/choreokit/choreo"
)

// MagicByte is the first byte of every value in the Confluent wire format.
const MagicByte byte = 0

// HeaderSize is the size of the wire-format header: the magic byte and the
// 4-byte big-endian schema id.
const HeaderSize = 5

// AppendHeader appends the wire-format header for schema id to dst.
func AppendHeader(dst []byte, id int) []byte {
	return append(dst, MagicByte, byte(uint32(id)>>24), byte(uint32(id)>>16), byte(uint32(id)>>8), byte(uint32(id)))
}

// ParseHeader splits a wire-format value into its schema id and its Avro
// body. It fails with ErrEmptyValue (kind choreo.KindEmptyValue) on an
// empty value, with ErrBadMagicByte (kind choreo.KindBadMagicByte) when the
// first byte is not MagicByte, and with ErrTruncated (kind
// choreo.KindTruncated) when the value is shorter than HeaderSize.
// The body may be empty: whether that is valid depends on the schema.
func ParseHeader(data []byte) (id int, body []byte, err error) {
	if len(data) == 0 {
		return 0, nil, kindError(choreo.KindEmptyValue, ErrEmptyValue, "schema: decode")
	}
	if data[0] != MagicByte {
		return 0, nil, kindError(choreo.KindBadMagicByte, ErrBadMagicByte, "schema: decode: first byte is 0x%02x, want 0x00", data[0])
	}
	if len(data) < HeaderSize {
		return 0, nil, kindError(choreo.KindTruncated, ErrTruncated, "schema: decode: value of %d bytes is shorter than the %d-byte header", len(data), HeaderSize)
	}
	return int(binary.BigEndian.Uint32(data[1:5])), data[HeaderSize:], nil
}
