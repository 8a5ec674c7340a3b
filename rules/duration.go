package rules

import (
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as "30s", "20m" or "24h" in YAML.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string; "d" is accepted for days.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v := strings.TrimSpace(n.Value)
	mult := time.Duration(1)
	if strings.HasSuffix(v, "d") {
		v, mult = strings.TrimSuffix(v, "d")+"h", 24
	}
	t, err := time.ParseDuration(v)
	if err != nil {
		return lineError(n, fmt.Sprintf("invalid duration %q (want e.g. 30s, 20m, 24h)", n.Value))
	}
	*d = Duration(t * mult)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
