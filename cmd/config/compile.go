package config

import (
	"fmt"
	"strings"

	"github.com/encwatch/encwatch/rules"
)

// compileCustomRules compiles the custom rules that validate found whole
// (an id and an expression), with limits.customRuleCost. A rule that does
// not compile is a problem at its when key, with CEL's position in the
// expression.
func compileCustomRules(c Config) ([]*rules.Compiled, []rules.FieldError) {
	var out []*rules.Compiled
	var errs []rules.FieldError
	for i, r := range c.CustomRules {
		if r.ID == "" || strings.TrimSpace(r.When) == "" {
			continue
		}
		compiled, err := rules.Compile(r, c.Limits.CustomRuleCost)
		if err != nil {
			errs = append(errs, rules.FieldError{Path: fmt.Sprintf("customRules[%d].when", i), Msg: strings.ReplaceAll(err.Error(), "<input>:", "expression ")})
			continue
		}
		out = append(out, compiled)
	}
	return out, errs
}
