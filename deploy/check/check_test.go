package check

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var (
	codeOnce sync.Once
	theCode  *Code
	codeErr  error
	theRoot  string
)

// loadCode reads the facts from the code once per test binary.
func loadCode(t *testing.T) (*Code, string) {
	t.Helper()
	codeOnce.Do(func() {
		theRoot, codeErr = RepoRoot()
		if codeErr == nil {
			theCode, codeErr = LoadCode(theRoot)
		}
	})
	if codeErr != nil {
		t.Fatalf("reading the code: %v", codeErr)
	}
	return theCode, theRoot
}

// TestDeployFiles is the cross-check of every deployment file against the
// code.
func TestDeployFiles(t *testing.T) {
	c, root := loadCode(t)
	if c.FromContract {
		t.Logf("examples/ holds no service yet: service names, groups, topics and ports come from check.Contract, not the code")
	}
	for _, s := range c.Services {
		t.Logf("examples/%s: group %s, handles %v, publishes to %v, port %d, own topics %v", s.Dir, s.Group, s.Sources, s.Outputs, s.Port, s.Own)
	}
	f, err := LoadFiles(root)
	if err != nil {
		t.Fatalf("loading the deployment files: %v", err)
	}
	for _, ch := range Checks {
		t.Run(ch.Name, func(t *testing.T) {
			for _, e := range ch.Run(c, f) {
				t.Error(e)
			}
		})
	}
}

// TestCodeFacts checks what LoadCode read against what the code is known
// to say, so that a scanner that reads nothing cannot pass the checks.
func TestCodeFacts(t *testing.T) {
	c, _ := loadCode(t)
	if c.ShutdownTimeout != 30*time.Second {
		t.Errorf("consumer shutdown timeout %s; consumer/options.go says 30s", c.ShutdownTimeout)
	}
	if c.OwnTopicMaxBytes != 8<<20+1<<20 {
		t.Errorf("own topics' max.message.bytes %d; want MaxValueBytes 8 MiB + 1 MiB", c.OwnTopicMaxBytes)
	}
	if !c.CLI.Commands["dev"] || !c.CLI.Flags["brokers"] || !c.CLI.Flags["registry"] {
		t.Errorf("cmd/choreo: commands %v, flags %v; want dev, --brokers, --registry among them", c.CLI.Commands, c.CLI.Flags)
	}
	if !c.FromContract && (c.PaymentLimitCents <= 0 || c.MaxAmountCents <= 0 || c.EventsPartitions <= 0) {
		t.Errorf("payment limit %d, maximum amount %d, partitions %d: read nothing from examples/", c.PaymentLimitCents, c.MaxAmountCents, c.EventsPartitions)
	}
	for _, s := range c.Services {
		if !c.FromContract && (len(s.Routes) == 0 || len(s.JSONTags) == 0) && s.Dir == "orders" {
			t.Errorf("examples/orders: routes %v, JSON tags %v: read nothing", s.Routes, s.JSONTags)
		}
		if s.Group == "" || s.Port == 0 || len(s.Own) == 0 {
			t.Errorf("examples/%s: %+v: group, port or own topics missing", s.Dir, s)
		}
		for _, want := range []string{"KAFKA_BROKERS", "KAFKA_SASL_PASSWORD", "OTEL_SERVICE_NAME", "GOMEMLIMIT"} {
			if !s.Env[want] {
				t.Errorf("examples/%s: %s not found among the names its program reads", s.Dir, want)
			}
		}
		if s.Env["NO_SUCH_VARIABLE_ANYWHERE"] {
			t.Errorf("examples/%s: env index finds anything", s.Dir)
		}
	}
	for _, want := range []string{"choreo_consumer_events_total", "choreo_consumer_handler_duration_seconds", "choreo_consumer_lag", "choreo_dlq_dead_letters_total"} {
		if c.Metrics[want] == nil {
			t.Errorf("scraped metrics lack %s", want)
		}
	}
	if f := c.Metrics["choreo_consumer_events_total"]; f != nil && len(f.Labels["outcome"]) != len(Outcomes) {
		t.Errorf("outcomes scraped %v; want %d", f.Labels["outcome"], len(Outcomes))
	}
}

// ---- broken values ----

func cloneCode(c *Code) *Code {
	n := *c
	n.Services = nil
	for _, s := range c.Services {
		s2 := *s
		s2.Sources = slices.Clone(s.Sources)
		s2.Outputs = slices.Clone(s.Outputs)
		s2.Own = slices.Clone(s.Own)
		s2.ConsumerOptions = slices.Clone(s.ConsumerOptions)
		s2.Routes = slices.Clone(s.Routes)
		s2.JSONTags = map[string][]string{}
		for k, v := range s.JSONTags {
			s2.JSONTags[k] = v
		}
		s2.Env = map[string]bool{}
		for k, v := range s.Env {
			s2.Env[k] = v
		}
		n.Services = append(n.Services, &s2)
	}
	n.Metrics = Metrics{}
	for k, v := range c.Metrics {
		n.Metrics[k] = v
	}
	return &n
}

func str(s string) *string { return &s }

func editService(f *Files, name string, fn func(s *types.ServiceConfig)) {
	s := f.Compose.Services[name]
	fn(&s)
	f.Compose.Services[name] = s
}

func setEnv(f *Files, svc, k, v string) {
	editService(f, svc, func(s *types.ServiceConfig) {
		env := types.MappingWithEquals{}
		for kk, vv := range s.Environment {
			env[kk] = vv
		}
		env[k] = &v
		s.Environment = env
	})
}

func container(f *Files, deployment string) *corev1.Container {
	d := f.K8s.deployment(deployment)
	return &d.Spec.Template.Spec.Containers[0]
}

func setContainerEnv(f *Files, deployment, k, v string) {
	ct := container(f, deployment)
	for i := range ct.Env {
		if ct.Env[i].Name == k {
			ct.Env[i].Value, ct.Env[i].ValueFrom = v, nil
			return
		}
	}
	ct.Env = append(ct.Env, corev1.EnvVar{Name: k, Value: v})
}

func topicByName(f *Files, name string) *KafkaTopic { return f.K8s.topic(name) }

func firstService(c *Code) *Service { return c.Services[0] }

func serviceNamed(c *Code, dir string) *Service {
	if s := c.Service(dir); s != nil {
		return s
	}
	return c.Services[0]
}

func replaceExpr(f *Files, alert, old, new string) {
	for _, pr := range f.K8s.PrometheusRules {
		for gi := range pr.Spec.Groups {
			for ri := range pr.Spec.Groups[gi].Rules {
				r := &pr.Spec.Groups[gi].Rules[ri]
				if r.Alert == alert {
					r.Expr = intstr.FromString(strings.ReplaceAll(r.Expr.String(), old, new))
				}
			}
		}
	}
}

func dashboard(f *Files) *Dashboard {
	for _, d := range f.Dashboards {
		return d
	}
	return nil
}

// TestChecksCatchBrokenValues breaks one value at a time, in the files or
// in what the code says, and wants the check responsible to report it.
func TestChecksCatchBrokenValues(t *testing.T) {
	code, root := loadCode(t)
	cases := []struct {
		name   string
		check  string // prefix of the check's name
		want   string // in one of its problems
		breakF func(c *Code, f *Files)
	}{
		// compose
		{"unpinned image", "compose: images pinned", "not pinned", func(c *Code, f *Files) {
			editService(f, "postgres", func(s *types.ServiceConfig) { s.Image = "postgres:latest" })
		}},
		{"Kafka other than deploy/local's", "compose: Kafka", "deploy/local", func(c *Code, f *Files) {
			editService(f, "kafka", func(s *types.ServiceConfig) { s.Image = "apache/kafka:3.9.0" })
		}},
		{"Kafka version of the script changed", "compose: Kafka", "want apache/kafka:4.9.9", func(c *Code, f *Files) { c.KafkaVersion = "4.9.9" }},
		{"Kafka not KRaft", "compose: Kafka", "KRaft", func(c *Code, f *Files) { setEnv(f, "kafka", "KAFKA_PROCESS_ROLES", "broker") }},
		{"wrong build arg", "compose: services built", "SERVICE=", func(c *Code, f *Files) {
			editService(f, firstService(c).Dir, func(s *types.ServiceConfig) { s.Build.Args["SERVICE"] = str("nosuchservice") })
		}},
		{"other Dockerfile", "compose: services built", "deploy/Dockerfile", func(c *Code, f *Files) {
			editService(f, firstService(c).Dir, func(s *types.ServiceConfig) { s.Build.Dockerfile = "Dockerfile" })
		}},
		{"env var no code reads", "compose: environment", "KAFKA_BROKER is not read", func(c *Code, f *Files) {
			setEnv(f, firstService(c).Dir, "KAFKA_BROKER", "kafka:9092")
		}},
		{"env var the code stopped reading", "compose: environment", "HTTP_ADDR is not read", func(c *Code, f *Files) {
			delete(firstService(c).Env, "HTTP_ADDR")
		}},
		{"HTTP_ADDR not the code's port", "compose: ports", "the code's default", func(c *Code, f *Files) {
			setEnv(f, firstService(c).Dir, "HTTP_ADDR", ":9999")
		}},
		{"code's port changed", "compose: ports", "the code's default is 9000", func(c *Code, f *Files) { firstService(c).Port = 9000 }},
		{"health check on another path", "compose: ports", "want /readyz or /healthz", func(c *Code, f *Files) {
			editService(f, firstService(c).Dir, func(s *types.ServiceConfig) {
				s.HealthCheck.Test = []string{"CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:" + itoa(firstService(c).Port) + "/ready"}
			})
		}},
		{"brokers not advertised", "compose: addresses", "not a listener", func(c *Code, f *Files) {
			setEnv(f, firstService(c).Dir, "KAFKA_BROKERS", "kafka:9093")
		}},
		{"registry host unknown", "compose: addresses", "not a service of the file", func(c *Code, f *Files) {
			setEnv(f, firstService(c).Dir, "SCHEMA_REGISTRY_URL", "http://registry:8081")
		}},
		{"database password wrong", "compose: addresses", "DATABASE_URL", func(c *Code, f *Files) {
			setEnv(f, "payments", "DATABASE_URL", "postgres://choreo:secret@postgres:5432/choreo")
		}},
		{"no wait for the registry", "compose: depends_on", "schema-registry", func(c *Code, f *Files) {
			editService(f, firstService(c).Dir, func(s *types.ServiceConfig) {
				d := types.DependsOnConfig{}
				for k, v := range s.DependsOn {
					if k != "schema-registry" {
						d[k] = v
					}
				}
				s.DependsOn = d
			})
		}},
		{"healthy condition without health check", "compose: depends_on", "no health check", func(c *Code, f *Files) {
			editService(f, firstService(c).Dir, func(s *types.ServiceConfig) {
				d := types.DependsOnConfig{}
				for k, v := range s.DependsOn {
					d[k] = v
				}
				d["jaeger"] = types.ServiceDependency{Condition: types.ServiceConditionHealthy}
				s.DependsOn = d
			})
		}},
		{"a topic not created", "compose: source topics", "kafka-init creates", func(c *Code, f *Files) {
			editService(f, "kafka-init", func(s *types.ServiceConfig) {
				s.Command = types.ShellCommand{strings.Replace(strings.Join(s.Command, " "), " shipments;", ";", 1)}
			})
		}},
		{"partitions other than the services'", "compose: source topics", "--partitions", func(c *Code, f *Files) { c.EventsPartitions = 7 }},
		{"demo flag unknown", "compose: the demo", "--nosuchflag", func(c *Code, f *Files) {
			editService(f, "demo", func(s *types.ServiceConfig) { s.Command = append(slices.Clone(s.Command), "--nosuchflag") })
		}},
		{"demo on other brokers", "compose: the demo", "--brokers", func(c *Code, f *Files) {
			editService(f, "demo", func(s *types.ServiceConfig) {
				cmd := slices.Clone(s.Command)
				for i := range cmd {
					if cmd[i] == "kafka:9092" {
						cmd[i] = "localhost:29092"
					}
				}
				s.Command = cmd
			})
		}},
		{"demo beside the service containers", "compose: the demo", "put it in a profile", func(c *Code, f *Files) {
			editService(f, firstService(c).Dir, func(s *types.ServiceConfig) { s.Profiles = nil })
		}},
		{"demo waits for a service container", "compose: the demo", "whose consumer group it joins", func(c *Code, f *Files) {
			editService(f, "demo", func(s *types.ServiceConfig) {
				d := types.DependsOnConfig{}
				for k, v := range s.DependsOn {
					d[k] = v
				}
				d[firstService(c).Dir] = types.ServiceDependency{Condition: types.ServiceConditionHealthy}
				s.DependsOn = d
			})
		}},
		{"demo on another database", "compose: the demo", "--database-url postgres://other", func(c *Code, f *Files) {
			editService(f, "demo", func(s *types.ServiceConfig) {
				cmd := slices.Clone(s.Command)
				for i := range cmd {
					if strings.HasPrefix(cmd[i], "postgres://") {
						cmd[i] = "postgres://other@postgres/other"
					}
				}
				s.Command = cmd
			})
		}},
		{"generator field misspelled", "compose: the order generator", "no request type", func(c *Code, f *Files) {
			editService(f, "order-generator", func(s *types.ServiceConfig) {
				s.Command = types.ShellCommand{strings.Replace(strings.Join(s.Command, " "), "amount_cents", "amount", 1)}
			})
		}},
		{"generator posts to another route", "compose: the order generator", "routes", func(c *Code, f *Files) {
			editService(f, "order-generator", func(s *types.ServiceConfig) {
				s.Command = types.ShellCommand{strings.Replace(strings.Join(s.Command, " "), "8080/orders", "8080/order", 1)}
			})
		}},
		{"payment limit raised", "compose: the order generator", "no order is declined", func(c *Code, f *Files) { c.PaymentLimitCents = 1 << 40 }},
		{"orders service takes less", "compose: the order generator", "maximum", func(c *Code, f *Files) { c.MaxAmountCents = 100 }},
		{"orders service changed its request", "compose: the order generator", "no request type", func(c *Code, f *Files) {
			s := serviceNamed(c, "orders")
			s.JSONTags = map[string][]string{"x.PlaceRequest": {"customer", "amount"}}
		}},
		{"stop grace shorter than shutdown", "compose: stop grace", "stop_grace_period", func(c *Code, f *Files) {
			editService(f, firstService(c).Dir, func(s *types.ServiceConfig) { d := types.Duration(30 * time.Second); s.StopGracePeriod = &d })
		}},
		{"consumer shutdown timeout raised", "compose: stop grace", "shutdown timeout 1m0s", func(c *Code, f *Files) { c.ShutdownTimeout = time.Minute }},
		// prometheus
		{"scrape target on the wrong port", "prometheus: scrape targets", "does not scrape", func(c *Code, f *Files) {
			for _, sc := range f.Prometheus.ScrapeConfigs {
				for _, sd := range sc.ServiceDiscoveryConfigs {
					if st, ok := sd.(discovery.StaticConfig); ok {
						for _, g := range st {
							for _, tgt := range g.Targets {
								if strings.HasPrefix(string(tgt[model.AddressLabel]), firstService(c).Dir+":") {
									tgt[model.AddressLabel] = model.LabelValue(firstService(c).Dir + ":1")
								}
							}
						}
					}
				}
			}
		}},
		// Dockerfile
		{"unpinned base image", "dockerfile: pinned", "not pinned", func(c *Code, f *Files) {
			for i, in := range f.Dockerfile.Instructions {
				if in.Cmd == "FROM" && strings.HasPrefix(in.Args, "alpine") {
					f.Dockerfile.Instructions[i].Args = "alpine:latest"
				}
			}
		}},
		{"runs as root", "dockerfile: pinned", "USER", func(c *Code, f *Files) {
			for i, in := range f.Dockerfile.Instructions {
				if in.Cmd == "USER" {
					f.Dockerfile.Instructions[i].Args = "root"
				}
			}
		}},
		{"COPY of a missing file", "dockerfile: pinned", "not in the build context", func(c *Code, f *Files) {
			f.Dockerfile.Instructions = append(f.Dockerfile.Instructions, Instruction{Cmd: "COPY", Args: "no-such-file /x", Line: 99})
		}},
		{"build path dropped", "dockerfile: pinned", "./examples/${SERVICE}", func(c *Code, f *Files) {
			for i, in := range f.Dockerfile.Instructions {
				if in.Cmd == "RUN" {
					f.Dockerfile.Instructions[i].Args = strings.ReplaceAll(in.Args, "./examples/${SERVICE}", "./example/${SERVICE}")
				}
			}
		}},
		{"context leaves examples out", "dockerfile: the build context", "examples/", func(c *Code, f *Files) {
			f.DockerIgnore = append(f.DockerIgnore, "examples")
		}},
		{"context leaves embedded files out", "dockerfile: the build context", ".avsc", func(c *Code, f *Files) {
			f.DockerIgnore = append(f.DockerIgnore, "**/*.avsc")
		}},
		// Kubernetes
		{"file not in kustomization", "k8s: kustomization", "not in kustomization.yaml", func(c *Code, f *Files) {
			f.K8s.Kustomization.Resources = f.K8s.Kustomization.Resources[1:]
		}},
		{"readiness on /healthz", "k8s: deployments", "readiness probe on /healthz", func(c *Code, f *Files) {
			container(f, firstService(c).Group).ReadinessProbe.HTTPGet.Path = "/healthz"
		}},
		{"probe on another port", "k8s: deployments", "probe on port", func(c *Code, f *Files) {
			container(f, firstService(c).Group).LivenessProbe.HTTPGet.Port = intstr.FromInt32(1)
		}},
		{"grace period under the shutdown timeout", "k8s: deployments", "terminationGracePeriodSeconds", func(c *Code, f *Files) {
			g := int64(30)
			f.K8s.deployment(firstService(c).Group).Spec.Template.Spec.TerminationGracePeriodSeconds = &g
		}},
		{"container port not the service's", "k8s: deployments", "the service listens on", func(c *Code, f *Files) {
			container(f, firstService(c).Group).Ports[0].ContainerPort = 1234
		}},
		{"runAsUser not the image's", "k8s: deployments", "runAsUser", func(c *Code, f *Files) {
			u := int64(1000)
			f.K8s.deployment(firstService(c).Group).Spec.Template.Spec.SecurityContext.RunAsUser = &u
		}},
		{"no memory request", "k8s: deployments", "memory request", func(c *Code, f *Files) {
			delete(container(f, firstService(c).Group).Resources.Requests, corev1.ResourceMemory)
		}},
		{"image of another service", "k8s: deployments", "image", func(c *Code, f *Files) {
			container(f, firstService(c).Group).Image = "choreo/other:dev"
		}},
		{"k8s env var no code reads", "k8s: environment", "PAYMENT_FAILURE is not read", func(c *Code, f *Files) {
			setContainerEnv(f, serviceNamed(c, "payments").Group, "PAYMENT_FAILURE", "0")
		}},
		{"ConfigMap key no code reads", "k8s: environment", "KAFKA_TLS_CA is not read", func(c *Code, f *Files) {
			f.K8s.ConfigMaps[0].Data["KAFKA_TLS_CA"] = "x"
		}},
		{"password of another user", "k8s: environment", "KAFKA_SASL_PASSWORD is not from the Secret", func(c *Code, f *Files) {
			ct := container(f, firstService(c).Group)
			for i := range ct.Env {
				if ct.Env[i].Name == "KAFKA_SASL_PASSWORD" {
					ct.Env[i].ValueFrom.SecretKeyRef.Name = c.Services[1].Group
				}
			}
		}},
		{"username not the group", "k8s: environment", "KAFKA_SASL_USERNAME", func(c *Code, f *Files) {
			setContainerEnv(f, firstService(c).Group, "KAFKA_SASL_USERNAME", "admin")
		}},
		{"CA file not mounted", "k8s: environment", "KAFKA_TLS_CA_FILE", func(c *Code, f *Files) {
			f.K8s.ConfigMaps[0].Data["KAFKA_TLS_CA_FILE"] = "/etc/ssl/ca.crt"
		}},
		{"mechanism not the user's", "k8s: environment", "authenticates with", func(c *Code, f *Files) {
			f.K8s.ConfigMaps[0].Data["KAFKA_SASL_MECHANISM"] = "PLAIN"
		}},
		{"Service to a port the pod lacks", "k8s: services", "targetPort", func(c *Code, f *Files) {
			for _, s := range f.K8s.Services {
				if s.Name == firstService(c).Group {
					s.Spec.Ports[0].TargetPort = intstr.FromString("metrics")
				}
			}
		}},
		{"dead-letter topic missing", "k8s: Strimzi topics", "no KafkaTopic " + code.Services[0].Group + ".dlq", func(c *Code, f *Files) {
			var keep []*KafkaTopic
			for _, t := range f.K8s.Topics {
				if t.Name() != firstService(c).Group+".dlq" {
					keep = append(keep, t)
				}
			}
			f.K8s.Topics = keep
		}},
		{"consumer names a new own topic", "k8s: Strimzi topics", "no KafkaTopic x.retry.4-1h", func(c *Code, f *Files) {
			firstService(c).Own = append(firstService(c).Own, "x.retry.4-1h")
		}},
		{"topic no service uses", "k8s: Strimzi topics", "no service uses", func(c *Code, f *Files) {
			t := *topicByName(f, "orders")
			t.Spec.TopicName, t.ObjectMeta.Name = "orderz", "orderz"
			f.K8s.Topics = append(f.K8s.Topics, &t)
		}},
		{"retry topic too small for dead letters", "k8s: Strimzi topics", "max.message.bytes", func(c *Code, f *Files) {
			topicByName(f, firstService(c).Own[len(firstService(c).Own)-1]).Spec.Config["max.message.bytes"] = float64(1048588)
		}},
		{"consumer provisions more", "k8s: Strimzi topics", "max.message.bytes", func(c *Code, f *Files) { c.OwnTopicMaxBytes = 17 << 20 }},
		{"dead-letter topic with fewer partitions", "k8s: Strimzi topics", "fewer than its group's source topics", func(c *Code, f *Files) {
			topicByName(f, firstService(c).Group+".dlq").Spec.Partitions = 1
		}},
		{"dead letters kept a day", "k8s: Strimzi topics", "retention", func(c *Code, f *Files) {
			topicByName(f, firstService(c).Group+".dlq").Spec.Config["retention.ms"] = float64(86400000)
		}},
		{"topic of another cluster", "k8s: Strimzi topics", "strimzi.io/cluster", func(c *Code, f *Files) {
			topicByName(f, "payments").Labels["strimzi.io/cluster"] = "other"
		}},
		{"user may not write its output", "k8s: Strimzi users", "may not Write topic", func(c *Code, f *Files) {
			s := serviceNamed(c, "payments")
			u := f.K8s.user(s.Group)
			for i := range u.Spec.Authorization.ACLs {
				a := &u.Spec.Authorization.ACLs[i]
				if slices.Contains(s.Outputs, a.Resource.Name) {
					a.Operations = []string{"Describe"}
				}
			}
		}},
		{"user may not read its group", "k8s: Strimzi users", "may not Read group", func(c *Code, f *Files) {
			u := f.K8s.user(firstService(c).Group)
			for i := range u.Spec.Authorization.ACLs {
				if u.Spec.Authorization.ACLs[i].Resource.Type == "group" {
					u.Spec.Authorization.ACLs[i].Resource.Name = "other"
				}
			}
		}},
		{"user may create topics", "k8s: Strimzi users", "Create", func(c *Code, f *Files) {
			u := f.K8s.user(firstService(c).Group)
			u.Spec.Authorization.ACLs[0].Operations = append(u.Spec.Authorization.ACLs[0].Operations, "Create")
		}},
		{"user may write what it only reads", "k8s: Strimzi users", "which it only reads", func(c *Code, f *Files) {
			s := serviceNamed(c, "payments")
			u := f.K8s.user(s.Group)
			for i := range u.Spec.Authorization.ACLs {
				a := &u.Spec.Authorization.ACLs[i]
				if slices.Contains(s.Sources, a.Resource.Name) {
					a.Operations = append(a.Operations, "Write")
				}
			}
		}},
		{"user reaches another service's topics", "k8s: Strimzi users", "does not use", func(c *Code, f *Files) {
			u := f.K8s.user(firstService(c).Group)
			var a ACL
			a.Resource.Type, a.Resource.Name, a.Resource.PatternType = "topic", c.Services[1].Group+".dlq", "literal"
			a.Operations = []string{"Read"}
			u.Spec.Authorization.ACLs = append(u.Spec.Authorization.ACLs, a)
		}},
		{"single-instance service scaled", "k8s: KEDA", "single-instance", func(c *Code, f *Files) {
			d := f.K8s.deployment("order-service")
			so := *f.K8s.ScaledObjects[0]
			so.Name = "order-service"
			so.Spec.ScaleTargetRef.Name = d.Name
			f.K8s.ScaledObjects = append(f.K8s.ScaledObjects, &so)
		}},
		{"single-instance service rolled", "k8s: KEDA", "Recreate", func(c *Code, f *Files) {
			f.K8s.deployment("order-service").Spec.Strategy.Type = "RollingUpdate"
		}},
		{"persistent lag counted", "k8s: KEDA", "excludePersistentLag", func(c *Code, f *Files) {
			f.K8s.ScaledObjects[0].Spec.Triggers[0].Metadata["excludePersistentLag"] = "false"
		}},
		{"lag counted from the end", "k8s: KEDA", "offsetResetPolicy", func(c *Code, f *Files) {
			f.K8s.ScaledObjects[0].Spec.Triggers[0].Metadata["offsetResetPolicy"] = "latest"
		}},
		{"lag of another group", "k8s: KEDA", "consumerGroup", func(c *Code, f *Files) {
			f.K8s.ScaledObjects[0].Spec.Triggers[0].Metadata["consumerGroup"] = "other-service"
		}},
		{"a source topic without trigger", "k8s: KEDA", "triggers on", func(c *Code, f *Files) {
			for _, so := range f.K8s.ScaledObjects {
				if len(so.Spec.Triggers) > 1 {
					so.Spec.Triggers = so.Spec.Triggers[1:]
				}
			}
		}},
		{"more replicas than partitions", "k8s: KEDA", "partitions", func(c *Code, f *Files) {
			n := int32(64)
			f.K8s.ScaledObjects[0].Spec.MaxReplicaCount = &n
		}},
		{"scaled to zero", "k8s: KEDA", "minReplicaCount 0", func(c *Code, f *Files) {
			n := int32(0)
			f.K8s.ScaledObjects[0].Spec.MinReplicaCount = &n
		}},
		{"KEDA on other brokers", "k8s: KEDA", "bootstrapServers", func(c *Code, f *Files) {
			f.K8s.ScaledObjects[0].Spec.Triggers[0].Metadata["bootstrapServers"] = "kafka:9092"
		}},
		{"KEDA with another SASL mechanism", "k8s: KEDA", "sasl", func(c *Code, f *Files) {
			f.K8s.ScaledObjects[0].Spec.Triggers[0].Metadata["sasl"] = "plaintext"
		}},
		{"KEDA password of another user", "k8s: KEDA", "password from Secret", func(c *Code, f *Files) {
			f.K8s.TriggerAuths[0].Spec.SecretTargetRef[0].Name = "admin"
		}},
		{"KEDA username from a missing variable", "k8s: KEDA", "is not set", func(c *Code, f *Files) {
			f.K8s.TriggerAuths[0].Spec.Env[0].Name = "KAFKA_USER"
		}},
		{"alert on a metric not exported", "k8s: alert rules", "is not served", func(c *Code, f *Files) {
			replaceExpr(f, "ChoreoDeadLettersGrowing", "choreo_dlq_dead_letters_total", "choreo_dlq_dead_letter_total")
		}},
		{"metric renamed in the code", "k8s: alert rules", "choreo_consumer_stuck_writes", func(c *Code, f *Files) {
			delete(c.Metrics, "choreo_consumer_stuck_writes")
		}},
		{"alert on an outcome that does not exist", "k8s: alert rules", "not an outcome", func(c *Code, f *Files) {
			replaceExpr(f, "ChoreoHandlerErrorRateHigh", "dead_lettered", "dead_letter")
		}},
		{"alert grouping by a missing label", "k8s: alert rules", "kind", func(c *Code, f *Files) {
			replaceExpr(f, "ChoreoDeadLettersGrowing", "error_kind)", "kind)")
		}},
		{"alert that does not parse", "k8s: alert rules", "parse", func(c *Code, f *Files) {
			replaceExpr(f, "ChoreoConsumerLagHigh", "> 1000", "> > 1000")
		}},
		{"readiness alert missing a deployment", "k8s: alert rules", "deployment matcher", func(c *Code, f *Files) {
			replaceExpr(f, "ChoreoConsumerNotReady", "order-service|", "")
		}},
		{"no lag alert", "k8s: alert rules", "lag high", func(c *Code, f *Files) {
			replaceExpr(f, "ChoreoConsumerLagHigh", "choreo_consumer_lag", "choreo_consumer_in_flight")
		}},
		{"bad alert template", "k8s: alert rules", "summary", func(c *Code, f *Files) {
			for _, pr := range f.K8s.PrometheusRules {
				pr.Spec.Groups[0].Rules[0].Annotations["summary"] = "{{ $labels.group "
			}
		}},
		{"pod monitor on a port the pods lack", "k8s: pod monitor", "no PodMonitor scrapes", func(c *Code, f *Files) {
			f.K8s.PodMonitors[0].Spec.PodMetricsEndpoints[0].Port = str("metrics")
		}},
		{"pod monitor on another path", "k8s: pod monitor", "serve /metrics", func(c *Code, f *Files) {
			f.K8s.PodMonitors[0].Spec.PodMetricsEndpoints[0].Path = "/prometheus"
		}},
		// Grafana
		{"dashboard query on a missing metric", "grafana", "is not served", func(c *Code, f *Files) {
			d := dashboard(f)
			for i := range d.Panels {
				for j := range d.Panels[i].Targets {
					d.Panels[i].Targets[j].Expr = strings.ReplaceAll(d.Panels[i].Targets[j].Expr, "choreo_consumer_in_flight", "choreo_consumer_inflight")
				}
			}
		}},
		{"dashboard variable undefined", "grafana", "does not define", func(c *Code, f *Files) {
			d := dashboard(f)
			d.Panels[1].Targets[0].Expr = strings.ReplaceAll(d.Panels[1].Targets[0].Expr, "$group", "$grp")
		}},
		{"dashboard misses a metric", "grafana", "no panel shows choreo_extra_total", func(c *Code, f *Files) {
			c.Metrics["choreo_extra_total"] = &Family{Name: "choreo_extra_total", Type: "counter"}
		}},
		{"dashboard panel ids collide", "grafana", "used twice", func(c *Code, f *Files) {
			d := dashboard(f)
			d.Panels[2].ID = d.Panels[1].ID
		}},
		// code
		{"example changes its retry topics", "code: examples use", "RetryTopics", func(c *Code, f *Files) {
			firstService(c).ConsumerOptions = append(firstService(c).ConsumerOptions, "RetryTopics")
		}},
	}
	// run returns the problems of the checks whose names start with prefix.
	run := func(prefix string, c *Code, f *Files) (names, got []string) {
		for _, ch := range Checks {
			if strings.HasPrefix(ch.Name, prefix) {
				names = append(names, ch.Name)
				for _, e := range ch.Run(c, f) {
					got = append(got, e.Error())
				}
			}
		}
		return names, got
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := cloneCode(code)
			f, err := LoadFiles(root)
			if err != nil {
				t.Fatal(err)
			}
			// The problem must be new: the unbroken files do not have it.
			names, before := run(tc.check, c, f)
			if len(names) == 0 {
				t.Fatalf("no check named %q…", tc.check)
			}
			for _, e := range before {
				if strings.Contains(e, tc.want) {
					t.Fatalf("before breaking anything, %q already reports %q", tc.check, e)
				}
			}
			tc.breakF(c, f)
			_, got := run(tc.check, c, f)
			matched := false
			for _, e := range got {
				if strings.Contains(e, tc.want) {
					matched = true
				}
			}
			if !matched {
				t.Errorf("check %q reported %q; want a problem mentioning %q", tc.check, got, tc.want)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// ---- loaders reject what they should ----

// copyTree copies the files the loaders read into a temporary root.
func copyTree(t *testing.T, root string) string {
	t.Helper()
	dst := t.TempDir()
	for _, rel := range []string{"docker-compose.yml", "go.mod", "deploy/Dockerfile", "deploy/Dockerfile.dockerignore", "deploy/prometheus/prometheus.yml"} {
		copyFile(t, filepath.Join(root, rel), filepath.Join(dst, rel))
	}
	entries, err := os.ReadDir(filepath.Join(root, "deploy", "k8s"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		copyFile(t, filepath.Join(root, "deploy", "k8s", e.Name()), filepath.Join(dst, "deploy", "k8s", e.Name()))
	}
	return dst
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func editFile(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s does not contain %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLoadersAreStrict: a misspelled or unknown field, or a wrong type, in
// any file fails the load.
func TestLoadersAreStrict(t *testing.T) {
	_, root := loadCode(t)
	if _, err := LoadFiles(copyTree(t, root)); err != nil {
		t.Fatalf("the copied files do not load: %v", err)
	}
	cases := []struct{ name, file, old, new, want string }{
		{"Deployment field misspelled", "deploy/k8s/payments.yaml", "terminationGracePeriodSeconds:", "terminationGracePeriodSecond:", "unknown field"},
		{"probe field misspelled", "deploy/k8s/orders.yaml", "readinessProbe:", "readynessProbe:", "unknown field"},
		{"Service port of a wrong type", "deploy/k8s/orders.yaml", "      port: 8080", "      port: http-port", "port"},
		{"resource quantity invalid", "deploy/k8s/shipping.yaml", "memory: 512Mi", "memory: 512 megabytes", "quantities must match"},
		{"KafkaTopic field unknown", "deploy/k8s/topics.yaml", "  partitions: 6", "  partition: 6", "unknown field"},
		{"KafkaUser ACL field unknown", "deploy/k8s/users.yaml", "operations: [Describe, Read]", "operation: [Describe, Read]", "unknown field"},
		{"ScaledObject field unknown", "deploy/k8s/scaledobjects.yaml", "maxReplicaCount:", "maxReplicas:", "unknown field"},
		{"PrometheusRule field unknown", "deploy/k8s/monitoring.yaml", "          labels:\n            severity: warning", "          label:\n            severity: warning", "unknown field"},
		{"unknown kind", "deploy/k8s/config.yaml", "kind: ConfigMap", "kind: ConfigMapp", "no check knows this kind"},
		{"kustomization field unknown", "deploy/k8s/kustomization.yaml", "resources:", "resource:", "unknown field"},
		{"compose key unknown", "docker-compose.yml", "    stop_grace_period: 45s\n    restart: unless-stopped\n\n  payments:", "    stop_grace_periode: 45s\n    restart: unless-stopped\n\n  payments:", "stop_grace_periode"},
		{"prometheus key unknown", "deploy/prometheus/prometheus.yml", "metrics_path:", "metric_path:", "metric_path"},
		{"dashboard JSON broken", "deploy/k8s/choreo-dashboard.json", `"panels": [`, `"panels": [[`, "choreo-dashboard.json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyTree(t, root)
			editFile(t, filepath.Join(dir, tc.file), tc.old, tc.new)
			_, err := LoadFiles(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadFiles = %v; want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestScanExamples reads a small examples tree of the shape the services
// have (a main package and a package of its own under examples/, topic
// constants in examples/events) and refuses names it cannot read.
func TestScanExamples(t *testing.T) {
	root := t.TempDir()
	write := func(rel, text string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module github.com/choreokit/choreo\n\ngo 1.26\n")
	write("examples/events/topics.go", `package events
const (
	TopicOrders = "orders"
	TopicPayments = "pay" + "ments"
)
`)
	write("examples/pay/main.go", `package main
import "github.com/choreokit/choreo/examples/pay/svc"
func main() { addr := envOr("HTTP_ADDR", ":8082"); _ = addr; svc.Run() }
`)
	write("examples/pay/svc/svc.go", `package svc
import (
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/examples/events"
)
const Group = "payment-service"
func Run() {
	c, _ := consumer.New(conn, reg, Group, consumer.Concurrency(4))
	consumer.Handle(c, events.TopicOrders, handle)
	p.Publish(ctx, events.TopicPayments, "k", ev)
}
`)
	services, err := scanExamples(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(services) != 1 {
		t.Fatalf("found %d services; want 1", len(services))
	}
	s := services[0]
	if s.Dir != "pay" || s.Group != "payment-service" || !slices.Equal(s.Sources, []string{"orders"}) ||
		!slices.Equal(s.Outputs, []string{"payments"}) || s.Port != 8082 || !slices.Equal(s.ConsumerOptions, []string{"Concurrency"}) {
		t.Errorf("scanned %+v", s)
	}

	// A topic that is not a constant cannot be checked: an error.
	write("examples/pay/svc/more.go", `package svc
import "github.com/choreokit/choreo/consumer"
func more(topic string) { consumer.Handle(c, topic, handle) }
`)
	if _, err := scanExamples(root); err == nil || !strings.Contains(err.Error(), "not constant strings") {
		t.Errorf("scan with a variable topic = %v; want an error", err)
	}
}
