package check

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Service is what the code says about one example service.
type Service struct {
	Dir     string   // examples/<Dir>, a main package
	Group   string   // its consumer group
	Sources []string // topics it handles (consumer.Handle)
	Outputs []string // topics it publishes to
	Port    int      // the port of its default HTTP_ADDR
	// Own are the topics the consumer needs besides its sources (retry and
	// dead-letter topics), as the consumer itself reports them.
	Own []string
	// Routes are the HTTP routes ("POST /orders") the program's packages
	// register, and JSONTags the json field names of each struct type
	// there.
	Routes   []string
	JSONTags map[string][]string
	// ConsumerOptions are the consumer options (consumer.X calls) the
	// program's packages use.
	ConsumerOptions []string
	// Env holds the environment variable names that appear as string
	// literals in the Go files of the packages the program is built from
	// (go list -deps, standard library included).
	Env map[string]bool
}

// acceptsJSON reports whether a struct type of the service has a JSON field
// for each of fields.
func (s *Service) acceptsJSON(fields []string) bool {
	for _, tags := range s.JSONTags {
		all := true
		for _, f := range fields {
			if !slices.Contains(tags, f) {
				all = false
			}
		}
		if all {
			return true
		}
	}
	return false
}

// Code is what the deployment files are checked against.
type Code struct {
	Root     string
	Services []*Service // sorted by Dir
	// FromContract is set when examples/ holds no services: the names then
	// come from Contract (one place), not from the code.
	FromContract bool

	OwnTopicMaxBytes int           // max.message.bytes the consumer gives its own topics
	OwnPartitions    int32         // partitions of the source topic the consumer was run with
	ShutdownTimeout  time.Duration // consumer default, from consumer/options.go
	Metrics          Metrics       // what tracing.PrometheusHandler serves
	CLI              CLI           // cmd/choreo's commands and flags
	CLIEnv           map[string]bool
	KafkaVersion     string // deploy/local/kafka.sh's default KAFKA_VERSION
	// EventsPartitions is the constant Partitions of examples/events: the
	// partitions the services give the topics they create (0 if none).
	EventsPartitions int
	// PaymentLimitCents is paymentsvc.DefaultLimitCents (amounts above are
	// declined) and MaxAmountCents ordersvc.MaxAmountCents (larger orders
	// are refused); 0 when the code has no such constant.
	PaymentLimitCents, MaxAmountCents int64
}

// Service returns the service in dir, or nil.
func (c *Code) Service(dir string) *Service {
	for _, s := range c.Services {
		if s.Dir == dir {
			return s
		}
	}
	return nil
}

// ServiceByGroup returns the service of consumer group g, or nil.
func (c *Code) ServiceByGroup(g string) *Service {
	for _, s := range c.Services {
		if s.Group == g {
			return s
		}
	}
	return nil
}

// SourceTopics returns every topic some service handles or publishes to,
// sorted.
func (c *Code) SourceTopics() []string {
	set := map[string]bool{}
	for _, s := range c.Services {
		for _, t := range s.Sources {
			set[t] = true
		}
		for _, t := range s.Outputs {
			set[t] = true
		}
	}
	return sortedKeys(set)
}

// Contract is the names contract of the example services (issue 11), used
// only while examples/ does not exist yet. When it does, every name is read
// from the code and the contract is not consulted.
var Contract = []Service{
	{Dir: "orders", Group: "order-service", Sources: []string{"payments", "shipments"}, Outputs: []string{"orders"}, Port: 8080},
	{Dir: "payments", Group: "payment-service", Sources: []string{"orders"}, Outputs: []string{"payments"}, Port: 8082},
	{Dir: "shipping", Group: "shipping-service", Sources: []string{"payments"}, Outputs: []string{"shipments"}, Port: 8083},
	{Dir: "notifications", Group: "notification-service", Sources: []string{"orders", "payments", "shipments"}, Port: 8084},
}

const modulePath = "github.com/choreokit/choreo"

// RepoRoot returns the repository root: two levels up from deploy/check.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && modFileModule(b) == modulePath {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod of %s above %s", modulePath, wd)
		}
	}
}

func modFileModule(b []byte) string {
	for _, line := range strings.Split(string(b), "\n") {
		if m, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(m), `"`)
		}
	}
	return ""
}

// LoadCode reads the facts from the code in root. Running a consumer and
// scraping the metrics takes a second or two.
func LoadCode(root string) (*Code, error) {
	c := &Code{Root: root}
	var errs []error
	services, err := scanExamples(root)
	switch {
	case err != nil:
		errs = append(errs, err)
	case len(services) == 0:
		c.FromContract = true
		for _, s := range Contract {
			s := s
			s.Sources = slices.Clone(s.Sources)
			s.Outputs = slices.Clone(s.Outputs)
			c.Services = append(c.Services, &s)
		}
	default:
		c.Services = services
	}
	if c.EventsPartitions, err = eventsPartitions(root); err != nil {
		errs = append(errs, err)
	}
	if c.PaymentLimitCents, err = intConst(root, "examples/payments/paymentsvc", "DefaultLimitCents"); err != nil {
		errs = append(errs, err)
	}
	if c.MaxAmountCents, err = intConst(root, "examples/orders/ordersvc", "MaxAmountCents"); err != nil {
		errs = append(errs, err)
	}
	if c.ShutdownTimeout, err = consumerDefault(root, "shutdownTimeout"); err != nil {
		errs = append(errs, err)
	}
	if c.CLI, err = scanCLI(filepath.Join(root, "cmd", "choreo")); err != nil {
		errs = append(errs, err)
	}
	if c.KafkaVersion, err = shellDefault(filepath.Join(root, "deploy", "local", "kafka.sh"), "KAFKA_VERSION"); err != nil {
		errs = append(errs, err)
	}
	if c.Metrics, err = ScrapeMetrics(); err != nil {
		errs = append(errs, err)
	}
	partitions := int32(6)
	c.OwnPartitions = partitions
	for _, s := range c.Services {
		own, maxBytes, parts, err := OwnTopics(s.Group, partitions)
		if err != nil {
			errs = append(errs, fmt.Errorf("own topics of %s: %w", s.Group, err))
			continue
		}
		if parts != partitions {
			errs = append(errs, fmt.Errorf("own topics of %s: the consumer asks for %d partitions, its source has %d", s.Group, parts, partitions))
		}
		s.Own = own
		if c.OwnTopicMaxBytes != 0 && c.OwnTopicMaxBytes != maxBytes {
			errs = append(errs, fmt.Errorf("own topics of %s: max.message.bytes %d, another group's %d", s.Group, maxBytes, c.OwnTopicMaxBytes))
		}
		c.OwnTopicMaxBytes = maxBytes
	}
	// Environment variables each program can read.
	env := newEnvIndex(root)
	for _, s := range c.Services {
		if c.FromContract {
			// No program yet: what the library and the CLI read.
			s.Env, err = env.names("./cmd/choreo", "./connection", "./tracing")
		} else {
			s.Env, err = env.names("./examples/" + s.Dir)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if c.CLIEnv, err = env.names("./cmd/choreo"); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// ---- examples/ ----

// scanExamples finds the example services: each directory under examples/
// that holds a main package. For each it reads, from the main package and
// the packages under examples/ that it imports, the group of its
// consumer.New call, the topics of its consumer.Handle calls, the topics of
// its Publish/PublishAsync/Record calls, and the port of its default
// HTTP_ADDR. It returns no services and no error when examples/ does not
// exist.
func scanExamples(root string) ([]*Service, error) {
	exdir := filepath.Join(root, "examples")
	entries, err := os.ReadDir(exdir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	idx := &goIndex{root: root, fset: token.NewFileSet(), pkgs: map[string]*goPkg{}}
	var out []*Service
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		pkg, err := idx.load(modulePath + "/examples/" + e.Name())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if pkg == nil || pkg.name != "main" {
			continue
		}
		s, err := idx.service(e.Name(), pkg)
		if err != nil {
			errs = append(errs, fmt.Errorf("examples/%s: %w", e.Name(), err))
			continue
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dir < out[j].Dir })
	return out, errors.Join(errs...)
}

type goPkg struct {
	path    string
	name    string
	files   []*ast.File
	consts  map[string]ast.Expr // package-level constants (and string vars)
	imports []string            // imports under examples/
}

type goIndex struct {
	root string
	fset *token.FileSet
	pkgs map[string]*goPkg
}

// load parses the non-test Go files of the package with import path p
// (under the main module); nil when the directory has none.
func (x *goIndex) load(p string) (*goPkg, error) {
	if pkg, ok := x.pkgs[p]; ok {
		return pkg, nil
	}
	dir := filepath.Join(x.root, filepath.FromSlash(strings.TrimPrefix(p, modulePath+"/")))
	matches, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	pkg := &goPkg{path: p, consts: map[string]ast.Expr{}}
	for _, f := range matches {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(x.fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		if !buildable(file) {
			continue
		}
		pkg.name = file.Name.Name
		pkg.files = append(pkg.files, file)
		for _, imp := range file.Imports {
			ip, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(ip, modulePath+"/examples/") && !slices.Contains(pkg.imports, ip) {
				pkg.imports = append(pkg.imports, ip)
			}
		}
		for _, d := range file.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || (g.Tok != token.CONST && g.Tok != token.VAR) {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						pkg.consts[n.Name] = vs.Values[i]
					}
				}
			}
		}
	}
	if len(pkg.files) == 0 {
		pkg = nil
	}
	x.pkgs[p] = pkg
	return pkg, nil
}

// buildable reports whether a file has no build constraint that leaves it
// out of a normal build (an "ignore" tag, typically).
func buildable(f *ast.File) bool {
	for _, cg := range f.Comments {
		if cg.Pos() > f.Package {
			break
		}
		for _, c := range cg.List {
			if strings.HasPrefix(c.Text, "//go:build") && strings.Contains(c.Text, "ignore") {
				return false
			}
		}
	}
	return true
}

// closure returns pkg and every package under examples/ it imports,
// transitively.
func (x *goIndex) closure(pkg *goPkg) ([]*goPkg, error) {
	seen := map[string]bool{}
	var out []*goPkg
	var visit func(p *goPkg) error
	visit = func(p *goPkg) error {
		if p == nil || seen[p.path] {
			return nil
		}
		seen[p.path] = true
		out = append(out, p)
		for _, ip := range p.imports {
			q, err := x.load(ip)
			if err != nil {
				return err
			}
			if err := visit(q); err != nil {
				return err
			}
		}
		return nil
	}
	return out, visit(pkg)
}

// importName returns the name file uses for import path p, or "".
func importName(file *ast.File, p string) string {
	for _, imp := range file.Imports {
		ip, _ := strconv.Unquote(imp.Path.Value)
		if ip != p {
			continue
		}
		if imp.Name != nil {
			return imp.Name.Name
		}
		return p[strings.LastIndex(p, "/")+1:]
	}
	return ""
}

// str evaluates e, in file of pkg, as a constant string: a literal, a
// constant of the package or of an imported examples package, or a
// concatenation of those.
func (x *goIndex) str(pkg *goPkg, file *ast.File, e ast.Expr) (string, bool) {
	return x.strDepth(pkg, file, e, 0)
}

func (x *goIndex) strDepth(pkg *goPkg, file *ast.File, e ast.Expr, depth int) (string, bool) {
	if depth > 10 {
		return "", false
	}
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(e.Value)
		return s, err == nil
	case *ast.ParenExpr:
		return x.strDepth(pkg, file, e.X, depth+1)
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", false
		}
		a, ok1 := x.strDepth(pkg, file, e.X, depth+1)
		b, ok2 := x.strDepth(pkg, file, e.Y, depth+1)
		return a + b, ok1 && ok2
	case *ast.Ident:
		v, ok := pkg.consts[e.Name]
		if !ok {
			return "", false
		}
		// A constant's expression is in its own package's files.
		return x.strDepth(pkg, fileOf(pkg, v), v, depth+1)
	case *ast.SelectorExpr:
		id, ok := e.X.(*ast.Ident)
		if !ok || file == nil {
			return "", false
		}
		for _, imp := range file.Imports {
			ip, _ := strconv.Unquote(imp.Path.Value)
			if importName(file, ip) != id.Name || !strings.HasPrefix(ip, modulePath+"/") {
				continue
			}
			q, err := x.load(ip)
			if err != nil || q == nil {
				return "", false
			}
			v, ok := q.consts[e.Sel.Name]
			if !ok {
				return "", false
			}
			return x.strDepth(q, fileOf(q, v), v, depth+1)
		}
	}
	return "", false
}

func fileOf(pkg *goPkg, n ast.Node) *ast.File {
	for _, f := range pkg.files {
		if f.Pos() <= n.Pos() && n.End() <= f.End() {
			return f
		}
	}
	return nil
}

var addrPort = regexp.MustCompile(`^:(\d{2,5})$`)

var route = regexp.MustCompile(`^(GET|POST|PUT|PATCH|DELETE) /\S*$`)

// service reads one example service from its main package and the
// examples packages it imports.
func (x *goIndex) service(dir string, main *goPkg) (*Service, error) {
	pkgs, err := x.closure(main)
	if err != nil {
		return nil, err
	}
	s := &Service{Dir: dir, JSONTags: map[string][]string{}}
	groups := map[string]bool{}
	sources := map[string]bool{}
	outputs := map[string]bool{}
	var unresolved []string
	for _, pkg := range pkgs {
		for _, file := range pkg.files {
			consumerName := importName(file, modulePath+"/consumer")
			ast.Inspect(file, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.BasicLit:
					if v, err := strconv.Unquote(n.Value); err == nil && n.Kind == token.STRING && route.MatchString(v) && !slices.Contains(s.Routes, v) {
						s.Routes = append(s.Routes, v)
					}
				case *ast.TypeSpec:
					if st, ok := n.Type.(*ast.StructType); ok {
						for _, fld := range st.Fields.List {
							if fld.Tag == nil {
								continue
							}
							tag, _ := strconv.Unquote(fld.Tag.Value)
							if j, ok := reflect.StructTag(tag).Lookup("json"); ok {
								if name, _, _ := strings.Cut(j, ","); name != "" && name != "-" {
									key := pkg.path + "." + n.Name.Name
									s.JSONTags[key] = append(s.JSONTags[key], name)
								}
							}
						}
					}
				}
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				fun := call.Fun
				if ix, ok := fun.(*ast.IndexExpr); ok { // consumer.Handle[T](…)
					fun = ix.X
				}
				sel, ok := fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				pos := x.fset.Position(call.Pos())
				arg := func(i int, into map[string]bool, what string) {
					if i >= len(call.Args) {
						return
					}
					if v, ok := x.str(pkg, file, call.Args[i]); ok {
						into[v] = true
					} else {
						unresolved = append(unresolved, fmt.Sprintf("%s at %s:%d", what, relPath(x.root, pos.Filename), pos.Line))
					}
				}
				if id, ok := sel.X.(*ast.Ident); ok && consumerName != "" && id.Name == consumerName {
					switch sel.Sel.Name {
					case "New":
						arg(2, groups, "consumer.New group")
					case "Handle":
						arg(1, sources, "consumer.Handle topic")
					default:
						if !slices.Contains(s.ConsumerOptions, sel.Sel.Name) {
							s.ConsumerOptions = append(s.ConsumerOptions, sel.Sel.Name)
						}
					}
					return true
				}
				switch sel.Sel.Name {
				case "Publish", "PublishAsync", "Record":
					if len(call.Args) >= 4 {
						arg(1, outputs, sel.Sel.Name+" topic")
					}
				}
				return true
			})
		}
	}
	// The default HTTP address: a ":port" literal in the main package.
	ports := map[int]bool{}
	for _, file := range main.files {
		ast.Inspect(file, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				v, _ := strconv.Unquote(lit.Value)
				if m := addrPort.FindStringSubmatch(v); m != nil {
					p, _ := strconv.Atoi(m[1])
					ports[p] = true
				}
			}
			return true
		})
	}
	if len(unresolved) > 0 {
		return nil, fmt.Errorf("names that are not constant strings: %s", strings.Join(unresolved, ", "))
	}
	switch len(groups) {
	case 0:
		return nil, errors.New("no consumer.New call with a group")
	case 1:
		s.Group = sortedKeys(groups)[0]
	default:
		return nil, fmt.Errorf("several consumer groups (%s): cannot tell which is this service's", strings.Join(sortedKeys(groups), ", "))
	}
	if len(ports) != 1 {
		return nil, fmt.Errorf("want one default HTTP address \":port\" in package main, found %d", len(ports))
	}
	for p := range ports {
		s.Port = p
	}
	s.Sources = sortedKeys(sources)
	s.Outputs = sortedKeys(outputs)
	return s, nil
}

func relPath(root, p string) string {
	if r, err := filepath.Rel(root, p); err == nil {
		return filepath.ToSlash(r)
	}
	return p
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// eventsPartitions reads the constant Partitions of examples/events, if
// there is one.
func eventsPartitions(root string) (int, error) {
	idx := &goIndex{root: root, fset: token.NewFileSet(), pkgs: map[string]*goPkg{}}
	pkg, err := idx.load(modulePath + "/examples/events")
	if err != nil || pkg == nil {
		return 0, err
	}
	e, ok := pkg.consts["Partitions"]
	if !ok {
		return 0, nil
	}
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.INT {
		return 0, fmt.Errorf("examples/events: Partitions is not an integer literal")
	}
	return strconv.Atoi(lit.Value)
}

// intConst reads an integer constant of a package of the module; 0 when
// the package or the constant does not exist.
func intConst(root, pkgDir, name string) (int64, error) {
	idx := &goIndex{root: root, fset: token.NewFileSet(), pkgs: map[string]*goPkg{}}
	pkg, err := idx.load(modulePath + "/" + pkgDir)
	if err != nil || pkg == nil {
		return 0, err
	}
	e, ok := pkg.consts[name]
	if !ok {
		return 0, nil
	}
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.INT {
		return 0, fmt.Errorf("%s: %s is not an integer literal", pkgDir, name)
	}
	return strconv.ParseInt(lit.Value, 0, 64)
}

// ---- consumer defaults ----

// consumerDefault reads a duration field of the config that
// consumer/options.go's defaults() returns, written as N * time.Unit.
func consumerDefault(root, field string) (time.Duration, error) {
	path := filepath.Join(root, "consumer", "options.go")
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		return 0, err
	}
	var d time.Duration
	found := false
	ast.Inspect(f, func(n ast.Node) bool {
		fn, ok := n.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "defaults" {
			return true
		}
		ast.Inspect(fn, func(n ast.Node) bool {
			kv, ok := n.(*ast.KeyValueExpr)
			if !ok {
				return true
			}
			if k, ok := kv.Key.(*ast.Ident); ok && k.Name == field {
				d, found = durationExpr(kv.Value)
			}
			return true
		})
		return false
	})
	if !found {
		return 0, fmt.Errorf("consumer/options.go: no %s: N * time.Unit in defaults()", field)
	}
	return d, nil
}

func durationExpr(e ast.Expr) (time.Duration, bool) {
	b, ok := e.(*ast.BinaryExpr)
	if !ok || b.Op != token.MUL {
		return 0, false
	}
	lit, ok := b.X.(*ast.BasicLit)
	if !ok || lit.Kind != token.INT {
		return 0, false
	}
	n, err := strconv.Atoi(lit.Value)
	if err != nil {
		return 0, false
	}
	sel, ok := b.Y.(*ast.SelectorExpr)
	if !ok {
		return 0, false
	}
	unit := map[string]time.Duration{"Millisecond": time.Millisecond, "Second": time.Second, "Minute": time.Minute, "Hour": time.Hour}[sel.Sel.Name]
	if unit == 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// ---- cmd/choreo ----

// CLI is the commands and flags defined in cmd/choreo.
type CLI struct {
	Commands map[string]bool // the first word of each cobra.Command Use
	Flags    map[string]bool // long flag names
}

var flagMethod = regexp.MustCompile(`^(String|Bool|Int|Int32|Int64|Uint|Uint32|Uint64|Float64|Duration|StringSlice|StringArray|IntSlice|Count|Var)(Var)?(P)?$`)

// scanCLI reads the cobra commands (Use fields) and flag definitions of the
// CLI's sources. It only sees literal names, which is how cmd/choreo
// writes them.
func scanCLI(dir string) (CLI, error) {
	cli := CLI{Commands: map[string]bool{}, Flags: map[string]bool{}}
	fset := token.NewFileSet()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return cli, err
	}
	for _, p := range files {
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return cli, err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.KeyValueExpr:
				if k, ok := n.Key.(*ast.Ident); ok && k.Name == "Use" {
					if lit, ok := n.Value.(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, _ := strconv.Unquote(lit.Value)
						if w := strings.Fields(v); len(w) > 0 {
							cli.Commands[w[0]] = true
						}
					}
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				m := flagMethod.FindStringSubmatch(sel.Sel.Name)
				if m == nil {
					return true
				}
				i := 0 // String("name", …)
				if m[2] == "Var" || m[1] == "Var" {
					i = 1 // StringVar(&v, "name", …), Var(v, "name", …)
				}
				if i < len(n.Args) {
					if lit, ok := n.Args[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, _ := strconv.Unquote(lit.Value)
						cli.Flags[v] = true
					}
				}
			}
			return true
		})
	}
	if len(cli.Commands) == 0 {
		return cli, fmt.Errorf("%s: no cobra commands found", dir)
	}
	return cli, nil
}

// ---- shell scripts ----

// shellDefault reads NAME="${NAME:-default}" from a shell script.
func shellDefault(path, name string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	re := regexp.MustCompile(`(?m)^` + name + `="\$\{` + name + `:-([^}]+)\}"`)
	m := re.FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("%s: no %s=\"${%s:-…}\"", path, name, name)
	}
	return string(m[1]), nil
}

// ---- environment variables ----

// envIndex finds the environment variable names a program can read: the
// string literals that look like one (A_B_C) in the Go files of the
// packages it is built from.
type envIndex struct {
	root  string
	files map[string][]string // file → env-like literals
}

func newEnvIndex(root string) *envIndex {
	return &envIndex{root: root, files: map[string][]string{}}
}

var envLiteral = regexp.MustCompile(`"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|GOMEMLIMIT|GOMAXPROCS|GOGC|GODEBUG)"`)

func (x *envIndex) names(pkgs ...string) (map[string]bool, error) {
	args := append([]string{"list", "-deps", "-f", `{{.Dir}}{{range .GoFiles}}{{"\t"}}{{.}}{{end}}`}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = x.root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -deps %s: %v: %s", strings.Join(pkgs, " "), err, strings.TrimSpace(stderr.String()))
	}
	set := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "\t")
		for _, f := range fields[1:] {
			p := filepath.Join(fields[0], f)
			names, ok := x.files[p]
			if !ok {
				b, err := os.ReadFile(p)
				if err != nil {
					return nil, err
				}
				for _, m := range envLiteral.FindAllSubmatch(b, -1) {
					names = append(names, string(m[1]))
				}
				x.files[p] = names
			}
			for _, n := range names {
				set[n] = true
			}
		}
	}
	return set, sc.Err()
}
