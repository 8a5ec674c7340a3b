// Package ruletest reads rule test cases written as data: CloudTrail
// records, an optional policy, and every finding they must raise.
package ruletest

import (
	"bytes"
	"encoding/json"
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
	// CustomRules are CEL rules to judge with, as in the configuration.
	CustomRules []rules.CustomRule `yaml:"customRules"`
	// Limits are the configuration's limits that shape judging; zero fields
	// take the value Run is given.
	Limits Limits `yaml:"limits"`
	// Events are record files in any envelope, relative to the case file,
	// or records written inline as YAML mappings.
	Events []EventRef `yaml:"events"`
	// Expect lists every finding the events must raise, and no more.
	Expect []Expectation `yaml:"expect"`

	// Path is the case file's path.
	Path string `yaml:"-"`
}

// Limits is the limits section of a case, as in the configuration.
type Limits struct {
	// CustomRuleCost bounds one custom rule on one event, in CEL cost units.
	CustomRuleCost uint64 `yaml:"customRuleCost"`
}

// EventRef is a record file path or an inline record.
type EventRef struct {
	Path   string
	Inline []byte // the record as JSON
	Line   int
}

// UnmarshalYAML reads a path (a string) or an inline record (a mapping).
func (e *EventRef) UnmarshalYAML(n *yaml.Node) error {
	e.Line = n.Line
	switch n.Kind {
	case yaml.ScalarNode:
		e.Path = n.Value
		return nil
	case yaml.MappingNode:
		var m map[string]any
		if err := n.Decode(&m); err != nil {
			return err
		}
		b, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("line %d: inline record: %w", n.Line, err)
		}
		e.Inline = b
		return nil
	}
	return fmt.Errorf("line %d: an event is a file path or a record mapping", n.Line)
}

// Expectation is one finding a case must raise.
type Expectation struct {
	Event    string `yaml:"event"`
	Rule     string `yaml:"rule"`
	Severity string `yaml:"severity"`
	// Count is the number of events a grouped finding stands for; 0 in an
	// expectation means it is not checked.
	Count int `yaml:"count,omitempty"`
}

func (e Expectation) String() string {
	s := e.Event + " " + e.Rule + " " + e.Severity
	if e.Count > 0 {
		s += " x" + fmt.Sprint(e.Count)
	}
	return s
}

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
	var out []string
	for _, e := range c.Events {
		switch {
		case e.Path == "":
		case filepath.IsAbs(e.Path):
			out = append(out, e.Path)
		default:
			out = append(out, filepath.Join(filepath.Dir(c.Path), e.Path))
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
	// Counts are compared only where an expectation gives one.
	checked := map[string]bool{}
	for _, e := range expected {
		if e.Count > 0 {
			checked[e.Event+" "+e.Rule] = true
		}
	}
	got = append([]Expectation(nil), got...)
	for i := range got {
		if !checked[got[i].Event+" "+got[i].Rule] {
			got[i].Count = 0
		}
	}
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
