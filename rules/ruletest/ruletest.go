// Package ruletest reads rule test cases written as data: CloudTrail
// records, an optional policy, and every finding they must raise.
package ruletest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/encwatch/encwatch/rules"
)

// Case is one test case file.
type Case struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Policy is the policy section to judge with; keys it omits keep their
	// defaults. Empty means the default policy.
	Policy yaml.Node `yaml:"policy"`
	// Events are record files in any envelope, relative to the case file.
	Events []string `yaml:"events"`
	// Expect lists every finding the events must raise, and no more.
	Expect []Expectation `yaml:"expect"`

	// Path is the case file's path.
	Path string `yaml:"-"`
}

// Expectation is one finding a case must raise.
type Expectation struct {
	Event    string `yaml:"event"`
	Rule     string `yaml:"rule"`
	Severity string `yaml:"severity"`
}

func (e Expectation) String() string { return e.Event + " " + e.Rule + " " + e.Severity }

// Load reads a case file.
func Load(path string) (*Case, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Case
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.Path = path
	if len(c.Events) == 0 {
		return nil, fmt.Errorf("%s: no events", path)
	}
	for _, e := range c.Expect {
		if e.Event == "" || e.Rule == "" || e.Severity == "" {
			return nil, fmt.Errorf("%s: an expectation needs event, rule and severity: %v", path, e)
		}
	}
	return &c, nil
}

// EventPaths returns the case's event files resolved against its folder.
func (c *Case) EventPaths() []string {
	out := make([]string, len(c.Events))
	for i, e := range c.Events {
		if filepath.IsAbs(e) {
			out[i] = e
		} else {
			out[i] = filepath.Join(filepath.Dir(c.Path), e)
		}
	}
	return out
}

// PolicyYAML returns the case's policy section as YAML ("" when none).
func (c *Case) PolicyYAML() (string, error) {
	if c.Policy.Kind == 0 {
		return "", nil
	}
	b, err := yaml.Marshal(&c.Policy)
	return string(b), err
}

// ResolvePolicy returns the default policy with the case's keys applied.
func (c *Case) ResolvePolicy() (rules.Policy, error) {
	p := rules.DefaultPolicy()
	if c.Policy.Kind != 0 {
		if err := c.Policy.Decode(&p); err != nil {
			return p, fmt.Errorf("%s: policy: %w", c.Path, err)
		}
	}
	if errs := p.Validate(); len(errs) > 0 {
		return p, fmt.Errorf("%s: policy: %v", c.Path, errs[0])
	}
	return p, nil
}

// Diff compares the findings a run raised with the expected ones; it
// returns what was missing and what was unexpected, sorted.
func Diff(expected, got []Expectation) (missing, unexpected []string) {
	count := map[string]int{}
	for _, e := range expected {
		count[e.String()]++
	}
	for _, g := range got {
		count[g.String()]--
	}
	for k, n := range count {
		for ; n > 0; n-- {
			missing = append(missing, k)
		}
		for ; n < 0; n++ {
			unexpected = append(unexpected, k)
		}
	}
	slices.Sort(missing)
	slices.Sort(unexpected)
	return missing, unexpected
}

// FormatDiff renders a diff readably, one finding a line.
func FormatDiff(missing, unexpected []string) string {
	var b strings.Builder
	for _, m := range missing {
		b.WriteString("  - missing:    " + m + "\n")
	}
	for _, u := range unexpected {
		b.WriteString("  + unexpected: " + u + "\n")
	}
	return b.String()
}
