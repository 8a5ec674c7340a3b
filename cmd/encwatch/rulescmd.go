package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/encwatch/encwatch/rules"
	"github.com/encwatch/encwatch/rules/ruletest"
)

func rulesCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "test" {
		return rulesTestCmd(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("rules", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "show severities and disabled rules as this configuration sets them")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tSEVERITY\tDESCRIPTION")
	for _, r := range rules.Catalogue {
		sev := r.Severity.String()
		if r.SeverityNote != "" {
			sev += " (" + r.SeverityNote + ")"
		}
		if s, ok := cfg.Policy.Severity[r.ID]; ok {
			sev = s.String() + " (set by policy)"
		}
		if slices.Contains(cfg.Policy.Disabled, r.ID) {
			sev = "disabled"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.ID, sev, r.Description)
	}
	for _, c := range cfg.CustomRules {
		fmt.Fprintf(tw, "%s\t%s\tcustom: %s\n", c.ID, c.Severity, c.Summary)
	}
	if err := tw.Flush(); err != nil {
		return exitUsage
	}
	return exitOK
}

// rulesTestCmd runs rule test cases written as data and prints a pass/fail
// table; exit 1 when a case fails, 2 when one cannot run.
func rulesTestCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "take limits (customRuleCost) from this configuration `FILE`; a case's own limits win")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: encwatch rules test [--config FILE] CASE.yaml...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	args = fs.Args()
	if len(args) == 0 {
		fs.Usage()
		return exitUsage
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	failed, broken := 0, 0
	for _, path := range args {
		c, err := ruletest.Load(path)
		if err != nil {
			fmt.Fprintf(stdout, "ERROR %s\n      %v\n", path, err)
			broken++
			continue
		}
		res := ruletest.Run(c, cfg.Limits.CustomRuleCost)
		switch {
		case res.Err != nil:
			fmt.Fprintf(stdout, "ERROR %-36s %s\n      %v\n", c.Name, path, res.Err)
			broken++
		case res.Passed():
			fmt.Fprintf(stdout, "PASS  %-36s %s (%d findings)\n", c.Name, path, len(res.Found))
		default:
			fmt.Fprintf(stdout, "FAIL  %-36s %s\n%s", c.Name, path, ruletest.FormatDiff(res.Missing, res.Unexpected))
			failed++
		}
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", len(args)-failed-broken, failed+broken)
	switch {
	case broken > 0:
		return exitUsage
	case failed > 0:
		return exitFindings
	}
	return exitOK
}
