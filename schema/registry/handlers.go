package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/choreokit/choreo/schema"
)

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, struct{}{}) })
	m.HandleFunc("GET /contexts", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, []string{"."}) })
	m.HandleFunc("GET /schemas/types", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, []string{"AVRO"}) })

	m.HandleFunc("GET /schemas", s.allSchemas)
	m.HandleFunc("GET /schemas/ids/{id}", s.schemaByID)
	m.HandleFunc("GET /schemas/ids/{id}/schema", s.schemaTextByID)
	m.HandleFunc("GET /schemas/ids/{id}/subjects", s.subjectsByID)
	m.HandleFunc("GET /schemas/ids/{id}/versions", s.versionsByID)

	m.HandleFunc("GET /subjects", s.subjects)
	m.HandleFunc("POST /subjects/{subject}", s.lookup)
	m.HandleFunc("DELETE /subjects/{subject}", s.deleteSubject)
	m.HandleFunc("GET /subjects/{subject}/versions", s.versions)
	m.HandleFunc("POST /subjects/{subject}/versions", s.register)
	m.HandleFunc("GET /subjects/{subject}/versions/{version}", s.version)
	m.HandleFunc("GET /subjects/{subject}/versions/{version}/schema", s.versionText)
	m.HandleFunc("GET /subjects/{subject}/versions/{version}/referencedby", s.referencedBy)
	m.HandleFunc("DELETE /subjects/{subject}/versions/{version}", s.deleteVersion)

	m.HandleFunc("POST /compatibility/subjects/{subject}/versions", s.checkAll)
	m.HandleFunc("POST /compatibility/subjects/{subject}/versions/{version}", s.checkOne)

	m.HandleFunc("GET /config", s.getGlobalConfig)
	m.HandleFunc("PUT /config", s.putGlobalConfig)
	m.HandleFunc("DELETE /config", s.deleteGlobalConfig)
	m.HandleFunc("GET /config/{subject}", s.getSubjectConfig)
	m.HandleFunc("PUT /config/{subject}", s.putSubjectConfig)
	m.HandleFunc("DELETE /config/{subject}", s.deleteSubjectConfig)

	m.HandleFunc("GET /mode", s.getMode)
	m.HandleFunc("PUT /mode", s.putMode)
	m.HandleFunc("GET /mode/{subject}", s.getMode)
	m.HandleFunc("PUT /mode/{subject}", s.putMode)
	m.HandleFunc("DELETE /mode/{subject}", s.getMode)

	m.HandleFunc("/", s.noRoute)
	s.mux = m
}

// noRoute answers requests that match no route: 405 when the path exists
// for another method, 404 otherwise, both in the registry's error shape.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		if method == r.Method {
			continue
		}
		r2 := r.WithContext(r.Context())
		r2.Method = method
		if _, pattern := s.mux.Handler(r2); pattern != "/" && pattern != "" {
			allowed = append(allowed, method)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, newAPIError(http.StatusMethodNotAllowed, codeMethodNotAllowed, "HTTP 405 Method Not Allowed"))
		return
	}
	writeError(w, newAPIError(http.StatusNotFound, codeNotFound, "HTTP 404 Not Found"))
}

// Response bodies.
type (
	subjectSchemaJSON struct {
		Subject string `json:"subject"`
		Version int    `json:"version"`
		ID      int    `json:"id"`
		Schema  string `json:"schema"`
	}
	subjectVersionJSON struct {
		Subject string `json:"subject"`
		Version int    `json:"version"`
	}
	registerResponse struct {
		ID      int    `json:"id"`
		Version int    `json:"version"`
		Schema  string `json:"schema"`
	}
	schemaByIDResponse struct {
		Schema string `json:"schema"`
		MaxID  int    `json:"maxId,omitempty"`
	}
	compatResponse struct {
		IsCompatible bool     `json:"is_compatible"`
		Messages     []string `json:"messages,omitempty"`
	}
	configResponse struct {
		Level schema.Compatibility `json:"compatibilityLevel"`
	}
	setConfigResponse struct {
		Level schema.Compatibility `json:"compatibility"`
	}
	modeResponse struct {
		Mode string `json:"mode"`
	}
)

// schemaRequest is the body of register, lookup and compatibility requests.
type schemaRequest struct {
	Schema     *string           `json:"schema"`
	SchemaType string            `json:"schemaType"`
	References []json.RawMessage `json:"references"`
	Metadata   json.RawMessage   `json:"metadata"`
	RuleSet    json.RawMessage   `json:"ruleSet"`
	ID         int               `json:"id"`
	Version    int               `json:"version"`
}

// decodeBody reads one JSON value from the request body into v. A body that
// is empty, not JSON, or followed by more data is a 400; JSON of the wrong
// shape for v is a 422; a body over MaxRequestBytes is a 42209.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) *apiError {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		if _, ok := errorsAs[*http.MaxBytesError](err); ok {
			return newAPIError(statusUnprocessable, codeSchemaTooLarge, "Request body is larger than %d bytes", MaxRequestBytes)
		}
		return newAPIError(http.StatusBadRequest, codeMalformedJSON, "Cannot read the request body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return newAPIError(http.StatusBadRequest, codeMalformedJSON, "The request body is empty: want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		if te, ok := errorsAs[*json.UnmarshalTypeError](err); ok {
			if te.Field == "" {
				return newAPIError(statusUnprocessable, codeUnprocessable, "The request body is a JSON %s: want %s", te.Value, jsonKind(te.Type))
			}
			return newAPIError(statusUnprocessable, codeUnprocessable, "Field %q of the request body is a JSON %s: want %s", te.Field, te.Value, jsonKind(te.Type))
		}
		return newAPIError(http.StatusBadRequest, codeMalformedJSON, "The request body is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return newAPIError(http.StatusBadRequest, codeMalformedJSON, "The request body is not valid JSON: data after the JSON value")
	}
	return nil
}

// jsonKind names the JSON kind that decodes into t.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer in range"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	default:
		return "another type"
	}
}

// candidate is a validated schema from a request.
type candidate struct {
	text  string // compact text
	canon string // identity
}

// readCandidate decodes a schema request and validates the schema in it.
func readCandidate(w http.ResponseWriter, r *http.Request) (*schemaRequest, candidate, *apiError) {
	var req schemaRequest
	if e := decodeBody(w, r, &req); e != nil {
		return nil, candidate{}, e
	}
	if req.Schema == nil {
		return nil, candidate{}, errInvalidSchema(`Empty schema: the request body needs a "schema" field holding the schema text`)
	}
	if t := strings.ToUpper(req.SchemaType); t != "" && t != "AVRO" {
		return nil, candidate{}, errInvalidSchema("Invalid schema type %s: this registry serves AVRO schemas only", req.SchemaType)
	}
	if len(req.References) > 0 {
		return nil, candidate{}, errInvalidSchema("Schema references are not supported by this registry: define every named type in the schema itself")
	}
	if present(req.Metadata) || present(req.RuleSet) {
		return nil, candidate{}, errInvalidSchema("Schema metadata and rule sets are not supported by this registry")
	}
	text, canon, err := parseAvro(*req.Schema)
	if err != nil {
		hint := ""
		if strings.Contains(err.Error(), "unknown type") {
			hint = " (each schema must define every named type it uses: references to other subjects are not supported)"
		}
		return nil, candidate{}, errInvalidSchema("Invalid schema: %v%s", err, hint)
	}
	return &req, candidate{text: text, canon: canon}, nil
}

// present reports whether an optional JSON member holds something other
// than null or an empty object.
func present(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return false
	}
	var m map[string]json.RawMessage
	return json.Unmarshal(t, &m) != nil || len(m) > 0
}

// checkSubjectName rejects subject names Confluent would not accept.
func checkSubjectName(name string) error {
	if name == "" || !utf8.ValidString(name) {
		return fmt.Errorf("subject name %q is not valid UTF-8 text", name)
	}
	if strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return fmt.Errorf("subject name %q contains a control character", name)
	}
	if name == "__GLOBAL" || name == "__EMPTY" {
		return fmt.Errorf("subject name %q is reserved", name)
	}
	return nil
}

func errInvalidSubject(err error) *apiError {
	return newAPIError(statusUnprocessable, codeInvalidSubject, "Invalid subject: %v", err)
}

// queryBool reports whether query parameter name is "true".
func queryBool(r *http.Request, name string) bool {
	return strings.EqualFold(r.URL.Query().Get(name), "true")
}

// versionParam parses a {version} path segment: a version number, or
// "latest" / -1 for the latest version.
func versionParam(s string) (num int, latest bool, e *apiError) {
	if s == "latest" || s == "-1" {
		return 0, true, nil
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil || n < 1 {
		return 0, false, newAPIError(statusUnprocessable, codeInvalidVersion, messageInvalidVersionFormat, s)
	}
	return int(n), false, nil
}

// resolveVersion finds the version named by the {version} path segment in
// sub, among live versions or, with deleted, among all.
func resolveVersion(name string, sub *subject, param string, deleted bool) (version, *apiError) {
	num, latest, e := versionParam(param)
	if e != nil {
		return version{}, e
	}
	vs := sub.live(deleted)
	if len(vs) == 0 {
		return version{}, errSubjectNotFound(name)
	}
	if latest {
		return vs[len(vs)-1], nil
	}
	for _, v := range vs {
		if v.num == num {
			return v, nil
		}
	}
	return version{}, errVersionNotFound(param)
}

// schemaIDParam parses an {id} path segment.
func schemaIDParam(st *state, s string) (*storedSchema, *apiError) {
	id, err := strconv.Atoi(s)
	if err != nil || st.schemas[id] == nil {
		return nil, errSchemaNotFound("Schema %s not found", s)
	}
	return st.schemas[id], nil
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("subject")
	if err := checkSubjectName(name); err != nil {
		writeError(w, errInvalidSubject(err))
		return
	}
	req, cand, e := readCandidate(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	var resp registerResponse
	e = s.update(func(st *state) (bool, *apiError) {
		sub := st.subjects[name]
		live := sub.live(false)

		// Already registered here: answer with the latest such version.
		for i := len(live) - 1; i >= 0; i-- {
			if ss := st.schemas[live[i].id]; ss.canon == cand.canon {
				if req.ID > 0 && req.ID != ss.id {
					return false, errChosenID(req.ID, ss.id)
				}
				resp = registerResponse{ID: ss.id, Version: live[i].num, Schema: ss.text}
				return false, nil
			}
		}

		level := s.level(st, name)
		texts, nums := versionTexts(st, live)
		if err := schema.CheckCompatibility(level, cand.text, texts); err != nil {
			if ie, ok := errorsAs[*schema.IncompatibleError](err); ok {
				return false, newAPIError(http.StatusConflict, codeIncompatible,
					"Schema being registered is incompatible with an earlier schema for subject %q (compatibility %s): %s",
					name, level, strings.Join(explain(ie.Reasons, nums), "; "))
			}
			return false, compatFailure(err)
		}

		ss := st.schemas[st.byCanon[cand.canon]]
		if ss == nil {
			ss = &storedSchema{id: st.nextID, text: cand.text, canon: cand.canon}
		}
		if req.ID > 0 && req.ID != ss.id {
			return false, errChosenID(req.ID, ss.id)
		}
		num := sub.nextVersion()
		if req.Version > 0 && req.Version != num {
			return false, newAPIError(statusUnprocessable, codeOperationNotPermitted,
				"Choosing the version (%d) needs IMPORT mode, which this registry does not support; the schema would be version %d", req.Version, num)
		}
		if st.schemas[ss.id] == nil {
			st.schemas[ss.id] = ss
			st.byCanon[ss.canon] = ss.id
			st.nextID++
		}
		if sub == nil {
			sub = &subject{}
			st.subjects[name] = sub
		}
		sub.versions = append(sub.versions, version{num: num, id: ss.id})
		resp = registerResponse{ID: ss.id, Version: num, Schema: ss.text}
		return true, nil
	})
	reply(w, e, resp)
}

func errChosenID(asked, got int) *apiError {
	return newAPIError(statusUnprocessable, codeOperationNotPermitted,
		"Choosing the schema id (%d) needs IMPORT mode, which this registry does not support; the schema has id %d", asked, got)
}

// versionTexts returns the schema texts and version numbers of vs.
func versionTexts(st *state, vs []version) (texts []string, nums []int) {
	for _, v := range vs {
		texts = append(texts, st.schemas[v.id].text)
		nums = append(nums, v.num)
	}
	return texts, nums
}

// compatFailure maps an error of schema.CheckCompatibility other than an
// incompatibility to a response.
func compatFailure(err error) *apiError {
	if ise, ok := errorsAs[*schema.InvalidSchemaError](err); ok && ise.Index < 0 {
		return errInvalidSchema("Invalid schema: %v", ise.Err)
	}
	return errInternal(err)
}

var existingRef = regexp.MustCompile(`existing schema #(\d+) of (\d+)`)

// explain rewrites the reasons of a schema.IncompatibleError, which name
// existing schemas by position ("existing schema #2 of 3"), to name them by
// version number ("version 4"); nums are the versions that were checked,
// oldest first.
func explain(reasons []string, nums []int) []string {
	out := make([]string, len(reasons))
	for i, r := range reasons {
		out[i] = existingRef.ReplaceAllStringFunc(r, func(m string) string {
			sub := existingRef.FindStringSubmatch(m)
			k, _ := strconv.Atoi(sub[1])
			n, _ := strconv.Atoi(sub[2])
			if n != len(nums) || k < 1 || k > n {
				return m
			}
			return fmt.Sprintf("version %d", nums[k-1])
		})
	}
	return out
}

func (s *Server) lookup(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("subject")
	_, cand, e := readCandidate(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	st := s.snapshot()
	vs := st.subjects[name].live(queryBool(r, "deleted"))
	if len(vs) == 0 {
		writeError(w, errSubjectNotFound(name))
		return
	}
	for i := len(vs) - 1; i >= 0; i-- {
		if ss := st.schemas[vs[i].id]; ss.canon == cand.canon {
			writeJSON(w, http.StatusOK, subjectSchemaJSON{Subject: name, Version: vs[i].num, ID: ss.id, Schema: ss.text})
			return
		}
	}
	writeError(w, errSchemaNotFound("Schema not found"))
}

func (s *Server) subjects(w http.ResponseWriter, r *http.Request) {
	deleted, deletedOnly := queryBool(r, "deleted"), queryBool(r, "deletedOnly")
	prefix := r.URL.Query().Get("subjectPrefix")
	st := s.snapshot()
	out := []string{}
	for _, name := range slices.Sorted(maps.Keys(st.subjects)) {
		sub := st.subjects[name]
		if !strings.HasPrefix(name, prefix) || len(sub.versions) == 0 {
			continue
		}
		live := len(sub.live(false)) > 0
		if deletedOnly && live || !deletedOnly && !deleted && !live {
			continue
		}
		out = append(out, name)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) versions(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("subject")
	deletedOnly := queryBool(r, "deletedOnly")
	sub := s.snapshot().subjects[name]
	out := []int{}
	for _, v := range sub.live(queryBool(r, "deleted") || deletedOnly) {
		if !deletedOnly || v.deleted {
			out = append(out, v.num)
		}
	}
	if len(out) == 0 {
		writeError(w, errSubjectNotFound(name))
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("subject")
	st := s.snapshot()
	v, e := resolveVersion(name, st.subjects[name], r.PathValue("version"), queryBool(r, "deleted"))
	if e != nil {
		writeError(w, e)
		return
	}
	ss := st.schemas[v.id]
	writeJSON(w, http.StatusOK, subjectSchemaJSON{Subject: name, Version: v.num, ID: ss.id, Schema: ss.text})
}

func (s *Server) versionText(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("subject")
	st := s.snapshot()
	v, e := resolveVersion(name, st.subjects[name], r.PathValue("version"), queryBool(r, "deleted"))
	if e != nil {
		writeError(w, e)
		return
	}
	writeRawSchema(w, st.schemas[v.id].text)
}

func (s *Server) referencedBy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("subject")
	if _, e := resolveVersion(name, s.snapshot().subjects[name], r.PathValue("version"), queryBool(r, "deleted")); e != nil {
		writeError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, []int{})
}

// writeRawSchema sends a schema text as the whole body.
func writeRawSchema(w http.ResponseWriter, text string) {
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, text)
}

func (s *Server) deleteSubject(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("subject")
	permanent := queryBool(r, "permanent")
	var out []int
	e := s.update(func(st *state) (bool, *apiError) {
		sub := st.subjects[name]
		if sub == nil || len(sub.versions) == 0 {
			return false, errSubjectNotFound(name)
		}
		live := len(sub.live(false)) > 0
		if !permanent {
			if !live {
				return false, newAPIError(http.StatusNotFound, codeSubjectSoftDeleted,
					"Subject '%s' was soft deleted. Set permanent=true to delete permanently", name)
			}
			for i := range sub.versions {
				if !sub.versions[i].deleted {
					sub.versions[i].deleted = true
					out = append(out, sub.versions[i].num)
				}
			}
			return true, nil
		}
		if live {
			return false, newAPIError(http.StatusNotFound, codeSubjectNotSoftDeleted,
				"Subject '%s' was not deleted first before being permanently deleted", name)
		}
		for _, v := range sub.versions {
			out = append(out, v.num)
		}
		delete(st.subjects, name)
		return true, nil
	})
	reply(w, e, out)
}

func (s *Server) deleteVersion(w http.ResponseWriter, r *http.Request) {
	name, param := r.PathValue("subject"), r.PathValue("version")
	permanent := queryBool(r, "permanent")
	num, latest, e := versionParam(param)
	if e != nil {
		writeError(w, e)
		return
	}
	e = s.update(func(st *state) (bool, *apiError) {
		sub := st.subjects[name]
		if sub == nil || len(sub.versions) == 0 {
			return false, errSubjectNotFound(name)
		}
		if latest {
			vs := sub.live(permanent)
			if len(vs) == 0 {
				return false, errVersionNotFound(param)
			}
			num = vs[len(vs)-1].num
		}
		i := sub.find(num)
		if i < 0 {
			return false, errVersionNotFound(param)
		}
		if !permanent {
			if sub.versions[i].deleted {
				return false, newAPIError(http.StatusNotFound, codeVersionSoftDeleted,
					"Subject '%s' Version %d was soft deleted. Set permanent=true to delete permanently", name, num)
			}
			sub.versions[i].deleted = true
			return true, nil
		}
		if !sub.versions[i].deleted {
			return false, newAPIError(http.StatusNotFound, codeVersionNotSoftDeleted,
				"Subject '%s' Version %d was not deleted first before being permanently deleted", name, num)
		}
		sub.versions = slices.Delete(sub.versions, i, i+1)
		if len(sub.versions) == 0 && sub.compat == "" {
			delete(st.subjects, name)
		}
		return true, nil
	})
	reply(w, e, num)
}

func (s *Server) schemaByID(w http.ResponseWriter, r *http.Request) {
	st := s.snapshot()
	ss, e := schemaIDParam(st, r.PathValue("id"))
	if e != nil {
		writeError(w, e)
		return
	}
	resp := schemaByIDResponse{Schema: ss.text}
	if queryBool(r, "fetchMaxId") {
		resp.MaxID = st.nextID - 1
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) schemaTextByID(w http.ResponseWriter, r *http.Request) {
	ss, e := schemaIDParam(s.snapshot(), r.PathValue("id"))
	if e != nil {
		writeError(w, e)
		return
	}
	writeRawSchema(w, ss.text)
}

// usages lists the subject versions that use schema id, in subject and
// version order.
func usages(st *state, id int, deleted bool) []subjectVersionJSON {
	out := []subjectVersionJSON{}
	for _, name := range slices.Sorted(maps.Keys(st.subjects)) {
		for _, v := range st.subjects[name].live(deleted) {
			if v.id == id {
				out = append(out, subjectVersionJSON{Subject: name, Version: v.num})
			}
		}
	}
	return out
}

func (s *Server) subjectsByID(w http.ResponseWriter, r *http.Request) {
	st := s.snapshot()
	ss, e := schemaIDParam(st, r.PathValue("id"))
	if e != nil {
		writeError(w, e)
		return
	}
	out := []string{}
	for _, u := range usages(st, ss.id, queryBool(r, "deleted")) {
		if len(out) == 0 || out[len(out)-1] != u.Subject {
			out = append(out, u.Subject)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) versionsByID(w http.ResponseWriter, r *http.Request) {
	st := s.snapshot()
	ss, e := schemaIDParam(st, r.PathValue("id"))
	reply(w, e, usages(st, ss.id, queryBool(r, "deleted")))
}

func (s *Server) allSchemas(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("subjectPrefix")
	deleted, latestOnly := queryBool(r, "deleted"), queryBool(r, "latestOnly")
	st := s.snapshot()
	out := []subjectSchemaJSON{}
	for _, name := range slices.Sorted(maps.Keys(st.subjects)) {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		vs := st.subjects[name].live(deleted)
		if latestOnly && len(vs) > 0 {
			vs = vs[len(vs)-1:]
		}
		for _, v := range vs {
			ss := st.schemas[v.id]
			out = append(out, subjectSchemaJSON{Subject: name, Version: v.num, ID: ss.id, Schema: ss.text})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) checkAll(w http.ResponseWriter, r *http.Request) {
	s.checkCompat(w, r, "")
}

func (s *Server) checkOne(w http.ResponseWriter, r *http.Request) {
	s.checkCompat(w, r, r.PathValue("version"))
}

// checkCompat answers a compatibility check: against the versions that
// registering would check when param is empty, else against the one version
// it names, at the subject's level either way.
func (s *Server) checkCompat(w http.ResponseWriter, r *http.Request, param string) {
	name := r.PathValue("subject")
	if param != "" {
		if _, _, e := versionParam(param); e != nil {
			writeError(w, e)
			return
		}
	}
	_, cand, e := readCandidate(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	st := s.snapshot()
	sub := st.subjects[name]
	vs := sub.live(false)
	if param != "" {
		v, e := resolveVersion(name, sub, param, false)
		if e != nil {
			writeError(w, e)
			return
		}
		vs = []version{v}
	}
	level := s.level(st, name)
	texts, nums := versionTexts(st, vs)
	err := schema.CheckCompatibility(level, cand.text, texts)
	if err == nil {
		writeJSON(w, http.StatusOK, compatResponse{IsCompatible: true})
		return
	}
	ie, ok := errorsAs[*schema.IncompatibleError](err)
	if !ok {
		writeError(w, compatFailure(err))
		return
	}
	resp := compatResponse{IsCompatible: false}
	if queryBool(r, "verbose") {
		resp.Messages = explain(ie.Reasons, nums)
		resp.Messages = append(resp.Messages, fmt.Sprintf("compatibility: %s", level))
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) getGlobalConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, configResponse{Level: s.global(s.snapshot())})
}

// readLevel decodes a config request: {"compatibility": "FULL"}, or the
// "compatibilityLevel" member that GET /config answers with.
func readLevel(w http.ResponseWriter, r *http.Request) (schema.Compatibility, *apiError) {
	var req struct {
		Compatibility      *string `json:"compatibility"`
		CompatibilityLevel *string `json:"compatibilityLevel"`
	}
	if e := decodeBody(w, r, &req); e != nil {
		return "", e
	}
	var raw string
	switch {
	case req.Compatibility != nil:
		raw = *req.Compatibility
	case req.CompatibilityLevel != nil:
		raw = *req.CompatibilityLevel
	}
	level, err := schema.ParseCompatibility(raw)
	if err != nil {
		return "", newAPIError(statusUnprocessable, codeInvalidCompatibility, messageInvalidCompatibility, raw)
	}
	return level, nil
}

func (s *Server) putGlobalConfig(w http.ResponseWriter, r *http.Request) {
	level, e := readLevel(w, r)
	if e == nil {
		e = s.update(func(st *state) (bool, *apiError) {
			st.compat = level
			return true, nil
		})
	}
	reply(w, e, setConfigResponse{Level: level})
}

func (s *Server) deleteGlobalConfig(w http.ResponseWriter, r *http.Request) {
	var old schema.Compatibility
	e := s.update(func(st *state) (bool, *apiError) {
		old = s.global(st)
		st.compat = ""
		return true, nil
	})
	reply(w, e, setConfigResponse{Level: old})
}

func errSubjectCompatNotSet(name string) *apiError {
	return newAPIError(http.StatusNotFound, codeSubjectCompatNotSet,
		"Subject '%s' does not have subject-level compatibility configured", name)
}

func (s *Server) getSubjectConfig(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("subject")
	st := s.snapshot()
	if sub := st.subjects[name]; sub != nil && sub.compat != "" {
		writeJSON(w, http.StatusOK, configResponse{Level: sub.compat})
		return
	}
	if queryBool(r, "defaultToGlobal") {
		writeJSON(w, http.StatusOK, configResponse{Level: s.global(st)})
		return
	}
	writeError(w, errSubjectCompatNotSet(name))
}

func (s *Server) putSubjectConfig(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("subject")
	if err := checkSubjectName(name); err != nil {
		writeError(w, errInvalidSubject(err))
		return
	}
	level, e := readLevel(w, r)
	if e == nil {
		e = s.update(func(st *state) (bool, *apiError) {
			sub := st.subjects[name]
			if sub == nil {
				sub = &subject{}
				st.subjects[name] = sub
			}
			sub.compat = level
			return true, nil
		})
	}
	reply(w, e, setConfigResponse{Level: level})
}

func (s *Server) deleteSubjectConfig(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("subject")
	var old schema.Compatibility
	e := s.update(func(st *state) (bool, *apiError) {
		sub := st.subjects[name]
		if sub == nil {
			return false, errSubjectNotFound(name)
		}
		if sub.compat == "" {
			return false, errSubjectCompatNotSet(name)
		}
		old, sub.compat = sub.compat, ""
		if len(sub.versions) == 0 {
			delete(st.subjects, name)
		}
		return true, nil
	})
	reply(w, e, setConfigResponse{Level: old})
}

const modeReadWrite = "READWRITE"

func (s *Server) getMode(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, modeResponse{Mode: modeReadWrite})
}

func (s *Server) putMode(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Mode string `json:"mode"`
	}
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	switch m := strings.ToUpper(req.Mode); m {
	case modeReadWrite:
		writeJSON(w, http.StatusOK, modeResponse{Mode: modeReadWrite})
	case "READONLY", "READONLY_OVERRIDE", "IMPORT":
		writeError(w, newAPIError(statusUnprocessable, codeInvalidMode, "Mode %s is not supported: this registry is always READWRITE", m))
	default:
		writeError(w, newAPIError(statusUnprocessable, codeInvalidMode, "Invalid mode %q. Valid values are READWRITE, READONLY, READONLY_OVERRIDE and IMPORT", req.Mode))
	}
}

// reply writes e in Confluent's error shape, or, when e is nil, v as the
// 200 answer.
func reply(w http.ResponseWriter, e *apiError, v any) {
	if e != nil {
		writeError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, v)
}
