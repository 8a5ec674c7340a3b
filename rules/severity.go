package rules

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Severity orders findings from info to critical.
type Severity int

// Severities, in increasing order.
const (
	Info Severity = iota + 1
	Low
	Medium
	High
	Critical
)

var severityNames = []string{"", "info", "low", "medium", "high", "critical"}

func (s Severity) String() string {
	if s < Info || s > Critical {
		return "unknown"
	}
	return severityNames[s]
}

// ParseSeverity reads a severity name (case-insensitive).
func ParseSeverity(s string) (Severity, error) {
	for i, n := range severityNames {
		if i > 0 && strings.EqualFold(s, n) {
			return Severity(i), nil
		}
	}
	return 0, fmt.Errorf("unknown severity %q (want info, low, medium, high or critical)", s)
}

// UnmarshalYAML reads a severity name.
func (s *Severity) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSeverity(n.Value)
	if err != nil {
		return lineError(n, err.Error())
	}
	*s = v
	return nil
}

// MarshalYAML writes the severity name.
func (s Severity) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalText writes the severity name.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a severity name, so that stored state reads back.
func (s *Severity) UnmarshalText(b []byte) error {
	v, err := ParseSeverity(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// lineError reports a bad value the way the YAML decoder reports its own
// type errors, so that decoding goes on and the loader can name the key.
func lineError(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}
