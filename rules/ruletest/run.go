package ruletest

import (
	"context"
	"fmt"

	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/rules"
)

// Result is the outcome of one case.
type Result struct {
	Case       *Case
	Found      []Expectation
	Missing    []string
	Unexpected []string
	Err        error // the case could not run (bad policy, rule, file)
}

// Passed reports whether the case raised exactly what it expects.
func (r Result) Passed() bool { return r.Err == nil && len(r.Missing) == 0 && len(r.Unexpected) == 0 }

// Run judges a case's events with its policy and custom rules, in the order
// replay judges them: the record files by delivery time, then the inline
// records; each by eventTime. Custom rules are compiled with the case's
// limits.customRuleCost, else costLimit (the configuration's), else the
// default, so a case judges as the daemon would.
func Run(c *Case, costLimit uint64) Result {
	res := Result{Case: c}
	p, err := c.ResolvePolicy()
	if err != nil {
		res.Err = err
		return res
	}
	if c.Limits.CustomRuleCost > 0 {
		costLimit = c.Limits.CustomRuleCost
	}
	var compiled []*rules.Compiled
	for _, cr := range c.CustomRules {
		if cr.Severity == 0 {
			res.Err = fmt.Errorf("%s: custom rule %s: severity missing", c.Path, cr.ID)
			return res
		}
		cc, err := rules.Compile(cr, costLimit)
		if err != nil {
			res.Err = fmt.Errorf("%s: %w", c.Path, err)
			return res
		}
		compiled = append(compiled, cc)
	}
	state := rules.NewMemory()
	engine, err := rules.New(p, state, compiled...)
	if err != nil {
		res.Err = fmt.Errorf("%s: %w", c.Path, err)
		return res
	}
	engine.OnRuleError(func(re *rules.RuleError) {
		if res.Err == nil {
			res.Err = fmt.Errorf("%s: rule %s failed on event %s: %w", c.Path, re.Rule, eventID(re.Event), re.Err)
		}
	})
	judge := func(evs []*ingest.Event) error {
		for _, ev := range evs {
			fs, err := engine.Evaluate(ev)
			if err != nil {
				return err
			}
			for _, f := range fs {
				res.Found = append(res.Found, Expectation{Event: f.Event.ID, Rule: f.Rule, Severity: f.Severity.String(), Count: f.Count})
			}
		}
		return nil
	}
	if paths := c.EventPaths(); len(paths) > 0 {
		inputs, err := ingest.Expand(paths)
		if err != nil {
			res.Err = fmt.Errorf("%s: %w", c.Path, err)
			return res
		}
		var bad error
		_, err = ingest.ReadAll(context.Background(), inputs, ingest.ReadOptions{DataEvents: engine.DataRulesOn(), OnError: func(p ingest.Position, err error) {
			if bad == nil {
				bad = fmt.Errorf("%s: %w", p, err)
			}
		}}, judge)
		if err == nil {
			err = bad
		}
		if err != nil {
			res.Err = fmt.Errorf("%s: %w", c.Path, err)
			return res
		}
	}
	var inline []*ingest.Event
	for _, e := range c.Events {
		if e.Inline == nil {
			continue
		}
		ev, err := ingest.DecodeRecord(e.Inline)
		if err == nil && !ev.IsEncryptionEvent() && !ev.IsKMSEvent() && !(engine.DataRulesOn() && ev.IsDataEvent()) {
			continue
		}
		if err != nil {
			res.Err = fmt.Errorf("%s:%d: inline record: %w", c.Path, e.Line, err)
			return res
		}
		inline = append(inline, ev)
	}
	ingest.SortByTime(inline)
	if err := judge(inline); err != nil {
		res.Err = err
		return res
	}
	fs, err := engine.Flush(state)
	if err != nil {
		res.Err = err
		return res
	}
	for _, f := range fs {
		res.Found = append(res.Found, Expectation{Event: f.Event.ID, Rule: f.Rule, Severity: f.Severity.String(), Count: f.Count})
	}
	res.Missing, res.Unexpected = Diff(c.Expect, res.Found)
	return res
}

func eventID(ev *ingest.Event) string {
	if ev == nil {
		return "(none)"
	}
	if ev.ID != "" {
		return ev.ID
	}
	return ev.Origin.String()
}
