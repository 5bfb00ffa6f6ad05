package check

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// TargetLabels are the labels Prometheus itself (and the Prometheus
// Operator's PodMonitor relabelling) puts on every scraped series, besides
// those the service exports.
var TargetLabels = []string{"job", "instance", "namespace", "pod", "container", "endpoint", "service"}

// ExternalMetric is a metric an alert may use that choreo does not export,
// with the labels it has.
type ExternalMetric struct {
	Name   string
	Labels []string
	Source string
}

// ExternalMetrics are the metrics from elsewhere the rules may use: the
// readiness of a Deployment's pods comes from kube-state-metrics, since a
// pod whose /readyz fails serves no metric that says so.
var ExternalMetrics = []ExternalMetric{
	{Name: "kube_deployment_status_replicas_unavailable", Labels: []string{"deployment"}, Source: "kube-state-metrics"},
	{Name: "up", Source: "Prometheus"},
}

var promParser = parser.NewParser(parser.Options{})

// Selector is a metric a query reads, with its matchers.
type Selector struct {
	Metric   string
	Matchers []*labels.Matcher
}

// ExprProblems parses a PromQL expression and checks it against the metrics
// tracing serves: every metric it reads is served (or is an
// ExternalMetric), every label it matches on or groups by exists on the
// metrics beneath, and every value it matches the outcome label against is
// an outcome the metric has. It also returns the selectors it found.
func ExprProblems(expr string, m Metrics) ([]Selector, []error) {
	e, err := promParser.ParseExpr(expr)
	if err != nil {
		return nil, []error{fmt.Errorf("does not parse: %w", err)}
	}
	var errs []error
	var sels []Selector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			name := n.Name
			if name == "" {
				for _, lm := range n.LabelMatchers {
					if lm.Name == "__name__" && lm.Type == labels.MatchEqual {
						name = lm.Value
					}
				}
			}
			sels = append(sels, Selector{Metric: name, Matchers: n.LabelMatchers})
			have, err := labelsOf(name, m)
			if err != nil {
				errs = append(errs, err)
				return nil
			}
			for _, lm := range n.LabelMatchers {
				if lm.Name == "__name__" {
					continue
				}
				values, ok := have[lm.Name]
				if !ok {
					errs = append(errs, fmt.Errorf("%s has no label %q (it has %s)", name, lm.Name, strings.Join(sortedKeys(have), ", ")))
					continue
				}
				if lm.Name == "outcome" && values != nil {
					for _, v := range matcherValues(lm) {
						if !values[v] {
							errs = append(errs, fmt.Errorf("%s{%s}: %q is not an outcome it has (%s)", name, lm, v, strings.Join(sortedKeys(values), ", ")))
						}
					}
				}
			}
		case *parser.AggregateExpr:
			have := map[string]bool{}
			parser.Inspect(n.Expr, func(c parser.Node, _ []parser.Node) error {
				switch c := c.(type) {
				case *parser.VectorSelector:
					if l, err := labelsOf(c.Name, m); err == nil {
						for k := range l {
							have[k] = true
						}
					}
				case *parser.AggregateExpr:
					// Labels an inner aggregation dropped are gone.
				}
				return nil
			})
			for _, g := range n.Grouping {
				if !have[g] {
					errs = append(errs, fmt.Errorf("%s by (%s): no metric beneath has the label %q", n.Op, strings.Join(n.Grouping, ", "), g))
				}
			}
		}
		return nil
	})
	return sels, errs
}

// labelsOf returns the labels a series name has: a served family's (with
// le for a histogram's buckets) or an external metric's, plus the target
// labels. Label values are known (non-nil) for served families only.
func labelsOf(name string, m Metrics) (map[string]map[string]bool, error) {
	out := map[string]map[string]bool{}
	for _, l := range TargetLabels {
		out[l] = nil
	}
	if f, extra := m.Lookup(name); f != nil {
		for l, v := range f.Labels {
			out[l] = v
		}
		for _, l := range extra {
			out[l] = nil
		}
		return out, nil
	}
	for _, x := range ExternalMetrics {
		if x.Name == name {
			for _, l := range x.Labels {
				out[l] = nil
			}
			return out, nil
		}
	}
	served := make([]string, 0, len(m))
	for n := range m {
		served = append(served, n)
	}
	sort.Strings(served)
	return nil, fmt.Errorf("metric %q is not served by tracing.PrometheusHandler (it serves %s) nor a known external metric", name, strings.Join(served, ", "))
}

var plainAlternation = regexp.MustCompile(`^[A-Za-z0-9_-]+(\|[A-Za-z0-9_-]+)*$`)

// matcherValues returns the values a matcher names: its value for = and !=,
// the alternatives of a plain a|b|c regular expression; nothing for other
// regular expressions.
func matcherValues(lm *labels.Matcher) []string {
	switch lm.Type {
	case labels.MatchEqual, labels.MatchNotEqual:
		return []string{lm.Value}
	default:
		if plainAlternation.MatchString(lm.Value) {
			return strings.Split(lm.Value, "|")
		}
	}
	return nil
}

// grafanaVars are values for Grafana's built-in variables, so that a panel
// query parses as PromQL.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h", "${__rate_interval}", "5m", "${__interval}", "1m", "${__range}", "1h")

var dashVar = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

// grafanaExpr substitutes Grafana's variables in a panel query: built-ins
// by durations, the dashboard's own variables by ".*" (they are used in
// regular-expression matchers). It reports variables the dashboard does not
// define.
func grafanaExpr(expr string, defined map[string]bool) (string, []string) {
	expr = grafanaVars.Replace(expr)
	var undefined []string
	expr = dashVar.ReplaceAllStringFunc(expr, func(v string) string {
		name := dashVar.FindStringSubmatch(v)[1]
		if !defined[name] {
			undefined = append(undefined, name)
		}
		return ".*"
	})
	return expr, undefined
}
