// Command encwatch watches CloudTrail for S3 default-encryption changes on
// general purpose and directory buckets and alerts when one breaks policy.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK       = 0
	exitFindings = 1
	exitUsage    = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `encwatch watches CloudTrail for S3 default-encryption changes.

Usage:
  encwatch demo [--listen ADDR] [--every DURATION]
  encwatch run --config FILE
  encwatch healthcheck [--config FILE | --addr HOST:PORT]
  encwatch deadletter list|retry [--config FILE] [--sink NAME] [--seq N]
  encwatch outbox list|move|drop [--config FILE] [--from Q --to Q | --queue Q]
  encwatch quarantine list|retry|drop [--config FILE] [--id N]
  encwatch state check [--config FILE]
  encwatch replay [--config FILE] [--format text|json|ocsf] [--fail-on SEVERITY] PATH...
  encwatch scan [--config FILE] [--format text|json|ocsf] [--fail-on SEVERITY] [--regions R,...]
  encwatch rules [--config FILE]
  encwatch rules test [--config FILE] CASE.yaml...
  encwatch config check FILE
  encwatch config keys
  encwatch version

Run "encwatch COMMAND -h" for a command's flags.
`

// run is the whole program; main only adds the process around it.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return runCmd(ctx, rest, stdout, stderr)
	case "demo":
		return demoCmd(ctx, rest, stdout, stderr)
	case "healthcheck":
		return healthcheckCmd(rest, stdout, stderr)
	case "deadletter":
		return deadletterCmd(rest, stdout, stderr)
	case "outbox":
		return outboxCmd(rest, stdout, stderr)
	case "quarantine":
		return quarantineCmd(rest, stdout, stderr)
	case "state":
		return stateCmd(rest, stdout, stderr)
	case "replay":
		return replayCmd(ctx, rest, stdin, stdout, stderr)
	case "scan":
		return scanCmd(ctx, rest, stdout, stderr)
	case "rules":
		return rulesCmd(rest, stdout, stderr)
	case "config":
		return configCmd(rest, stdout, stderr)
	case "version", "--version":
		return versionCmd(stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "encwatch: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}
