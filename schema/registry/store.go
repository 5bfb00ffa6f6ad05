package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/choreokit/choreo/schema"
)

// state is everything the registry knows. A Server never mutates the state
// it serves from: a change is applied to a clone, persisted, and then
// swapped in, so a failed save leaves the served state untouched.
type state struct {
	nextID   int
	compat   schema.Compatibility // global level; "" means the server default
	schemas  map[int]*storedSchema
	byCanon  map[string]int // canonical form -> schema id
	subjects map[string]*subject
}

// storedSchema is one schema, identified globally by its id. Stored schemas
// are immutable once created, and never removed: records written with an id
// stay decodable after the subjects that used it are deleted.
type storedSchema struct {
	id    int
	text  string // the text as first registered, with insignificant white space removed
	canon string // the parsed schema written back out by hamba/avro: the identity of the schema
}

// subject is a named, versioned history of schemas, plus an optional
// compatibility level of its own.
type subject struct {
	compat   schema.Compatibility // "" means the global level applies
	versions []version            // ascending by num
}

// version is one entry in a subject's history.
type version struct {
	num     int
	id      int
	deleted bool // soft-deleted
}

func newState() *state {
	return &state{
		nextID:   1,
		schemas:  make(map[int]*storedSchema),
		byCanon:  make(map[string]int),
		subjects: make(map[string]*subject),
	}
}

// clone returns a copy of st that can be changed without changing st.
func (st *state) clone() *state {
	c := &state{
		nextID:   st.nextID,
		compat:   st.compat,
		schemas:  maps.Clone(st.schemas),
		byCanon:  maps.Clone(st.byCanon),
		subjects: make(map[string]*subject, len(st.subjects)),
	}
	for name, sub := range st.subjects {
		c.subjects[name] = &subject{compat: sub.compat, versions: slices.Clone(sub.versions)}
	}
	return c
}

// live returns the versions of sub that are not soft-deleted; with deleted
// set it returns them all. sub may be nil.
func (sub *subject) live(deleted bool) []version {
	if sub == nil {
		return nil
	}
	var out []version
	for _, v := range sub.versions {
		if deleted || !v.deleted {
			out = append(out, v)
		}
	}
	return out
}

// find returns the index in sub.versions of version num, or -1.
func (sub *subject) find(num int) int {
	if sub == nil {
		return -1
	}
	for i, v := range sub.versions {
		if v.num == num {
			return i
		}
	}
	return -1
}

// nextVersion is the number the next registration under sub gets: one more
// than any version it ever had, soft-deleted ones included.
func (sub *subject) nextVersion() int {
	if sub == nil || len(sub.versions) == 0 {
		return 1
	}
	return sub.versions[len(sub.versions)-1].num + 1
}

// parseAvro validates text as an Avro schema and returns its compact text
// (insignificant white space removed, nothing else changed) and its
// identity, schema.NormalizedForm: two texts with the same normalized form
// are the same schema and get the same id. The Parsing Canonical Form would
// not do as identity: it drops defaults, so it calls a schema that adds a
// default the same as the one without.
//
// Like schema.CheckCompatibility, it parses with a fresh name cache, so a
// text must define every named type it uses.
func parseAvro(text string) (compact, canon string, err error) {
	if strings.TrimSpace(text) == "" {
		return "", "", errors.New("empty schema")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(text)); err != nil {
		return "", "", fmt.Errorf("schema is not valid JSON: %w", err)
	}
	canon, err = schema.NormalizedForm(buf.String())
	if err != nil {
		if ise, ok := errorsAs[*schema.InvalidSchemaError](err); ok {
			err = ise.Err
		}
		return "", "", err
	}
	return buf.String(), canon, nil
}

// The file format. Format is bumped on any change that an older reader
// would misread.
type (
	fileState struct {
		Format        int           `json:"format"`
		NextID        int           `json:"nextId"`
		Compatibility string        `json:"compatibility,omitempty"`
		Schemas       []fileSchema  `json:"schemas"`
		Subjects      []fileSubject `json:"subjects"`
	}
	fileSchema struct {
		ID     int    `json:"id"`
		Schema string `json:"schema"`
	}
	fileSubject struct {
		Name          string        `json:"name"`
		Compatibility string        `json:"compatibility,omitempty"`
		Versions      []fileVersion `json:"versions"`
	}
	fileVersion struct {
		Version int  `json:"version"`
		ID      int  `json:"id"`
		Deleted bool `json:"deleted,omitempty"`
	}
)

const fileFormat = 1

// marshal renders st in the file format, deterministically.
func (st *state) marshal() ([]byte, error) {
	f := fileState{
		Format:        fileFormat,
		NextID:        st.nextID,
		Compatibility: string(st.compat),
		Schemas:       make([]fileSchema, 0, len(st.schemas)),
		Subjects:      make([]fileSubject, 0, len(st.subjects)),
	}
	for _, id := range slices.Sorted(maps.Keys(st.schemas)) {
		f.Schemas = append(f.Schemas, fileSchema{ID: id, Schema: st.schemas[id].text})
	}
	for _, name := range slices.Sorted(maps.Keys(st.subjects)) {
		sub := st.subjects[name]
		fs := fileSubject{Name: name, Compatibility: string(sub.compat), Versions: make([]fileVersion, 0, len(sub.versions))}
		for _, v := range sub.versions {
			fs.Versions = append(fs.Versions, fileVersion{Version: v.num, ID: v.id, Deleted: v.deleted})
		}
		f.Subjects = append(f.Subjects, fs)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// unmarshalState parses and checks a state file.
func unmarshalState(data []byte) (*state, error) {
	var f fileState
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	if f.Format != fileFormat {
		return nil, fmt.Errorf("unsupported format %d (want %d)", f.Format, fileFormat)
	}
	st := newState()
	if f.Compatibility != "" {
		c, err := schema.ParseCompatibility(f.Compatibility)
		if err != nil {
			return nil, fmt.Errorf("global compatibility: %w", err)
		}
		st.compat = c
	}
	maxID := 0
	for _, fs := range f.Schemas {
		if fs.ID <= 0 {
			return nil, fmt.Errorf("schema id %d: ids are positive", fs.ID)
		}
		if _, dup := st.schemas[fs.ID]; dup {
			return nil, fmt.Errorf("schema id %d appears twice", fs.ID)
		}
		compact, canon, err := parseAvro(fs.Schema)
		if err != nil {
			return nil, fmt.Errorf("schema id %d: %w", fs.ID, err)
		}
		st.schemas[fs.ID] = &storedSchema{id: fs.ID, text: compact, canon: canon}
		if old, ok := st.byCanon[canon]; !ok || fs.ID < old {
			st.byCanon[canon] = fs.ID
		}
		maxID = max(maxID, fs.ID)
	}
	st.nextID = max(f.NextID, maxID+1, 1)
	for _, fs := range f.Subjects {
		if err := checkSubjectName(fs.Name); err != nil {
			return nil, err
		}
		if _, dup := st.subjects[fs.Name]; dup {
			return nil, fmt.Errorf("subject %q appears twice", fs.Name)
		}
		sub := &subject{}
		if fs.Compatibility != "" {
			c, err := schema.ParseCompatibility(fs.Compatibility)
			if err != nil {
				return nil, fmt.Errorf("subject %q: %w", fs.Name, err)
			}
			sub.compat = c
		}
		for _, fv := range fs.Versions {
			if n := len(sub.versions); fv.Version <= 0 || n > 0 && fv.Version <= sub.versions[n-1].num {
				return nil, fmt.Errorf("subject %q: version %d is out of order", fs.Name, fv.Version)
			}
			if _, ok := st.schemas[fv.ID]; !ok {
				return nil, fmt.Errorf("subject %q version %d: unknown schema id %d", fs.Name, fv.Version, fv.ID)
			}
			sub.versions = append(sub.versions, version{num: fv.Version, id: fv.ID, deleted: fv.Deleted})
		}
		st.subjects[fs.Name] = sub
	}
	return st, nil
}

// loadState reads the state file at path. A missing file is an empty state
// (and exists reports false).
func loadState(path string) (st *state, exists bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return newState(), false, nil
	}
	if err != nil {
		return nil, false, err
	}
	st, err = unmarshalState(data)
	if err != nil {
		return nil, true, fmt.Errorf("registry: state file %s: %w", path, err)
	}
	return st, true, nil
}

// saveState writes st to path atomically: to a temporary file in the same
// directory, synced, then renamed over path.
func saveState(path string, st *state) error {
	data, err := st.marshal()
	if err != nil {
		return fmt.Errorf("registry: encode state: %w", err)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, base+".*.tmp")
	if err != nil {
		return fmt.Errorf("registry: save state: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("registry: save state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("registry: save state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("registry: save state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("registry: save state: %w", err)
	}
	// Make the rename itself durable; not every platform can sync a
	// directory, and the data is already safe in the file.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
