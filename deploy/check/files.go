package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	promconfig "github.com/prometheus/prometheus/config"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Files are the deployment files, loaded.
type Files struct {
	Root string

	Compose      *types.Project
	Dockerfile   *Dockerfile
	DockerIgnore []string // patterns of deploy/Dockerfile.dockerignore
	Prometheus   *promconfig.Config
	K8s          *K8s
	Dashboards   map[string]*Dashboard // by path relative to the root
}

// K8s holds every object of deploy/k8s, decoded strictly.
type K8s struct {
	Deployments     []*appsv1.Deployment
	Services        []*corev1.Service
	ConfigMaps      []*corev1.ConfigMap
	PodMonitors     []*monitoringv1.PodMonitor
	PrometheusRules []*monitoringv1.PrometheusRule
	Topics          []*KafkaTopic
	Users           []*KafkaUser
	ScaledObjects   []*ScaledObject
	TriggerAuths    []*TriggerAuthentication
	Kustomization   *Kustomization
	Files           []string // YAML and JSON files in deploy/k8s, relative to it
}

// ---- Strimzi (kafka.strimzi.io/v1beta2) ----

// KafkaTopic is a Strimzi KafkaTopic, the fields choreo's files use.
type KafkaTopic struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		TopicName  string         `json:"topicName,omitempty"`
		Partitions int32          `json:"partitions"`
		Replicas   int32          `json:"replicas"`
		Config     map[string]any `json:"config,omitempty"`
	} `json:"spec"`
}

// Name returns the Kafka topic's name: spec.topicName, or metadata.name.
func (t *KafkaTopic) Name() string {
	if t.Spec.TopicName != "" {
		return t.Spec.TopicName
	}
	return t.ObjectMeta.Name
}

// KafkaUser is a Strimzi KafkaUser, the fields choreo's files use.
type KafkaUser struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Authentication *struct {
			Type string `json:"type"`
		} `json:"authentication,omitempty"`
		Authorization *struct {
			Type string `json:"type"`
			ACLs []ACL  `json:"acls"`
		} `json:"authorization,omitempty"`
	} `json:"spec"`
}

// ACL is one rule of a KafkaUser's simple authorization.
type ACL struct {
	Resource struct {
		Type        string `json:"type"`
		Name        string `json:"name,omitempty"`
		PatternType string `json:"patternType,omitempty"`
	} `json:"resource"`
	Operations []string `json:"operations"`
	Host       string   `json:"host,omitempty"`
	Type       string   `json:"type,omitempty"` // allow (default) or deny
}

// ---- KEDA (keda.sh/v1alpha1) ----

// ScaledObject is a KEDA ScaledObject, the fields choreo's files use.
type ScaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount *int32 `json:"maxReplicaCount,omitempty"`
		PollingInterval *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod  *int32 `json:"cooldownPeriod,omitempty"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
		} `json:"advanced,omitempty"`
		Triggers []Trigger `json:"triggers"`
	} `json:"spec"`
}

// Trigger is one KEDA scaler of a ScaledObject.
type Trigger struct {
	Type              string            `json:"type"`
	Name              string            `json:"name,omitempty"`
	Metadata          map[string]string `json:"metadata"`
	AuthenticationRef *struct {
		Name string `json:"name"`
		Kind string `json:"kind,omitempty"`
	} `json:"authenticationRef,omitempty"`
}

// TriggerAuthentication is a KEDA TriggerAuthentication.
type TriggerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Env []struct {
			Parameter     string `json:"parameter"`
			Name          string `json:"name"`
			ContainerName string `json:"containerName,omitempty"`
		} `json:"env,omitempty"`
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef,omitempty"`
	} `json:"spec"`
}

// Kustomization is deploy/k8s/kustomization.yaml.
type Kustomization struct {
	APIVersion         string   `json:"apiVersion"`
	Kind               string   `json:"kind"`
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name    string   `json:"name"`
		Files   []string `json:"files"`
		Options *struct {
			DisableNameSuffixHash bool              `json:"disableNameSuffixHash,omitempty"`
			Labels                map[string]string `json:"labels,omitempty"`
		} `json:"options,omitempty"`
	} `json:"configMapGenerator,omitempty"`
}

// ---- Grafana ----

// Dashboard is a Grafana dashboard, the fields the checks read; the rest of
// the JSON is kept in Raw.
type Dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []Panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Raw map[string]any `json:"-"`
}

// Panel is a Grafana panel (rows included).
type Panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource *PanelDS        `json:"datasource,omitempty"`
	GridPos    *map[string]int `json:"gridPos,omitempty"`
	Targets    []struct {
		RefID      string   `json:"refId"`
		Expr       string   `json:"expr"`
		Datasource *PanelDS `json:"datasource,omitempty"`
	} `json:"targets,omitempty"`
	Panels []Panel `json:"panels,omitempty"`
}

// PanelDS is a panel's or target's data source reference.
type PanelDS struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// ---- loading ----

// LoadFiles loads every deployment file under root. It returns what it
// could load together with the problems found on the way (a file that does
// not decode strictly is one).
func LoadFiles(root string) (*Files, error) {
	f := &Files{Root: root, Dashboards: map[string]*Dashboard{}}
	var errs []error
	var err error
	if f.Compose, err = LoadCompose(root); err != nil {
		errs = append(errs, err)
	}
	if f.Dockerfile, err = ParseDockerfile(filepath.Join(root, "deploy", "Dockerfile")); err != nil {
		errs = append(errs, err)
	}
	if f.DockerIgnore, err = readIgnore(filepath.Join(root, "deploy", "Dockerfile.dockerignore")); err != nil {
		errs = append(errs, err)
	}
	promPath := filepath.Join(root, "deploy", "prometheus", "prometheus.yml")
	if f.Prometheus, err = promconfig.LoadFile(promPath, false, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		errs = append(errs, fmt.Errorf("deploy/prometheus/prometheus.yml: %w", err))
	}
	if f.K8s, err = LoadK8s(filepath.Join(root, "deploy", "k8s")); err != nil {
		errs = append(errs, err)
	}
	// Every other YAML and JSON file under deploy/ must at least parse, and
	// every JSON file that looks like a Grafana dashboard is one.
	err = filepath.WalkDir(filepath.Join(root, "deploy"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		rel := relPath(root, p)
		switch filepath.Ext(p) {
		case ".json":
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			var raw map[string]any
			if err := json.Unmarshal(b, &raw); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", rel, err))
				return nil
			}
			if _, ok := raw["panels"]; ok {
				dash, err := decodeDashboard(b)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", rel, err))
					return nil
				}
				f.Dashboards[rel] = dash
			}
		case ".yaml", ".yml":
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for i, doc := range splitYAML(b) {
				var v any
				if err := yaml.Unmarshal(doc, &v); err != nil {
					errs = append(errs, fmt.Errorf("%s (document %d): %w", rel, i+1, err))
				}
			}
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	return f, errors.Join(errs...)
}

// LoadCompose loads docker-compose.yml with compose-go, which validates it
// against the Compose specification's schema (unknown keys fail), resolves
// anchors, merges and paths, and interpolates variables.
func LoadCompose(root string) (*types.Project, error) {
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithName("choreo"), cli.WithResolvedPaths(false),
		cli.WithProfiles([]string{"*"})) // every service, whatever its profile
	if err != nil {
		return nil, err
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		return nil, fmt.Errorf("docker-compose.yml: %w", err)
	}
	return p, nil
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitYAML splits a multi-document YAML file, dropping documents that hold
// only comments.
func splitYAML(b []byte) [][]byte {
	var out [][]byte
	for _, doc := range docSep.Split(string(b), -1) {
		empty := true
		for _, line := range strings.Split(doc, "\n") {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
				empty = false
				break
			}
		}
		if !empty {
			out = append(out, []byte(doc))
		}
	}
	return out
}

// LoadK8s decodes every YAML document under dir strictly, by apiVersion and
// kind, into its type. An unknown kind is an error: every object has a
// check.
func LoadK8s(dir string) (*K8s, error) {
	k := &K8s{}
	var errs []error
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		name := e.Name()
		ext := filepath.Ext(name)
		if ext != ".yaml" && ext != ".yml" && ext != ".json" {
			continue
		}
		k.Files = append(k.Files, name)
		if ext == ".json" {
			continue // dashboards: LoadFiles
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if name == "kustomization.yaml" {
			k.Kustomization = &Kustomization{}
			if err := yaml.UnmarshalStrict(b, k.Kustomization); err != nil {
				errs = append(errs, fmt.Errorf("deploy/k8s/%s: %w", name, err))
			}
			continue
		}
		for i, doc := range splitYAML(b) {
			if err := k.add(doc); err != nil {
				errs = append(errs, fmt.Errorf("deploy/k8s/%s (document %d): %w", name, i+1, err))
			}
		}
	}
	sort.Strings(k.Files)
	return k, errors.Join(errs...)
}

func (k *K8s) add(doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	strict := func(into any) error { return yaml.UnmarshalStrict(doc, into) }
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		o := &appsv1.Deployment{}
		k.Deployments = append(k.Deployments, o)
		return strict(o)
	case "v1 Service":
		o := &corev1.Service{}
		k.Services = append(k.Services, o)
		return strict(o)
	case "v1 ConfigMap":
		o := &corev1.ConfigMap{}
		k.ConfigMaps = append(k.ConfigMaps, o)
		return strict(o)
	case "monitoring.coreos.com/v1 PodMonitor":
		o := &monitoringv1.PodMonitor{}
		k.PodMonitors = append(k.PodMonitors, o)
		return strict(o)
	case "monitoring.coreos.com/v1 PrometheusRule":
		o := &monitoringv1.PrometheusRule{}
		k.PrometheusRules = append(k.PrometheusRules, o)
		return strict(o)
	case "kafka.strimzi.io/v1beta2 KafkaTopic":
		o := &KafkaTopic{}
		k.Topics = append(k.Topics, o)
		return strict(o)
	case "kafka.strimzi.io/v1beta2 KafkaUser":
		o := &KafkaUser{}
		k.Users = append(k.Users, o)
		return strict(o)
	case "keda.sh/v1alpha1 ScaledObject":
		o := &ScaledObject{}
		k.ScaledObjects = append(k.ScaledObjects, o)
		return strict(o)
	case "keda.sh/v1alpha1 TriggerAuthentication":
		o := &TriggerAuthentication{}
		k.TriggerAuths = append(k.TriggerAuths, o)
		return strict(o)
	}
	return fmt.Errorf("apiVersion %q kind %q: no check knows this kind", tm.APIVersion, tm.Kind)
}

func decodeDashboard(b []byte) (*Dashboard, error) {
	d := &Dashboard{}
	if err := json.Unmarshal(b, &d.Raw); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, d); err != nil {
		return nil, err
	}
	return d, nil
}

// ---- Dockerfile ----

// Dockerfile is a parsed Dockerfile: its instructions, continuation lines
// joined, comments dropped.
type Dockerfile struct {
	Instructions []Instruction
}

// Instruction is one Dockerfile instruction.
type Instruction struct {
	Cmd  string // upper case: FROM, RUN, COPY …
	Args string
	Line int
}

// Stages returns the FROM instructions' images and stage names.
func (d *Dockerfile) Stages() (images, names []string) {
	for _, in := range d.Instructions {
		if in.Cmd != "FROM" {
			continue
		}
		f := strings.Fields(in.Args)
		var args []string
		for _, a := range f {
			if !strings.HasPrefix(a, "--") {
				args = append(args, a)
			}
		}
		if len(args) > 0 {
			images = append(images, args[0])
		}
		if len(args) == 3 && strings.EqualFold(args[1], "AS") {
			names = append(names, args[2])
		} else {
			names = append(names, "")
		}
	}
	return images, names
}

// ParseDockerfile reads a Dockerfile.
func ParseDockerfile(path string) (*Dockerfile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	d := &Dockerfile{}
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(b), "\n") {
		t := strings.TrimSpace(line)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(t, "#") {
			continue // a comment inside a continued instruction
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if s, ok := strings.CutSuffix(t, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(t)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		d.Instructions = append(d.Instructions, Instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args), Line: start})
		cur.Reset()
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("%s: ends in a continued line", path)
	}
	return d, nil
}

func readIgnore(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		t := strings.TrimSpace(line)
		if t != "" && !strings.HasPrefix(t, "#") {
			out = append(out, t)
		}
	}
	return out, nil
}

// ignored reports whether a path relative to the build context is left out
// of it by the patterns (the subset of .dockerignore syntax: a leading **/
// matches any depth, a pattern matches a path or any of its parents; no !
// exceptions).
func ignored(patterns []string, rel string) bool {
	rel = filepath.ToSlash(rel)
	parts := strings.Split(rel, "/")
	for _, p := range patterns {
		p = strings.TrimPrefix(filepath.ToSlash(p), "/")
		anyDepth := false
		if q, ok := strings.CutPrefix(p, "**/"); ok {
			p, anyDepth = q, true
		}
		for i := range parts {
			for j := i + 1; j <= len(parts); j++ {
				if i > 0 && !anyDepth {
					break
				}
				if ok, _ := filepath.Match(p, strings.Join(parts[i:j], "/")); ok {
					return true
				}
			}
		}
	}
	return false
}
