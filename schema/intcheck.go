package schema

import (
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// hamba/avro encodes a Go int into an Avro int by converting it to int32:
// 1<<40 is silently written as 0. The encoder therefore checks the range
// of such values, for the Go types that can carry them (an int field or an
// interface where the schema has an int), and only for those: a struct of
// int32 fields pays nothing.

// intRisk reports whether a value of Go type t, encoded with n, can carry
// a Go int into an Avro int.
func intRisk(n *node, t reflect.Type) bool {
	return riskWalk(n, t, map[riskKey]bool{})
}

type riskKey struct {
	n *node
	t reflect.Type
}

func riskWalk(n *node, t reflect.Type, seen map[riskKey]bool) bool {
	if t == nil {
		return false
	}
	k := riskKey{n, t}
	if seen[k] {
		return false
	}
	seen[k] = true
	switch t.Kind() {
	case reflect.Pointer:
		return riskWalk(n, t.Elem(), seen)
	case reflect.Interface:
		return hasInt(n, map[*node]bool{})
	}
	switch n.kind {
	case kindInt:
		return t.Kind() == reflect.Int
	case kindUnion:
		for _, b := range n.branches {
			if riskWalk(b, t, seen) {
				return true
			}
		}
	case kindRecord:
		switch t.Kind() {
		case reflect.Struct:
			fields := structFields(t)
			for _, f := range n.fields {
				if sf, ok := fields[f.name]; ok && riskWalk(f.node, t.FieldByIndex(sf).Type, seen) {
					return true
				}
			}
		case reflect.Map:
			for _, f := range n.fields {
				if riskWalk(f.node, t.Elem(), seen) {
					return true
				}
			}
		}
	case kindArray:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			return riskWalk(n.items, t.Elem(), seen)
		}
	case kindMap:
		if t.Kind() == reflect.Map {
			return riskWalk(n.items, t.Elem(), seen)
		}
	}
	return false
}

// hasInt reports whether n's schema has an Avro int anywhere.
func hasInt(n *node, seen map[*node]bool) bool {
	if seen[n] {
		return false
	}
	seen[n] = true
	switch n.kind {
	case kindInt:
		return true
	case kindUnion:
		for _, b := range n.branches {
			if hasInt(b, seen) {
				return true
			}
		}
	case kindRecord:
		for _, f := range n.fields {
			if hasInt(f.node, seen) {
				return true
			}
		}
	case kindArray, kindMap:
		return hasInt(n.items, seen)
	}
	return false
}

var structFieldCache sync.Map // reflect.Type → map[string][]int

// structFields maps the Avro names of t's fields (the `avro` tag, or the
// Go name, as hamba/avro does) to their indexes.
func structFields(t reflect.Type) map[string][]int {
	if m, ok := structFieldCache.Load(t); ok {
		return m.(map[string][]int)
	}
	m := map[string][]int{}
	for _, f := range reflect.VisibleFields(t) {
		if f.Anonymous || !f.IsExported() {
			continue
		}
		name := f.Name
		if tag, ok := f.Tag.Lookup("avro"); ok {
			name, _, _ = strings.Cut(tag, ",")
		}
		if _, dup := m[name]; !dup {
			m[name] = f.Index
		}
	}
	structFieldCache.Store(t, m)
	return m
}

// checkInts rejects a Go int over the range of the Avro int it is encoded
// as, naming the field.
func checkInts(n *node, v reflect.Value, depth int) *dataError {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	if depth > defaultLimits.maxDepth {
		return nil // hamba will fail on it, or it is fine
	}
	switch n.kind {
	case kindInt:
		if v.Kind() == reflect.Int && (v.Int() < math.MinInt32 || v.Int() > math.MaxInt32) {
			return mismatchf("value %d overflows Avro int", v.Int())
		}
	case kindUnion:
		for _, b := range n.branches {
			if b.kind == kindLong && v.Kind() == reflect.Int {
				return nil // an int may go to the long branch
			}
		}
		for _, b := range n.branches {
			if err := checkInts(b, v, depth+1); err != nil && (b.kind == kindInt || fits(b, v)) {
				return err
			}
		}
	case kindRecord:
		switch v.Kind() {
		case reflect.Struct:
			fields := structFields(v.Type())
			for _, f := range n.fields {
				idx, ok := fields[f.name]
				if !ok {
					continue
				}
				fv, err := v.FieldByIndexErr(idx)
				if err != nil {
					continue
				}
				if err := checkInts(f.node, fv, depth+1); err != nil {
					return err.at(f.name)
				}
			}
		case reflect.Map:
			if v.Type().Key().Kind() != reflect.String {
				return nil
			}
			for _, f := range n.fields {
				fv := v.MapIndex(reflect.ValueOf(f.name).Convert(v.Type().Key()))
				if !fv.IsValid() {
					continue
				}
				if err := checkInts(f.node, fv, depth+1); err != nil {
					return err.at(f.name)
				}
			}
		}
	case kindArray:
		if v.Kind() == reflect.Slice || v.Kind() == reflect.Array {
			for i := range v.Len() {
				if err := checkInts(n.items, v.Index(i), depth+1); err != nil {
					return err.at("[" + strconv.Itoa(i) + "]")
				}
			}
		}
	case kindMap:
		if v.Kind() == reflect.Map {
			it := v.MapRange()
			for it.Next() {
				if err := checkInts(n.items, it.Value(), depth+1); err != nil {
					return err.at("[" + strconv.Quote(it.Key().String()) + "]")
				}
			}
		}
	}
	return nil
}

// fits reports whether v's kind is one the branch b is encoded from.
func fits(b *node, v reflect.Value) bool {
	switch b.kind {
	case kindRecord:
		return v.Kind() == reflect.Struct || v.Kind() == reflect.Map
	case kindArray:
		return v.Kind() == reflect.Slice || v.Kind() == reflect.Array
	case kindMap:
		return v.Kind() == reflect.Map
	}
	return false
}
