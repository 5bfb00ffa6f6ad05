package schema

import (
	"fmt"

	"github.com/hamba/avro/v2"
)

// nodeKind is the Avro type of a node of a compiled schema.
type nodeKind uint8

const (
	kindNull nodeKind = iota
	kindBoolean
	kindInt
	kindLong
	kindFloat
	kindDouble
	kindBytes
	kindString
	kindRecord
	kindEnum
	kindArray
	kindMap
	kindUnion
	kindFixed
)

// node is a schema compiled for walking Avro binary data: the strict
// validator and the generic decoder run over it instead of over hamba's
// schema values, which keeps them free of interface calls and map look-ups.
// Named types referenced again (recursive records) share one node.
type node struct {
	kind     nodeKind
	name     string           // full name of a named type, the type name otherwise
	logical  avro.LogicalType // logical type of a primitive or fixed, "" if none
	scale    int              // decimal scale
	fields   []nodeField      // record fields, in order
	symbols  []string         // enum symbols
	size     int              // fixed size
	items    *node            // array items, map values
	branches []*node          // union branches
	minSize  int              // fewest bytes an encoded value can take
}

// nodeField is a field of a record node.
type nodeField struct {
	name string
	node *node
}

// compile turns a parsed hamba schema into a node tree.
func compile(s avro.Schema) (*node, error) {
	c := compiler{named: map[string]*node{}}
	n, err := c.compile(s)
	if err != nil {
		return nil, err
	}
	c.sizes(n, map[*node]bool{}, map[*node]bool{})
	return n, nil
}

type compiler struct {
	named map[string]*node
}

func (c *compiler) compile(s avro.Schema) (*node, error) {
	if ref, ok := s.(*avro.RefSchema); ok {
		s = ref.Schema()
	}
	if named, ok := s.(avro.NamedSchema); ok {
		if n := c.named[named.FullName()]; n != nil {
			return n, nil
		}
	}
	n := &node{name: string(s.Type())}
	if ls, ok := s.(avro.LogicalTypeSchema); ok && ls.Logical() != nil {
		n.logical = ls.Logical().Type()
		if dec, ok := ls.Logical().(*avro.DecimalLogicalSchema); ok {
			n.scale = dec.Scale()
		}
	}
	switch s := s.(type) {
	case *avro.NullSchema:
		n.kind = kindNull
	case *avro.PrimitiveSchema:
		switch s.Type() {
		case avro.Boolean:
			n.kind = kindBoolean
		case avro.Int:
			n.kind = kindInt
		case avro.Long:
			n.kind = kindLong
		case avro.Float:
			n.kind = kindFloat
		case avro.Double:
			n.kind = kindDouble
		case avro.Bytes:
			n.kind = kindBytes
		case avro.String:
			n.kind = kindString
		case avro.Null:
			n.kind = kindNull
		default:
			return nil, fmt.Errorf("unsupported primitive type %q", s.Type())
		}
	case *avro.RecordSchema:
		n.kind = kindRecord
		n.name = s.FullName()
		c.named[n.name] = n
		n.fields = make([]nodeField, len(s.Fields()))
		for i, f := range s.Fields() {
			fn, err := c.compile(f.Type())
			if err != nil {
				return nil, err
			}
			n.fields[i] = nodeField{name: f.Name(), node: fn}
		}
	case *avro.EnumSchema:
		n.kind = kindEnum
		n.name = s.FullName()
		c.named[n.name] = n
		n.symbols = s.Symbols()
	case *avro.FixedSchema:
		n.kind = kindFixed
		n.name = s.FullName()
		c.named[n.name] = n
		n.size = s.Size()
	case *avro.ArraySchema:
		n.kind = kindArray
		items, err := c.compile(s.Items())
		if err != nil {
			return nil, err
		}
		n.items = items
	case *avro.MapSchema:
		n.kind = kindMap
		values, err := c.compile(s.Values())
		if err != nil {
			return nil, err
		}
		n.items = values
	case *avro.UnionSchema:
		n.kind = kindUnion
		n.branches = make([]*node, len(s.Types()))
		for i, t := range s.Types() {
			b, err := c.compile(t)
			if err != nil {
				return nil, err
			}
			n.branches[i] = b
		}
	default:
		return nil, fmt.Errorf("unsupported schema type %q", s.Type())
	}
	return n, nil
}

// sizes sets minSize on every node, once per node; a node met again while
// its own size is being computed (recursion) counts as 0, which keeps
// minSize a lower bound.
func (c *compiler) sizes(n *node, busy, done map[*node]bool) int {
	if busy[n] || done[n] {
		return n.minSize
	}
	busy[n] = true
	defer func() { delete(busy, n); done[n] = true }()
	switch n.kind {
	case kindNull:
		n.minSize = 0
	case kindBoolean, kindInt, kindLong, kindEnum, kindBytes, kindString, kindArray, kindMap:
		n.minSize = 1
	case kindFloat:
		n.minSize = 4
	case kindDouble:
		n.minSize = 8
	case kindFixed:
		n.minSize = n.size
	case kindRecord:
		total := 0
		for _, f := range n.fields {
			total += c.sizes(f.node, busy, done)
		}
		n.minSize = total
	case kindUnion:
		least := -1
		for _, b := range n.branches {
			if s := c.sizes(b, busy, done); least < 0 || s < least {
				least = s
			}
		}
		n.minSize = 1 + max(least, 0)
	}
	switch n.kind {
	case kindArray, kindMap:
		c.sizes(n.items, busy, done)
	}
	return n.minSize
}
