package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/encwatch/encwatch/rules"
)

func rulesCmd(args []string, stdout, stderr io.Writer) int {
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
