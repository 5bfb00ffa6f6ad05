package check

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// Check is one cross-check: it returns the problems it finds.
type Check struct {
	Name string
	Run  func(c *Code, f *Files) []error
}

// Checks are all the cross-checks, in the order they are reported.
var Checks = []Check{
	{"code: examples use the consumer options the checks assume", checkConsumerOptions},
	{"compose: images pinned", checkComposeImages},
	{"compose: Kafka in KRaft mode, the version deploy/local runs", checkComposeKafka},
	{"compose: services built from deploy/Dockerfile", checkComposeBuilds},
	{"compose: environment variables the programs read", checkComposeEnv},
	{"compose: ports and health checks", checkComposePorts},
	{"compose: addresses name services of the file", checkComposeAddresses},
	{"compose: depends_on conditions", checkComposeDependsOn},
	{"compose: source topics created", checkComposeTopics},
	{"compose: the demo's command and flags", checkComposeDemo},
	{"compose: the order generator's request", checkComposeGenerator},
	{"compose: stop grace period over the consumer's shutdown timeout", checkComposeStop},
	{"prometheus: scrape targets", checkPrometheusTargets},
	{"dockerfile: pinned images, build paths, user", checkDockerfile},
	{"dockerfile: the build context keeps what the build needs", checkDockerIgnore},
	{"k8s: kustomization lists every file", checkKustomization},
	{"k8s: deployments", checkDeployments},
	{"k8s: environment", checkK8sEnv},
	{"k8s: services", checkK8sServices},
	{"k8s: Strimzi topics", checkTopics},
	{"k8s: Strimzi users and ACLs", checkUsers},
	{"k8s: KEDA scaled objects", checkKEDA},
	{"k8s: alert rules", checkRules},
	{"k8s: pod monitor", checkPodMonitor},
	{"grafana: dashboard queries", checkDashboards},
}

// Run runs every check and returns the problems by check name.
func Run(c *Code, f *Files) map[string][]error {
	out := map[string][]error{}
	for _, ch := range Checks {
		if errs := ch.Run(c, f); len(errs) > 0 {
			out[ch.Name] = errs
		}
	}
	return out
}

// errorf is fmt.Errorf, shorter.
func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// ---- code ----

// ownTopicOptions change the retry or dead-letter topics, or what the
// consumer provisions: OwnTopics runs the consumer without them.
var ownTopicOptions = []string{"RetryTopics", "MaxValueBytes", "BlockingRetries"}

func checkConsumerOptions(c *Code, _ *Files) []error {
	var errs []error
	for _, s := range c.Services {
		for _, o := range s.ConsumerOptions {
			if slices.Contains(ownTopicOptions, o) {
				errs = append(errs, errorf("examples/%s sets consumer.%s: the own topics (names, max.message.bytes) were computed with the default options; run OwnTopics with the same options", s.Dir, o))
			}
		}
	}
	return errs
}

// ---- compose ----

func composeService(f *Files, name string) (types.ServiceConfig, bool) {
	if f.Compose == nil {
		return types.ServiceConfig{}, false
	}
	s, ok := f.Compose.Services[name]
	return s, ok
}

func envValue(s types.ServiceConfig, name string) (string, bool) {
	v, ok := s.Environment[name]
	if !ok || v == nil {
		return "", false
	}
	return *v, true
}

// buildArg returns the SERVICE build argument of a compose service built
// from deploy/Dockerfile.
func buildArg(s types.ServiceConfig) (string, bool) {
	if s.Build == nil {
		return "", false
	}
	v, ok := s.Build.Args["SERVICE"]
	if !ok || v == nil {
		return "", false
	}
	return *v, true
}

var pinnedTag = regexp.MustCompile(`^[^:@]+:[^:]*[0-9][^:]*$`)

func checkComposeImages(c *Code, f *Files) []error {
	if f.Compose == nil {
		return []error{errors.New("docker-compose.yml did not load")}
	}
	var errs []error
	for _, name := range sortedKeys(f.Compose.Services) {
		s := f.Compose.Services[name]
		if s.Build != nil {
			arg, _ := buildArg(s)
			if want := "choreo/" + arg + ":"; !strings.HasPrefix(s.Image, want) {
				errs = append(errs, errorf("service %s: built with SERVICE=%s but tagged %q; want %s…", name, arg, s.Image, want))
			}
			continue
		}
		img := s.Image
		if img == "" {
			errs = append(errs, errorf("service %s: no image and no build", name))
			continue
		}
		tag := img[strings.LastIndex(img, ":")+1:]
		if !pinnedTag.MatchString(img) || strings.Contains(tag, "latest") {
			errs = append(errs, errorf("service %s: image %q is not pinned to a version", name, img))
		}
	}
	return errs
}

func checkComposeKafka(c *Code, f *Files) []error {
	s, ok := composeService(f, "kafka")
	if !ok {
		return []error{errors.New("no kafka service")}
	}
	var errs []error
	if want := "apache/kafka:" + c.KafkaVersion; s.Image != want {
		errs = append(errs, errorf("kafka image %q; want %s, the version deploy/local/kafka.sh runs in CI", s.Image, want))
	}
	if !strings.HasPrefix(c.KafkaVersion, "4.") {
		errs = append(errs, errorf("Kafka %s: want 4.x", c.KafkaVersion))
	}
	roles, _ := envValue(s, "KAFKA_PROCESS_ROLES")
	if r := strings.Split(roles, ","); !slices.Contains(r, "broker") || !slices.Contains(r, "controller") {
		errs = append(errs, errorf("kafka: KAFKA_PROCESS_ROLES=%q; want broker,controller (KRaft, one node)", roles))
	}
	if v, _ := envValue(s, "KAFKA_CONTROLLER_QUORUM_VOTERS"); v == "" {
		if w, _ := envValue(s, "KAFKA_CONTROLLER_QUORUM_BOOTSTRAP_SERVERS"); w == "" {
			errs = append(errs, errors.New("kafka: no controller quorum (KAFKA_CONTROLLER_QUORUM_VOTERS)"))
		}
	}
	if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 {
		errs = append(errs, errors.New("kafka: no health check (services wait for it)"))
	}
	return errs
}

func checkComposeBuilds(c *Code, f *Files) []error {
	if f.Compose == nil {
		return []error{errors.New("docker-compose.yml did not load")}
	}
	var errs []error
	valid := map[string]bool{"choreo": true}
	for _, s := range c.Services {
		valid[s.Dir] = true
		cs, ok := composeService(f, s.Dir)
		if !ok {
			errs = append(errs, errorf("no compose service %s for examples/%s", s.Dir, s.Dir))
			continue
		}
		if arg, ok := buildArg(cs); !ok || arg != s.Dir {
			errs = append(errs, errorf("service %s: build arg SERVICE=%q; want %q", s.Dir, arg, s.Dir))
		}
	}
	for _, name := range sortedKeys(f.Compose.Services) {
		s := f.Compose.Services[name]
		if s.Build == nil {
			continue
		}
		ctx := s.Build.Context
		if !filepath.IsAbs(ctx) {
			ctx = filepath.Join(f.Root, ctx)
		}
		if filepath.Clean(ctx) != filepath.Clean(f.Root) {
			errs = append(errs, errorf("service %s: build context %s; want the repository root", name, s.Build.Context))
		}
		if filepath.ToSlash(s.Build.Dockerfile) != "deploy/Dockerfile" {
			errs = append(errs, errorf("service %s: dockerfile %q; want deploy/Dockerfile", name, s.Build.Dockerfile))
		}
		arg, ok := buildArg(s)
		if !ok || !valid[arg] {
			errs = append(errs, errorf("service %s: build arg SERVICE=%q is not an example service nor choreo", name, arg))
			continue
		}
		dir := filepath.Join(f.Root, "examples", arg)
		if arg == "choreo" {
			dir = filepath.Join(f.Root, "cmd", "choreo")
		}
		if !isMainPackage(dir) {
			errs = append(errs, errorf("service %s: %s holds no main package to build", name, relPath(f.Root, dir)))
		}
	}
	return errs
}

// isMainPackage reports whether dir holds a non-test Go file of package main.
func isMainPackage(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, p := range files {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		b, err := os.ReadFile(p)
		if err == nil && regexp.MustCompile(`(?m)^package main\b`).Match(b) {
			return true
		}
	}
	return false
}

// programEnv returns the environment variable names the program a compose
// service runs can read.
func programEnv(c *Code, s types.ServiceConfig) (map[string]bool, string) {
	arg, ok := buildArg(s)
	if !ok {
		return nil, ""
	}
	if arg == "choreo" {
		return c.CLIEnv, "cmd/choreo"
	}
	if svc := c.Service(arg); svc != nil {
		return svc.Env, "examples/" + arg
	}
	return nil, ""
}

func checkComposeEnv(c *Code, f *Files) []error {
	if f.Compose == nil {
		return []error{errors.New("docker-compose.yml did not load")}
	}
	var errs []error
	for _, name := range sortedKeys(f.Compose.Services) {
		s := f.Compose.Services[name]
		env, prog := programEnv(c, s)
		if env == nil {
			continue
		}
		for _, k := range sortedKeys(s.Environment) {
			if !env[k] {
				errs = append(errs, errorf("service %s: %s is not read by %s (no such string in the packages it is built from)", name, k, prog))
			}
		}
	}
	for _, s := range c.Services {
		cs, ok := composeService(f, s.Dir)
		if !ok {
			continue
		}
		for _, k := range []string{"KAFKA_BROKERS", "SCHEMA_REGISTRY_URL", "HTTP_ADDR", "OTEL_SERVICE_NAME"} {
			if _, ok := envValue(cs, k); !ok {
				errs = append(errs, errorf("service %s: %s not set", s.Dir, k))
			}
		}
	}
	return errs
}

// addrPortOf returns the port of a listen address such as ":8080".
func addrPortOf(addr string) (int, bool) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(p)
	return n, err == nil
}

var healthURL = regexp.MustCompile(`https?://(?:127\.0\.0\.1|localhost):(\d+)(/\S*)`)

func checkComposePorts(c *Code, f *Files) []error {
	var errs []error
	for _, s := range c.Services {
		cs, ok := composeService(f, s.Dir)
		if !ok {
			continue
		}
		addr, _ := envValue(cs, "HTTP_ADDR")
		port, ok := addrPortOf(addr)
		if !ok {
			errs = append(errs, errorf("service %s: HTTP_ADDR=%q is not host:port", s.Dir, addr))
			continue
		}
		if port != s.Port {
			errs = append(errs, errorf("service %s: HTTP_ADDR port %d; the code's default is %d", s.Dir, port, s.Port))
		}
		published := false
		for _, p := range cs.Ports {
			if int(p.Target) == port {
				published = true
			}
		}
		if !published {
			errs = append(errs, errorf("service %s: port %d is not published", s.Dir, port))
		}
		if cs.HealthCheck == nil {
			errs = append(errs, errorf("service %s: no health check", s.Dir))
			continue
		}
		m := healthURL.FindStringSubmatch(strings.Join(cs.HealthCheck.Test, " "))
		if m == nil {
			errs = append(errs, errorf("service %s: health check %q requests no local URL", s.Dir, cs.HealthCheck.Test))
			continue
		}
		if m[1] != strconv.Itoa(port) {
			errs = append(errs, errorf("service %s: health check on port %s; the service listens on %d", s.Dir, m[1], port))
		}
		if m[2] != "/readyz" && m[2] != "/healthz" {
			errs = append(errs, errorf("service %s: health check on %s; want /readyz or /healthz", s.Dir, m[2]))
		}
	}
	return errs
}

// listenerPorts returns host:port of each NAME://host:port listener.
func listenerAddrs(list string) []string {
	var out []string
	for _, l := range strings.Split(list, ",") {
		if _, a, ok := strings.Cut(strings.TrimSpace(l), "://"); ok {
			out = append(out, a)
		}
	}
	return out
}

func checkComposeAddresses(c *Code, f *Files) []error {
	if f.Compose == nil {
		return []error{errors.New("docker-compose.yml did not load")}
	}
	var errs []error
	kafka, _ := composeService(f, "kafka")
	adv, _ := envValue(kafka, "KAFKA_ADVERTISED_LISTENERS")
	advertised := listenerAddrs(adv)
	reg, _ := composeService(f, "schema-registry")
	regListeners, _ := envValue(reg, "SCHEMA_REGISTRY_LISTENERS")
	pg, _ := composeService(f, "postgres")
	for _, name := range sortedKeys(f.Compose.Services) {
		s := f.Compose.Services[name]
		if b, ok := envValue(s, "KAFKA_BROKERS"); ok {
			for _, a := range strings.Split(b, ",") {
				if !slices.Contains(advertised, a) {
					errs = append(errs, errorf("service %s: KAFKA_BROKERS %s is not a listener kafka advertises (%s)", name, a, adv))
				}
			}
		}
		for _, k := range []string{"SCHEMA_REGISTRY_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "DATABASE_URL"} {
			v, ok := envValue(s, k)
			if !ok {
				continue
			}
			u, err := url.Parse(v)
			if err != nil {
				errs = append(errs, errorf("service %s: %s=%q: %v", name, k, v, err))
				continue
			}
			if _, ok := f.Compose.Services[u.Hostname()]; !ok {
				errs = append(errs, errorf("service %s: %s names host %q, not a service of the file", name, k, u.Hostname()))
				continue
			}
			switch k {
			case "SCHEMA_REGISTRY_URL":
				if p := u.Port(); !strings.HasSuffix(regListeners, ":"+p) {
					errs = append(errs, errorf("service %s: SCHEMA_REGISTRY_URL port %s; the registry listens on %s", name, p, regListeners))
				}
			case "DATABASE_URL":
				user, _ := envValue(pg, "POSTGRES_USER")
				pass, _ := envValue(pg, "POSTGRES_PASSWORD")
				db, _ := envValue(pg, "POSTGRES_DB")
				gotPass, _ := u.User.Password()
				if u.Hostname() != "postgres" || u.User.Username() != user || gotPass != pass || strings.TrimPrefix(u.Path, "/") != db {
					errs = append(errs, errorf("service %s: DATABASE_URL does not match the postgres service's user, password and database", name))
				}
			}
		}
	}
	return errs
}

func checkComposeDependsOn(c *Code, f *Files) []error {
	if f.Compose == nil {
		return []error{errors.New("docker-compose.yml did not load")}
	}
	var errs []error
	for _, name := range sortedKeys(f.Compose.Services) {
		s := f.Compose.Services[name]
		for dep, d := range s.DependsOn {
			ds, ok := f.Compose.Services[dep]
			if !ok {
				errs = append(errs, errorf("service %s depends on %s, not a service of the file", name, dep))
				continue
			}
			switch d.Condition {
			case types.ServiceConditionHealthy:
				if ds.HealthCheck == nil || ds.HealthCheck.Disable || len(ds.HealthCheck.Test) == 0 {
					errs = append(errs, errorf("service %s waits for %s to be healthy, which has no health check", name, dep))
				}
			case types.ServiceConditionCompletedSuccessfully:
				if ds.Restart != "" && ds.Restart != "no" {
					errs = append(errs, errorf("service %s waits for %s to complete, which restarts (%s)", name, dep, ds.Restart))
				}
			case types.ServiceConditionStarted:
			default:
				errs = append(errs, errorf("service %s depends on %s with no condition", name, dep))
			}
		}
	}
	// Each example service waits for Kafka and the registry.
	waitsForKafka := func(s types.ServiceConfig) bool {
		if d, ok := s.DependsOn["kafka"]; ok && d.Condition == types.ServiceConditionHealthy {
			return true
		}
		if d, ok := s.DependsOn["kafka-init"]; ok && d.Condition == types.ServiceConditionCompletedSuccessfully {
			return true
		}
		return false
	}
	for _, s := range c.Services {
		cs, ok := composeService(f, s.Dir)
		if !ok {
			continue
		}
		if !waitsForKafka(cs) {
			errs = append(errs, errorf("service %s does not wait for Kafka (kafka healthy or kafka-init completed)", s.Dir))
		}
		if d, ok := cs.DependsOn["schema-registry"]; !ok || d.Condition != types.ServiceConditionHealthy {
			errs = append(errs, errorf("service %s does not wait for schema-registry to be healthy", s.Dir))
		}
		if _, ok := envValue(cs, "DATABASE_URL"); ok {
			if d, ok := cs.DependsOn["postgres"]; !ok || d.Condition != types.ServiceConditionHealthy {
				errs = append(errs, errorf("service %s uses DATABASE_URL but does not wait for postgres to be healthy", s.Dir))
			}
		}
	}
	return errs
}

var forTopics = regexp.MustCompile(`for t in ([A-Za-z0-9._ -]+?);`)
var partitionsFlag = regexp.MustCompile(`--partitions (\d+)`)

func checkComposeTopics(c *Code, f *Files) []error {
	s, ok := composeService(f, "kafka-init")
	if !ok {
		return []error{errors.New("no kafka-init service to create the source topics")}
	}
	script := strings.Join(append(append([]string{}, s.Entrypoint...), s.Command...), " ")
	m := forTopics.FindStringSubmatch(script)
	if m == nil {
		return []error{errorf("kafka-init: no `for t in …;` loop over the topics in %q", script)}
	}
	var errs []error
	got := strings.Fields(m[1])
	slices.Sort(got)
	if want := c.SourceTopics(); !slices.Equal(got, want) {
		errs = append(errs, errorf("kafka-init creates %v; the services use %v", got, want))
	}
	if p := partitionsFlag.FindStringSubmatch(script); p == nil {
		errs = append(errs, errors.New("kafka-init: no --partitions"))
	} else if c.EventsPartitions > 0 && p[1] != strconv.Itoa(c.EventsPartitions) {
		errs = append(errs, errorf("kafka-init: --partitions %s; the services create theirs with %d (examples/events.Partitions)", p[1], c.EventsPartitions))
	}
	return errs
}

func checkComposeDemo(c *Code, f *Files) []error {
	if f.Compose == nil {
		return []error{errors.New("docker-compose.yml did not load")}
	}
	var errs []error
	found := false
	var brokers, registry, database string
	for _, s := range c.Services {
		if cs, ok := composeService(f, s.Dir); ok {
			brokers, _ = envValue(cs, "KAFKA_BROKERS")
			registry, _ = envValue(cs, "SCHEMA_REGISTRY_URL")
			if v, ok := envValue(cs, "DATABASE_URL"); ok {
				database = v
			}
		}
	}
	for _, name := range sortedKeys(f.Compose.Services) {
		s := f.Compose.Services[name]
		if arg, _ := buildArg(s); arg != "choreo" || len(s.Command) == 0 || s.Command[0] != "demo" {
			continue
		}
		found = true
		if !c.CLI.Commands["demo"] {
			errs = append(errs, errorf("service %s runs `choreo demo`, which cmd/choreo does not define", name))
		}
		if len(s.Profiles) > 0 {
			errs = append(errs, errorf("service %s is in profiles %v: `docker compose up` must run the demo", name, s.Profiles))
		}
		args := s.Command[1:]
		for i := 0; i < len(args); i++ {
			a := args[i]
			if !strings.HasPrefix(a, "--") {
				continue
			}
			flag, val, hasVal := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if !hasVal && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				val = args[i+1]
				i++
			}
			if !c.CLI.Flags[flag] {
				errs = append(errs, errorf("service %s: flag --%s is not defined in cmd/choreo", name, flag))
			}
			want := map[string]string{"brokers": brokers, "registry": registry, "database-url": database}[flag]
			if want != "" && val != want {
				errs = append(errs, errorf("service %s: --%s %s; the service containers use %s", name, flag, val, want))
			}
		}
		// The demo runs the four services in its process, in their
		// consumer groups: containers of the same services must not run
		// with it, nor may it wait for them.
		for _, svc := range c.Services {
			if _, ok := s.DependsOn[svc.Dir]; ok {
				errs = append(errs, errorf("service %s waits for %s, whose consumer group it joins itself", name, svc.Dir))
			}
			if cs, ok := composeService(f, svc.Dir); ok && len(cs.Profiles) == 0 {
				errs = append(errs, errorf("service %s starts with `docker compose up`, beside %s, which runs the same consumer group (%s) in its process; put it in a profile", svc.Dir, name, svc.Group))
			}
		}
		if d, ok := s.DependsOn["kafka-init"]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
			if d, ok := s.DependsOn["kafka"]; !ok || d.Condition != types.ServiceConditionHealthy {
				errs = append(errs, errorf("service %s does not wait for Kafka", name))
			}
		}
		if d, ok := s.DependsOn["schema-registry"]; !ok || d.Condition != types.ServiceConditionHealthy {
			errs = append(errs, errorf("service %s does not wait for schema-registry to be healthy", name))
		}
	}
	if !found {
		errs = append(errs, errors.New("no service runs `choreo demo`"))
	}
	return errs
}

var postData = regexp.MustCompile(`--post-data "((?:[^"\\]|\\.)*)" (\S+)`)

// checkComposeGenerator checks the order generator's request against the
// orders service: the URL is its address and route, the JSON fields are
// those of the request type its handler decodes (it refuses unknown
// fields).
func checkComposeGenerator(c *Code, f *Files) []error {
	s, ok := composeService(f, "order-generator")
	if !ok {
		return []error{errors.New("no order-generator service")}
	}
	orders := c.Service("orders")
	if orders == nil {
		return []error{errors.New("no examples/orders service")}
	}
	script := strings.Join(s.Command, " ")
	m := postData.FindStringSubmatch(script)
	if m == nil {
		return []error{errorf("order-generator: no wget --post-data \"…\" URL in %q", script)}
	}
	var errs []error
	body := strings.ReplaceAll(m[1], `\"`, `"`)
	keys := regexp.MustCompile(`"([a-z_]+)":`).FindAllStringSubmatch(body, -1)
	var fields []string
	for _, k := range keys {
		fields = append(fields, k[1])
	}
	if len(fields) == 0 {
		errs = append(errs, errorf("order-generator: no JSON fields in %s", body))
	}
	if !orders.acceptsJSON(fields) {
		errs = append(errs, errorf("order-generator posts fields %v; no request type of examples/orders has them all (its JSON tags: %v)", fields, orders.JSONTags))
	}
	u, err := url.Parse(m[2])
	if err != nil {
		return append(errs, err)
	}
	if u.Hostname() != "orders" || u.Port() != strconv.Itoa(orders.Port) {
		errs = append(errs, errorf("order-generator posts to %s; the orders service is orders:%d", u.Host, orders.Port))
	}
	if !slices.Contains(orders.Routes, "POST "+u.Path) {
		errs = append(errs, errorf("order-generator posts to %s; the orders service's routes are %v", u.Path, orders.Routes))
	}
	if d, ok := s.DependsOn["orders"]; !ok || d.Condition != types.ServiceConditionHealthy {
		errs = append(errs, errors.New("order-generator does not wait for orders to be healthy"))
	}
	// Amounts: some over the payment limit (declined, as in choreo demo),
	// none over what the orders service takes.
	limit := c.PaymentLimitCents
	if ps, ok := composeService(f, "payments"); ok {
		if v, ok := envValue(ps, "PAYMENT_LIMIT_CENTS"); ok {
			limit, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	var most int64
	for _, a := range regexp.MustCompile(`amount=\$*\(*(\d+)`).FindAllStringSubmatch(script, -1) {
		n, _ := strconv.ParseInt(a[1], 10, 64)
		most = max(most, n)
		if c.MaxAmountCents > 0 && n > c.MaxAmountCents {
			errs = append(errs, errorf("order-generator: amount %d over the orders service's maximum %d", n, c.MaxAmountCents))
		}
	}
	if limit > 0 && most <= limit {
		errs = append(errs, errorf("order-generator: no amount over the payment limit %d: no order is declined", limit))
	}
	return errs
}

func checkComposeStop(c *Code, f *Files) []error {
	var errs []error
	for _, s := range c.Services {
		cs, ok := composeService(f, s.Dir)
		if !ok {
			continue
		}
		if cs.StopGracePeriod == nil || time.Duration(*cs.StopGracePeriod) <= c.ShutdownTimeout {
			got := "10s (the default)"
			if cs.StopGracePeriod != nil {
				got = time.Duration(*cs.StopGracePeriod).String()
			}
			errs = append(errs, errorf("service %s: stop_grace_period %s; want more than the consumer's shutdown timeout %s", s.Dir, got, c.ShutdownTimeout))
		}
	}
	return errs
}

// ---- prometheus ----

func checkPrometheusTargets(c *Code, f *Files) []error {
	if f.Prometheus == nil {
		return []error{errors.New("deploy/prometheus/prometheus.yml did not load")}
	}
	var errs []error
	targets := map[string]string{} // host:port → metrics path
	for _, sc := range f.Prometheus.ScrapeConfigs {
		for _, tg := range staticTargets(sc.ServiceDiscoveryConfigs) {
			targets[tg] = sc.MetricsPath
			host, _, _ := net.SplitHostPort(tg)
			if _, ok := composeService(f, host); !ok && host != "localhost" {
				errs = append(errs, errorf("prometheus target %s: %s is not a compose service", tg, host))
			}
		}
	}
	for _, s := range c.Services {
		port := s.Port
		if cs, ok := composeService(f, s.Dir); ok {
			if addr, ok := envValue(cs, "HTTP_ADDR"); ok {
				port, _ = addrPortOf(addr)
			}
		}
		want := net.JoinHostPort(s.Dir, strconv.Itoa(port))
		path, ok := targets[want]
		if !ok {
			errs = append(errs, errorf("prometheus does not scrape %s (service %s)", want, s.Dir))
		} else if path != "/metrics" {
			errs = append(errs, errorf("prometheus scrapes %s on %s; the services serve /metrics", want, path))
		}
	}
	return errs
}

// ---- Dockerfile ----

var argDefault = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=(\S+)$`)
var goDirective = regexp.MustCompile(`(?m)^go (\d+\.\d+(?:\.\d+)?)\s*$`)

func checkDockerfile(c *Code, f *Files) []error {
	d := f.Dockerfile
	if d == nil {
		return []error{errors.New("deploy/Dockerfile did not load")}
	}
	var errs []error
	args := map[string]string{}
	var final []Instruction // the last stage's instructions
	var builds []string
	for _, in := range d.Instructions {
		switch in.Cmd {
		case "ARG":
			if m := argDefault.FindStringSubmatch(in.Args); m != nil {
				args[m[1]] = m[2]
			}
		case "FROM":
			final = nil
			img := strings.Fields(in.Args)[0]
			for k, v := range args {
				img = strings.ReplaceAll(img, "${"+k+"}", v)
				img = strings.ReplaceAll(img, "$"+k, v)
			}
			if strings.Contains(img, "$") || !pinnedTag.MatchString(img) || strings.HasSuffix(img, ":latest") {
				errs = append(errs, errorf("Dockerfile line %d: base image %q is not pinned", in.Line, img))
			}
			if strings.HasPrefix(img, "golang:") {
				goMod, _ := os.ReadFile(filepath.Join(f.Root, "go.mod"))
				if m := goDirective.FindSubmatch(goMod); m != nil {
					ver := strings.TrimPrefix(img, "golang:")
					ver, _, _ = strings.Cut(ver, "-")
					if versionLess(ver, string(m[1])) {
						errs = append(errs, errorf("Dockerfile: Go %s is older than go.mod's go %s", ver, m[1]))
					}
				}
			}
		case "COPY":
			words := strings.Fields(in.Args)
			if len(words) > 0 && strings.HasPrefix(words[0], "--from") {
				break
			}
			var srcs []string
			for _, a := range words[:len(words)-1] {
				if !strings.HasPrefix(a, "--") {
					srcs = append(srcs, a)
				}
			}
			for _, s := range srcs {
				if _, err := os.Stat(filepath.Join(f.Root, s)); err != nil {
					errs = append(errs, errorf("Dockerfile line %d: COPY %s: not in the build context (the repository root)", in.Line, s))
				}
			}
		case "RUN":
			if strings.Contains(in.Args, "go build") {
				builds = append(builds, in.Args)
			}
		}
		final = append(final, in)
	}
	build := strings.Join(builds, "\n")
	// The build must compile ./examples/$SERVICE and ./cmd/choreo.
	for _, want := range []string{"./examples/${SERVICE}", "./cmd/choreo"} {
		if !strings.Contains(build, want) {
			errs = append(errs, errorf("Dockerfile: no go build of %s", want))
		}
	}
	if !strings.Contains(build, "CGO_ENABLED=0") {
		errs = append(errs, errors.New("Dockerfile: the build does not set CGO_ENABLED=0 (the runtime image has no C library of Go's)"))
	}
	for _, s := range c.Services {
		if !c.FromContract && !isMainPackage(filepath.Join(f.Root, "examples", s.Dir)) {
			errs = append(errs, errorf("Dockerfile: ./examples/%s has no main package", s.Dir))
		}
	}
	uid := -1
	hasEntry := false
	for _, in := range final {
		switch in.Cmd {
		case "USER":
			u, _, _ := strings.Cut(in.Args, ":")
			n, err := strconv.Atoi(u)
			if err != nil {
				errs = append(errs, errorf("Dockerfile: USER %s is not numeric (Kubernetes' runAsNonRoot cannot verify a name)", in.Args))
				continue
			}
			uid = n
		case "ENTRYPOINT", "CMD":
			hasEntry = true
		}
	}
	if uid <= 0 {
		errs = append(errs, errors.New("Dockerfile: the runtime stage does not run as a non-root numeric USER"))
	}
	if !hasEntry {
		errs = append(errs, errors.New("Dockerfile: the runtime stage has no ENTRYPOINT"))
	}
	return errs
}

// DockerUser returns the numeric user of the Dockerfile's runtime stage, or
// -1.
func (d *Dockerfile) DockerUser() int {
	uid := -1
	for _, in := range d.Instructions {
		switch in.Cmd {
		case "FROM":
			uid = -1
		case "USER":
			u, _, _ := strings.Cut(in.Args, ":")
			if n, err := strconv.Atoi(u); err == nil {
				uid = n
			}
		}
	}
	return uid
}

// versionLess compares dotted version numbers.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

var embedLine = regexp.MustCompile(`(?m)^//go:embed (.+)$`)

func checkDockerIgnore(c *Code, f *Files) []error {
	var errs []error
	need := []string{"go.mod", "go.sum", "cmd/choreo/main.go"}
	for _, s := range c.Services {
		if c.FromContract {
			break
		}
		files, _ := filepath.Glob(filepath.Join(f.Root, "examples", s.Dir, "*.go"))
		for _, p := range files {
			if !strings.HasSuffix(p, "_test.go") {
				need = append(need, relPath(f.Root, p))
			}
		}
	}
	// Files the module embeds (//go:embed in non-test files).
	_ = filepath.WalkDir(f.Root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if p != f.Root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || fileExists(filepath.Join(p, "go.mod"))) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		for _, m := range embedLine.FindAllSubmatch(b, -1) {
			for _, pat := range strings.Fields(string(m[1])) {
				matches, _ := filepath.Glob(filepath.Join(filepath.Dir(p), pat))
				for _, mm := range matches {
					need = append(need, relPath(f.Root, mm))
				}
			}
		}
		return nil
	})
	for _, p := range need {
		if ignored(f.DockerIgnore, p) {
			errs = append(errs, errorf("deploy/Dockerfile.dockerignore leaves %s out of the build context; the build needs it", p))
		}
	}
	return errs
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// ---- Kubernetes ----

func checkKustomization(c *Code, f *Files) []error {
	k := f.K8s
	if k == nil || k.Kustomization == nil {
		return []error{errors.New("deploy/k8s/kustomization.yaml did not load")}
	}
	var errs []error
	listed := map[string]bool{}
	for _, r := range k.Kustomization.Resources {
		listed[r] = true
		if !slices.Contains(k.Files, r) {
			errs = append(errs, errorf("kustomization lists %s, not a file of deploy/k8s", r))
		}
	}
	for _, g := range k.Kustomization.ConfigMapGenerator {
		for _, file := range g.Files {
			listed[file] = true
			if !slices.Contains(k.Files, file) {
				errs = append(errs, errorf("kustomization's configMapGenerator %s reads %s, not a file of deploy/k8s", g.Name, file))
			}
		}
	}
	for _, file := range k.Files {
		if file != "kustomization.yaml" && !listed[file] {
			errs = append(errs, errorf("deploy/k8s/%s is not in kustomization.yaml", file))
		}
	}
	return errs
}

// deployment returns the Deployment named name.
func (k *K8s) deployment(name string) *appsv1.Deployment {
	for _, d := range k.Deployments {
		if d.Name == name {
			return d
		}
	}
	return nil
}

func (k *K8s) configMap(name string) *corev1.ConfigMap {
	for _, m := range k.ConfigMaps {
		if m.Name == name {
			return m
		}
	}
	return nil
}

func (k *K8s) user(name string) *KafkaUser {
	for _, u := range k.Users {
		if u.Name == name {
			return u
		}
	}
	return nil
}

func (k *K8s) topic(name string) *KafkaTopic {
	for _, t := range k.Topics {
		if t.Name() == name {
			return t
		}
	}
	return nil
}

// containerEnv returns the value of an environment variable of a
// container, from env (a literal value) or from a ConfigMap of envFrom.
func (k *K8s) containerEnv(ct *corev1.Container, name string) (string, bool) {
	for _, e := range ct.Env {
		if e.Name == name {
			return e.Value, e.ValueFrom == nil
		}
	}
	for _, ef := range ct.EnvFrom {
		if ef.ConfigMapRef != nil {
			if cm := k.configMap(ef.ConfigMapRef.Name); cm != nil {
				if v, ok := cm.Data[name]; ok {
					return v, true
				}
			}
		}
	}
	return "", false
}

// mainContainer returns the Deployment's container named dir, or its first.
func mainContainer(d *appsv1.Deployment, dir string) *corev1.Container {
	cs := d.Spec.Template.Spec.Containers
	for i := range cs {
		if cs[i].Name == dir {
			return &cs[i]
		}
	}
	if len(cs) > 0 {
		return &cs[0]
	}
	return nil
}

// portOf resolves a probe's or Service's port (a name or a number) against
// a container's ports.
func portOf(ct *corev1.Container, name string, number int32) (int32, bool) {
	for _, p := range ct.Ports {
		if name != "" && p.Name == name || name == "" && p.ContainerPort == number {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

func checkDeployments(c *Code, f *Files) []error {
	k := f.K8s
	if k == nil {
		return []error{errors.New("deploy/k8s did not load")}
	}
	var errs []error
	uid := -1
	if f.Dockerfile != nil {
		uid = f.Dockerfile.DockerUser()
	}
	for _, s := range c.Services {
		d := k.deployment(s.Group)
		if d == nil {
			errs = append(errs, errorf("no Deployment %s (examples/%s)", s.Group, s.Dir))
			continue
		}
		where := "Deployment " + d.Name
		sel := d.Spec.Selector
		if sel == nil || len(sel.MatchLabels) == 0 {
			errs = append(errs, errorf("%s: no selector", where))
		} else {
			for kk, v := range sel.MatchLabels {
				if d.Spec.Template.Labels[kk] != v {
					errs = append(errs, errorf("%s: selector %s=%s does not match its pod template", where, kk, v))
				}
			}
		}
		ct := mainContainer(d, s.Dir)
		if ct == nil {
			errs = append(errs, errorf("%s: no container", where))
			continue
		}
		if want := "choreo/" + s.Dir + ":"; !strings.HasPrefix(ct.Image, want) {
			errs = append(errs, errorf("%s: image %q; want the image deploy/Dockerfile builds with SERVICE=%s (%s…)", where, ct.Image, s.Dir, want))
		}
		port, ok := portOf(ct, "http", 0)
		if !ok {
			errs = append(errs, errorf("%s: no container port named http", where))
		} else if int(port) != s.Port {
			errs = append(errs, errorf("%s: container port %d; the service listens on %d", where, port, s.Port))
		}
		if v, ok := k.containerEnv(ct, "HTTP_ADDR"); ok {
			if p, _ := addrPortOf(v); p != int(port) {
				errs = append(errs, errorf("%s: HTTP_ADDR %s but container port %d", where, v, port))
			}
		}
		probe := func(kind string, p *corev1.Probe, paths ...string) {
			if p == nil || p.HTTPGet == nil {
				errs = append(errs, errorf("%s: no HTTP %s probe", where, kind))
				return
			}
			if !slices.Contains(paths, p.HTTPGet.Path) {
				errs = append(errs, errorf("%s: %s probe on %s; want %s", where, kind, p.HTTPGet.Path, strings.Join(paths, " or ")))
			}
			pp, ok := portOf(ct, p.HTTPGet.Port.StrVal, p.HTTPGet.Port.IntVal)
			if !ok || int(pp) != s.Port {
				errs = append(errs, errorf("%s: %s probe on port %s, not the service's %d", where, kind, p.HTTPGet.Port.String(), s.Port))
			}
		}
		probe("liveness", ct.LivenessProbe, "/healthz")
		probe("readiness", ct.ReadinessProbe, "/readyz")
		if ct.StartupProbe != nil {
			probe("startup", ct.StartupProbe, "/healthz", "/readyz")
		}
		g := d.Spec.Template.Spec.TerminationGracePeriodSeconds
		if g == nil || time.Duration(*g)*time.Second <= c.ShutdownTimeout {
			errs = append(errs, errorf("%s: terminationGracePeriodSeconds %v; want more than the consumer's shutdown timeout %s", where, derefInt64(g, 30), c.ShutdownTimeout))
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, okReq := ct.Resources.Requests[r]
			if !okReq {
				errs = append(errs, errorf("%s: no %s request", where, r))
			}
			if lim, ok := ct.Resources.Limits[r]; ok && okReq && lim.Cmp(req) < 0 {
				errs = append(errs, errorf("%s: %s limit %s below its request %s", where, r, lim.String(), req.String()))
			}
		}
		if _, ok := ct.Resources.Limits[corev1.ResourceMemory]; !ok {
			errs = append(errs, errorf("%s: no memory limit", where))
		}
		psc := d.Spec.Template.Spec.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
			errs = append(errs, errorf("%s: runAsNonRoot is not set", where))
		}
		if psc != nil && psc.RunAsUser != nil && int(*psc.RunAsUser) != uid {
			errs = append(errs, errorf("%s: runAsUser %d; the image's user is %d", where, *psc.RunAsUser, uid))
		}
		if sc := ct.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			errs = append(errs, errorf("%s: allowPrivilegeEscalation is not false", where))
		}
	}
	for _, d := range k.Deployments {
		if c.ServiceByGroup(d.Name) == nil {
			errs = append(errs, errorf("Deployment %s is no example service's consumer group", d.Name))
		}
	}
	return errs
}

func derefInt64(p *int64, def int64) int64 {
	if p == nil {
		return def
	}
	return *p
}

// strimziCluster returns the one strimzi.io/cluster label of the topics
// and users.
func (k *K8s) strimziCluster() string {
	for _, t := range k.Topics {
		return t.Labels["strimzi.io/cluster"]
	}
	for _, u := range k.Users {
		return u.Labels["strimzi.io/cluster"]
	}
	return ""
}

func checkK8sEnv(c *Code, f *Files) []error {
	k := f.K8s
	if k == nil {
		return []error{errors.New("deploy/k8s did not load")}
	}
	var errs []error
	cluster := k.strimziCluster()
	for _, s := range c.Services {
		d := k.deployment(s.Group)
		if d == nil {
			continue
		}
		ct := mainContainer(d, s.Dir)
		if ct == nil {
			continue
		}
		where := "Deployment " + d.Name
		names := map[string]bool{}
		for _, e := range ct.Env {
			names[e.Name] = true
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				ref := e.ValueFrom.SecretKeyRef
				optional := ref.Optional != nil && *ref.Optional
				if u := k.user(ref.Name); u != nil {
					if ref.Key != "password" {
						errs = append(errs, errorf("%s: %s from Secret %s key %q; Strimzi's user Secrets hold the password under \"password\"", where, e.Name, ref.Name, ref.Key))
					}
				} else if !optional {
					errs = append(errs, errorf("%s: %s from Secret %s, which no KafkaUser makes; mark it optional or create it", where, e.Name, ref.Name))
				}
			}
		}
		for _, ef := range ct.EnvFrom {
			if ef.ConfigMapRef == nil {
				continue
			}
			cm := k.configMap(ef.ConfigMapRef.Name)
			if cm == nil {
				errs = append(errs, errorf("%s: envFrom ConfigMap %s does not exist", where, ef.ConfigMapRef.Name))
				continue
			}
			for name := range cm.Data {
				names[name] = true
			}
		}
		for _, name := range sortedKeys(names) {
			if !s.Env[name] {
				errs = append(errs, errorf("%s: %s is not read by examples/%s (no such string in the packages it is built from)", where, name, s.Dir))
			}
		}
		for _, req := range []string{"KAFKA_BROKERS", "SCHEMA_REGISTRY_URL", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "OTEL_SERVICE_NAME"} {
			if !names[req] {
				errs = append(errs, errorf("%s: %s not set", where, req))
			}
		}
		// The SASL user is the service's KafkaUser, and the password its Secret.
		user, _ := k.containerEnv(ct, "KAFKA_SASL_USERNAME")
		if user != s.Group || k.user(user) == nil {
			errs = append(errs, errorf("%s: KAFKA_SASL_USERNAME %q; want the KafkaUser %s", where, user, s.Group))
		}
		for _, e := range ct.Env {
			if e.Name == "KAFKA_SASL_PASSWORD" && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != user) {
				errs = append(errs, errorf("%s: KAFKA_SASL_PASSWORD is not from the Secret of KafkaUser %s", where, user))
			}
		}
		mech, _ := k.containerEnv(ct, "KAFKA_SASL_MECHANISM")
		if u := k.user(user); u != nil && u.Spec.Authentication != nil && !strings.EqualFold(u.Spec.Authentication.Type, mech) {
			errs = append(errs, errorf("%s: KAFKA_SASL_MECHANISM %q; KafkaUser %s authenticates with %s", where, mech, user, u.Spec.Authentication.Type))
		}
		brokers, _ := k.containerEnv(ct, "KAFKA_BROKERS")
		if host, _, _ := net.SplitHostPort(brokers); host != cluster+"-kafka-bootstrap" {
			errs = append(errs, errorf("%s: KAFKA_BROKERS %s is not the bootstrap Service of Strimzi cluster %q (%s-kafka-bootstrap)", where, brokers, cluster, cluster))
		}
		if ca, ok := k.containerEnv(ct, "KAFKA_TLS_CA_FILE"); ok {
			if err := caMounted(d, ct, ca, cluster+"-cluster-ca-cert"); err != nil {
				errs = append(errs, errorf("%s: KAFKA_TLS_CA_FILE %s: %v", where, ca, err))
			}
		}
	}
	return errs
}

// caMounted checks that file is a key of the Secret secret mounted in ct.
func caMounted(d *appsv1.Deployment, ct *corev1.Container, file, secret string) error {
	for _, vm := range ct.VolumeMounts {
		rel, err := filepath.Rel(vm.MountPath, file)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != vm.Name {
				continue
			}
			if v.Secret == nil || v.Secret.SecretName != secret {
				return fmt.Errorf("mounted from volume %s, not the Strimzi cluster CA Secret %s", v.Name, secret)
			}
			if len(v.Secret.Items) == 0 {
				if rel != "ca.crt" {
					return fmt.Errorf("the Secret %s has ca.crt, not %s", secret, rel)
				}
				return nil
			}
			for _, it := range v.Secret.Items {
				if it.Path == rel {
					if it.Key != "ca.crt" {
						return fmt.Errorf("%s is key %s; the cluster CA is ca.crt", rel, it.Key)
					}
					return nil
				}
			}
			return fmt.Errorf("the volume %s has no item at %s", v.Name, rel)
		}
		return fmt.Errorf("volume %s is not defined", vm.Name)
	}
	return errors.New("no volume is mounted there")
}

func checkK8sServices(c *Code, f *Files) []error {
	k := f.K8s
	if k == nil {
		return []error{errors.New("deploy/k8s did not load")}
	}
	var errs []error
	for _, s := range c.Services {
		d := k.deployment(s.Group)
		if d == nil {
			continue
		}
		var svc *corev1.Service
		for _, x := range k.Services {
			if x.Name == s.Group {
				svc = x
			}
		}
		if svc == nil {
			errs = append(errs, errorf("no Service %s", s.Group))
			continue
		}
		if len(svc.Spec.Selector) == 0 {
			errs = append(errs, errorf("Service %s selects nothing", svc.Name))
		}
		for kk, v := range svc.Spec.Selector {
			if d.Spec.Template.Labels[kk] != v {
				errs = append(errs, errorf("Service %s: selector %s=%s does not match Deployment %s's pods", svc.Name, kk, v, d.Name))
			}
		}
		ct := mainContainer(d, s.Dir)
		for _, p := range svc.Spec.Ports {
			if ct == nil {
				break
			}
			tp := p.TargetPort
			if tp.StrVal == "" && tp.IntVal == 0 {
				tp.IntVal = p.Port
			}
			got, ok := portOf(ct, tp.StrVal, tp.IntVal)
			if !ok || int(got) != s.Port {
				errs = append(errs, errorf("Service %s: targetPort %s is not the container's port %d", svc.Name, tp.String(), s.Port))
			}
		}
	}
	return errs
}

const (
	week = 7 * 24 * time.Hour
)

// topicConfigInt reads a numeric topic setting, written as a number or a
// string.
func topicConfigInt(t *KafkaTopic, key string) (int64, bool) {
	v, ok := t.Spec.Config[key]
	if !ok {
		return 0, false
	}
	switch v := v.(type) {
	case float64:
		return int64(v), true
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		return n, err == nil
	}
	return 0, false
}

func checkTopics(c *Code, f *Files) []error {
	k := f.K8s
	if k == nil {
		return []error{errors.New("deploy/k8s did not load")}
	}
	var errs []error
	cluster := k.strimziCluster()
	if cluster == "" {
		errs = append(errs, errors.New("the topics have no strimzi.io/cluster label"))
	}
	want := map[string]bool{}
	for _, t := range c.SourceTopics() {
		want[t] = true
	}
	for _, s := range c.Services {
		for _, t := range s.Own {
			want[t] = true
		}
	}
	seen := map[string]bool{}
	for _, t := range k.Topics {
		name := t.Name()
		if seen[name] {
			errs = append(errs, errorf("KafkaTopic %s defined twice", name))
		}
		seen[name] = true
		if !want[name] {
			errs = append(errs, errorf("KafkaTopic %s: no service uses this topic", name))
		}
		for _, msg := range validation.IsDNS1123Subdomain(t.ObjectMeta.Name) {
			errs = append(errs, errorf("KafkaTopic %s: metadata.name %q: %s", name, t.ObjectMeta.Name, msg))
		}
		if t.Labels["strimzi.io/cluster"] != cluster {
			errs = append(errs, errorf("KafkaTopic %s: strimzi.io/cluster %q; the others say %q", name, t.Labels["strimzi.io/cluster"], cluster))
		}
		if t.Spec.Partitions < 1 || t.Spec.Replicas < 1 {
			errs = append(errs, errorf("KafkaTopic %s: partitions %d, replicas %d", name, t.Spec.Partitions, t.Spec.Replicas))
		}
		if mi, ok := topicConfigInt(t, "min.insync.replicas"); ok && mi > int64(t.Spec.Replicas) {
			errs = append(errs, errorf("KafkaTopic %s: min.insync.replicas %d above its %d replicas: no write could succeed", name, mi, t.Spec.Replicas))
		}
	}
	for _, name := range sortedKeys(want) {
		if !seen[name] {
			errs = append(errs, errorf("no KafkaTopic %s (the services use it; they may not create topics)", name))
		}
	}
	// Own topics: size, partitions, retention.
	for _, s := range c.Services {
		var srcParts int32
		for _, src := range s.Sources {
			if t := k.topic(src); t != nil && t.Spec.Partitions > srcParts {
				srcParts = t.Spec.Partitions
			}
		}
		for _, name := range s.Own {
			t := k.topic(name)
			if t == nil {
				continue
			}
			if mb, ok := topicConfigInt(t, "max.message.bytes"); !ok || mb != int64(c.OwnTopicMaxBytes) {
				errs = append(errs, errorf("KafkaTopic %s: max.message.bytes %v; the consumer writes up to %d there (MaxValueBytes + 1 MiB, docs/DLQ.md)", name, t.Spec.Config["max.message.bytes"], c.OwnTopicMaxBytes))
			}
			if t.Spec.Partitions < srcParts {
				errs = append(errs, errorf("KafkaTopic %s: %d partitions, fewer than its group's source topics (%d)", name, t.Spec.Partitions, srcParts))
			}
			if strings.HasSuffix(name, ".dlq") {
				if r, ok := topicConfigInt(t, "retention.ms"); ok && r != -1 && time.Duration(r)*time.Millisecond < week {
					errs = append(errs, errorf("KafkaTopic %s: retention %s; dead letters wait for a person: keep them weeks", name, time.Duration(r)*time.Millisecond))
				}
			}
		}
	}
	return errs
}

// aclCovers reports whether an ACL's resource covers a resource name.
func aclCovers(a ACL, typ, name string) bool {
	if a.Resource.Type != typ {
		return false
	}
	switch a.Resource.PatternType {
	case "", "literal":
		return a.Resource.Name == name || a.Resource.Name == "*"
	case "prefix":
		return strings.HasPrefix(name, a.Resource.Name)
	}
	return false
}

// allowed reports whether u may do op on the resource: some allow ACL
// covering it grants op (or All; Read and Write imply Describe).
func allowed(u *KafkaUser, typ, name, op string) bool {
	if u.Spec.Authorization == nil {
		return false
	}
	for _, a := range u.Spec.Authorization.ACLs {
		if a.Type == "deny" || !aclCovers(a, typ, name) {
			continue
		}
		for _, o := range a.Operations {
			if o == op || o == "All" || op == "Describe" && (o == "Read" || o == "Write") {
				return true
			}
		}
	}
	return false
}

var leastPrivilege = []string{"Read", "Write", "Describe"}

func checkUsers(c *Code, f *Files) []error {
	k := f.K8s
	if k == nil {
		return []error{errors.New("deploy/k8s did not load")}
	}
	var errs []error
	cluster := k.strimziCluster()
	for _, s := range c.Services {
		u := k.user(s.Group)
		if u == nil {
			errs = append(errs, errorf("no KafkaUser %s", s.Group))
			continue
		}
		where := "KafkaUser " + u.Name
		if u.Labels["strimzi.io/cluster"] != cluster {
			errs = append(errs, errorf("%s: strimzi.io/cluster %q; the topics say %q", where, u.Labels["strimzi.io/cluster"], cluster))
		}
		if u.Spec.Authentication == nil {
			errs = append(errs, errorf("%s: no authentication", where))
		}
		if u.Spec.Authorization == nil || u.Spec.Authorization.Type != "simple" {
			errs = append(errs, errorf("%s: no simple authorization", where))
			continue
		}
		need := func(typ, name string, ops ...string) {
			for _, op := range ops {
				if !allowed(u, typ, name, op) {
					errs = append(errs, errorf("%s may not %s %s %s; the service needs to", where, op, typ, name))
				}
			}
		}
		for _, t := range s.Sources {
			need("topic", t, "Read", "Describe")
		}
		for _, t := range s.Outputs {
			need("topic", t, "Write", "Describe")
		}
		for _, t := range s.Own {
			need("topic", t, "Read", "Write", "Describe")
		}
		need("group", s.Group, "Read")
		// Least privilege: only what is needed, on only what is used.
		used := append(append(append([]string{}, s.Sources...), s.Outputs...), s.Own...)
		for _, a := range u.Spec.Authorization.ACLs {
			for _, op := range a.Operations {
				if !slices.Contains(leastPrivilege, op) {
					errs = append(errs, errorf("%s: %s on %s %s; a service needs only %s", where, op, a.Resource.Type, a.Resource.Name, strings.Join(leastPrivilege, ", ")))
				}
			}
			if a.Resource.Name == "*" || a.Resource.Name == "" && a.Resource.Type != "cluster" {
				errs = append(errs, errorf("%s: an ACL on every %s", where, a.Resource.Type))
				continue
			}
			switch a.Resource.Type {
			case "topic":
				covers := false
				for _, t := range used {
					if aclCovers(a, "topic", t) {
						covers = true
					}
				}
				if !covers {
					errs = append(errs, errorf("%s: an ACL on topic %s (%s), which the service does not use", where, a.Resource.Name, a.Resource.PatternType))
				}
				if slices.Contains(a.Operations, "Write") {
					for _, t := range s.Sources {
						if aclCovers(a, "topic", t) && !slices.Contains(s.Outputs, t) {
							errs = append(errs, errorf("%s: may write to %s, which it only reads", where, t))
						}
					}
				}
			case "group":
				if !aclCovers(a, "group", s.Group) {
					errs = append(errs, errorf("%s: an ACL on group %s, not its own", where, a.Resource.Name))
				}
			case "cluster", "transactionalId":
				errs = append(errs, errorf("%s: an ACL on %s, which the service does not need", where, a.Resource.Type))
			}
		}
	}
	for _, u := range k.Users {
		if c.ServiceByGroup(u.Name) == nil {
			errs = append(errs, errorf("KafkaUser %s is no example service's", u.Name))
		}
	}
	return errs
}

var kedaSASL = map[string]string{"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}

// singleInstance is the Deployment annotation of a service that must run as
// one pod (the example order service keeps its orders in memory).
const singleInstance = "choreo.dev/single-instance"

func checkKEDA(c *Code, f *Files) []error {
	k := f.K8s
	if k == nil {
		return []error{errors.New("deploy/k8s did not load")}
	}
	var errs []error
	cluster := k.strimziCluster()
	for _, s := range c.Services {
		d := k.deployment(s.Group)
		if d == nil || len(s.Sources) == 0 {
			continue
		}
		ct := mainContainer(d, s.Dir)
		var so *ScaledObject
		for _, x := range k.ScaledObjects {
			if x.Spec.ScaleTargetRef.Name == d.Name {
				so = x
			}
		}
		if d.Annotations[singleInstance] == "true" {
			// A service that keeps its state in memory: one pod, never
			// two at once, and nothing that scales it.
			if so != nil {
				errs = append(errs, errorf("ScaledObject %s scales Deployment %s, which is %s", so.Name, d.Name, singleInstance))
			}
			if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
				errs = append(errs, errorf("Deployment %s is %s: want replicas 1", d.Name, singleInstance))
			}
			if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
				errs = append(errs, errorf("Deployment %s is %s: want strategy Recreate (a rolling update runs two pods at once)", d.Name, singleInstance))
			}
			continue
		}
		if so == nil {
			errs = append(errs, errorf("no ScaledObject scales Deployment %s", d.Name))
			continue
		}
		where := "ScaledObject " + so.Name
		if kind := so.Spec.ScaleTargetRef.Kind; kind != "" && kind != "Deployment" {
			errs = append(errs, errorf("%s: scales a %s", where, kind))
		}
		minR, maxR := int32(1), int32(100)
		if so.Spec.MinReplicaCount != nil {
			minR = *so.Spec.MinReplicaCount
		}
		if so.Spec.MaxReplicaCount != nil {
			maxR = *so.Spec.MaxReplicaCount
		}
		if minR < 1 {
			errs = append(errs, errorf("%s: minReplicaCount %d: the service serves HTTP and its probes; keep one", where, minR))
		}
		if maxR < minR {
			errs = append(errs, errorf("%s: maxReplicaCount %d below minReplicaCount %d", where, maxR, minR))
		}
		var topics []string
		brokers, _ := k.containerEnv(ct, "KAFKA_BROKERS")
		mech, _ := k.containerEnv(ct, "KAFKA_SASL_MECHANISM")
		_, tlsOn := k.containerEnv(ct, "KAFKA_TLS_CA_FILE")
		for i, tr := range so.Spec.Triggers {
			tw := fmt.Sprintf("%s trigger %d", where, i+1)
			if tr.Type != "kafka" {
				errs = append(errs, errorf("%s: type %q; want kafka (lag)", tw, tr.Type))
				continue
			}
			md := tr.Metadata
			topics = append(topics, md["topic"])
			if md["consumerGroup"] != s.Group {
				errs = append(errs, errorf("%s: consumerGroup %q; the service's group is %s", tw, md["consumerGroup"], s.Group))
			}
			if md["excludePersistentLag"] != "true" {
				errs = append(errs, errorf("%s: excludePersistentLag %q; want \"true\" (a stuck poison partition must not scale to the maximum)", tw, md["excludePersistentLag"]))
			}
			// A group with no committed offset starts where the consumer
			// does: at the start, unless the service asks for the end.
			wantReset := "earliest"
			if slices.Contains(s.ConsumerOptions, "StartAtLatest") {
				wantReset = "latest"
			}
			if md["offsetResetPolicy"] != wantReset {
				errs = append(errs, errorf("%s: offsetResetPolicy %q; the consumer starts a new group at the %s (want %q)", tw, md["offsetResetPolicy"], map[string]string{"earliest": "start", "latest": "end"}[wantReset], wantReset))
			}
			if n, err := strconv.Atoi(md["lagThreshold"]); err != nil || n < 1 {
				errs = append(errs, errorf("%s: lagThreshold %q is not a positive integer", tw, md["lagThreshold"]))
			}
			if md["bootstrapServers"] != brokers {
				errs = append(errs, errorf("%s: bootstrapServers %q; the service uses %q", tw, md["bootstrapServers"], brokers))
			}
			if want := kedaSASL[strings.ToUpper(mech)]; md["sasl"] != want {
				errs = append(errs, errorf("%s: sasl %q; the service authenticates with %s (%q)", tw, md["sasl"], mech, want))
			}
			if tlsOn != (md["tls"] == "enable") {
				errs = append(errs, errorf("%s: tls %q, but the service's TLS is %v", tw, md["tls"], tlsOn))
			}
			if t := k.topic(md["topic"]); t != nil && maxR > t.Spec.Partitions {
				errs = append(errs, errorf("%s: maxReplicaCount %d above the %d partitions of %s: the extra members would idle", where, maxR, t.Spec.Partitions, t.Name()))
			}
			if tr.AuthenticationRef == nil {
				if mech != "" {
					errs = append(errs, errorf("%s: no authenticationRef, but the cluster needs %s", tw, mech))
				}
				continue
			}
			errs = append(errs, checkTriggerAuth(k, tr.AuthenticationRef.Name, d, s, cluster)...)
		}
		slices.Sort(topics)
		if !slices.Equal(topics, s.Sources) {
			errs = append(errs, errorf("%s: triggers on %v; the service consumes %v", where, topics, s.Sources))
		}
	}
	return errs
}

func checkTriggerAuth(k *K8s, name string, d *appsv1.Deployment, s *Service, cluster string) []error {
	var ta *TriggerAuthentication
	for _, x := range k.TriggerAuths {
		if x.Name == name {
			ta = x
		}
	}
	if ta == nil {
		return []error{errorf("TriggerAuthentication %s does not exist", name)}
	}
	var errs []error
	where := "TriggerAuthentication " + name
	params := map[string]bool{}
	for _, e := range ta.Spec.Env {
		params[e.Parameter] = true
		var ct *corev1.Container
		for i := range d.Spec.Template.Spec.Containers {
			if c := &d.Spec.Template.Spec.Containers[i]; c.Name == e.ContainerName || e.ContainerName == "" && i == 0 {
				ct = c
			}
		}
		if ct == nil {
			errs = append(errs, errorf("%s: container %q is not in Deployment %s", where, e.ContainerName, d.Name))
			continue
		}
		if _, ok := k.containerEnv(ct, e.Name); !ok {
			errs = append(errs, errorf("%s: %s is not set (as a value) in container %s", where, e.Name, ct.Name))
		}
	}
	for _, r := range ta.Spec.SecretTargetRef {
		params[r.Parameter] = true
		switch r.Parameter {
		case "password":
			if r.Name != s.Group || r.Key != "password" || k.user(r.Name) == nil {
				errs = append(errs, errorf("%s: password from Secret %s key %s; want KafkaUser %s's Secret, key password", where, r.Name, r.Key, s.Group))
			}
		case "ca":
			if r.Name != cluster+"-cluster-ca-cert" || r.Key != "ca.crt" {
				errs = append(errs, errorf("%s: ca from Secret %s key %s; want %s-cluster-ca-cert, key ca.crt", where, r.Name, r.Key, cluster))
			}
		}
	}
	for _, p := range []string{"username", "password"} {
		if !params[p] {
			errs = append(errs, errorf("%s: no %s", where, p))
		}
	}
	return errs
}

// ruleFile is a Prometheus rule file, for rulefmt.
type ruleFile struct {
	Groups []ruleGroup `json:"groups"`
}

type ruleGroup struct {
	Name  string      `json:"name"`
	Rules []ruleEntry `json:"rules"`
}

type ruleEntry struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func checkRules(c *Code, f *Files) []error {
	k := f.K8s
	if k == nil || len(k.PrometheusRules) == 0 {
		return []error{errors.New("no PrometheusRule")}
	}
	var errs []error
	uses := map[string]bool{} // metric (with outcome matcher: metric{outcome}) used by some alert
	for _, pr := range k.PrometheusRules {
		var rf ruleFile
		for _, g := range pr.Spec.Groups {
			rg := ruleGroup{Name: g.Name}
			for _, r := range g.Rules {
				e := ruleEntry{Alert: r.Alert, Record: r.Record, Expr: r.Expr.String(), Labels: r.Labels, Annotations: r.Annotations}
				if r.For != nil {
					e.For = string(*r.For)
				}
				rg.Rules = append(rg.Rules, e)
				where := fmt.Sprintf("PrometheusRule %s, %s", pr.Name, r.Alert+r.Record)
				sels, perrs := ExprProblems(e.Expr, c.Metrics)
				for _, pe := range perrs {
					errs = append(errs, errorf("%s: %v", where, pe))
				}
				for _, s := range sels {
					uses[s.Metric] = true
					for _, m := range s.Matchers {
						if m.Name == "outcome" {
							uses[s.Metric+"{outcome}"] = true
						}
						if m.Name == "deployment" {
							errs = append(errs, deploymentMatcher(k, where, m)...)
						}
					}
				}
				if r.Alert != "" {
					if r.Labels["severity"] == "" {
						errs = append(errs, errorf("%s: no severity label", where))
					}
					if r.Annotations["summary"] == "" {
						errs = append(errs, errorf("%s: no summary annotation", where))
					}
				}
			}
			rf.Groups = append(rf.Groups, rg)
		}
		b, err := yaml.Marshal(rf)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, rerrs := rulefmt.Parse(b, false, model.UTF8Validation, promParser, slog.New(slog.NewTextHandler(io.Discard, nil))); len(rerrs) > 0 {
			for _, e := range rerrs {
				errs = append(errs, errorf("PrometheusRule %s: %v", pr.Name, e))
			}
		}
	}
	for _, need := range []struct{ use, what string }{
		{"choreo_dlq_dead_letters_total", "dead letters growing"},
		{"choreo_consumer_lag", "lag high"},
		{"choreo_consumer_events_total{outcome}", "handler error rate (events by outcome)"},
		{"kube_deployment_status_replicas_unavailable", "a consumer not ready"},
		{"choreo_consumer_stuck_writes", "stuck dead-letter writes"},
		{"choreo_consumer_circuit_state", "a circuit breaker open"},
	} {
		if !uses[need.use] {
			errs = append(errs, errorf("no alert on %s (%s)", need.what, need.use))
		}
	}
	return errs
}

// deploymentMatcher checks a deployment=~"a|b" matcher names exactly the
// Deployments.
func deploymentMatcher(k *K8s, where string, m *labels.Matcher) []error {
	got := matcherValues(m)
	slices.Sort(got)
	var want []string
	for _, d := range k.Deployments {
		want = append(want, d.Name)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		return []error{errorf("%s: deployment matcher names %v; the Deployments are %v", where, got, want)}
	}
	return nil
}

func checkPodMonitor(c *Code, f *Files) []error {
	k := f.K8s
	if k == nil || len(k.PodMonitors) == 0 {
		return []error{errors.New("no PodMonitor")}
	}
	var errs []error
	for _, s := range c.Services {
		d := k.deployment(s.Group)
		if d == nil {
			continue
		}
		ct := mainContainer(d, s.Dir)
		scraped := false
		for _, pm := range k.PodMonitors {
			selects := len(pm.Spec.Selector.MatchLabels) > 0
			for kk, v := range pm.Spec.Selector.MatchLabels {
				if d.Spec.Template.Labels[kk] != v {
					selects = false
				}
			}
			if !selects {
				continue
			}
			for _, ep := range pm.Spec.PodMetricsEndpoints {
				name := ""
				if ep.Port != nil {
					name = *ep.Port
				}
				var num int32
				if ep.PortNumber != nil {
					num = *ep.PortNumber
				}
				if p, ok := portOf(ct, name, num); ok && int(p) == s.Port {
					scraped = true
					if ep.Path != "/metrics" {
						errs = append(errs, errorf("PodMonitor %s scrapes %s on %s; the services serve /metrics", pm.Name, d.Name, ep.Path))
					}
				}
			}
		}
		if !scraped {
			errs = append(errs, errorf("no PodMonitor scrapes Deployment %s on its port %d", d.Name, s.Port))
		}
	}
	return errs
}

// ---- Grafana ----

func checkDashboards(c *Code, f *Files) []error {
	if len(f.Dashboards) == 0 {
		return []error{errors.New("no Grafana dashboard under deploy/")}
	}
	var errs []error
	for _, path := range sortedKeys(f.Dashboards) {
		d := f.Dashboards[path]
		if d.UID == "" || d.Title == "" {
			errs = append(errs, errorf("%s: no uid or title", path))
		}
		vars := map[string]bool{}
		for _, v := range d.Templating.List {
			vars[v.Name] = true
		}
		ids := map[int]bool{}
		used := map[string]bool{}
		var walk func(ps []Panel)
		walk = func(ps []Panel) {
			for _, p := range ps {
				where := fmt.Sprintf("%s panel %d %q", path, p.ID, p.Title)
				if ids[p.ID] {
					errs = append(errs, errorf("%s: id %d used twice", where, p.ID))
				}
				ids[p.ID] = true
				if p.Type == "row" {
					walk(p.Panels)
					continue
				}
				if p.GridPos == nil {
					errs = append(errs, errorf("%s: no gridPos", where))
				}
				if len(p.Targets) == 0 {
					errs = append(errs, errorf("%s: no query", where))
				}
				for _, ds := range []*PanelDS{p.Datasource} {
					if ds != nil && strings.HasPrefix(ds.UID, "$") && !vars[strings.Trim(ds.UID, "${}")] {
						errs = append(errs, errorf("%s: data source %s is not a variable of the dashboard", where, ds.UID))
					}
				}
				for _, t := range p.Targets {
					expr, undefined := grafanaExpr(t.Expr, vars)
					for _, u := range undefined {
						errs = append(errs, errorf("%s: query uses $%s, which the dashboard does not define", where, u))
					}
					sels, perrs := ExprProblems(expr, c.Metrics)
					for _, pe := range perrs {
						errs = append(errs, errorf("%s: %v", where, pe))
					}
					for _, s := range sels {
						if fam, _ := c.Metrics.Lookup(s.Metric); fam != nil {
							used[fam.Name] = true
						}
					}
				}
			}
		}
		walk(d.Panels)
		// The dashboard shows every metric tracing exports.
		for _, name := range sortedKeys(c.Metrics) {
			if strings.HasPrefix(name, "choreo_") && !used[name] {
				errs = append(errs, errorf("%s: no panel shows %s", path, name))
			}
		}
	}
	return errs
}

// staticTargets returns the addresses of the static_configs among sd.
func staticTargets(sd discovery.Configs) []string {
	var out []string
	for _, c := range sd {
		st, ok := c.(discovery.StaticConfig)
		if !ok {
			continue
		}
		for _, g := range st {
			for _, t := range g.Targets {
				out = append(out, string(t[model.AddressLabel]))
			}
		}
	}
	return out
}
