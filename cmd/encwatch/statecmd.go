package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/alert/outbox"
	"github.com/encwatch/encwatch/cmd/config"
	"github.com/encwatch/encwatch/cmd/daemon"
)

// openStateDB opens the state database of the configuration at cfgPath for
// a maintenance command. The database lock keeps it off a running daemon's
// state: the command waits briefly, then says to stop the daemon.
func openStateDB(cmd, cfgPath string, stderr io.Writer) (*bolt.DB, config.Config, bool) {
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, cfg, false
	}
	path := filepath.Join(cfg.State.Dir, "encwatch.db")
	if _, err := os.Stat(path); err != nil {
		fmt.Fprintf(stderr, "encwatch %s: no state at %s (state.dir %q): %v\n", cmd, path, cfg.State.Dir, err)
		return nil, cfg, false
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintf(stderr, "encwatch %s: opening %s: %v (a running daemon holds the state: stop it first)\n", cmd, path, err)
		return nil, cfg, false
	}
	return db, cfg, true
}

const outboxUsage = `usage: encwatch outbox list [--config FILE]
       encwatch outbox move --from QUEUE --to QUEUE [--config FILE]
       encwatch outbox drop --queue QUEUE [--config FILE]
The daemon must be stopped. A queue is named after its sink: stdout, kafka,
webhook:NAME. "list" marks queues no configured sink owns as orphaned.`

// outboxCmd lists the outbox's queues and moves or drops the queue of a
// sink that was renamed or removed.
func outboxCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || !slices.Contains([]string{"list", "move", "drop"}, args[0]) {
		fmt.Fprintln(stderr, outboxUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("outbox "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", defaultConfigPath(), "configuration `FILE` whose state.dir and sinks to use")
	from := fs.String("from", "", "queue to move alerts from (move)")
	to := fs.String("to", "", "queue to move them to, usually a configured sink (move)")
	queue := fs.String("queue", "", "queue to drop (drop)")
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	switch {
	case args[0] == "move" && (*from == "" || *to == ""):
		fmt.Fprintln(stderr, "encwatch outbox move: --from and --to are required")
		return exitUsage
	case args[0] == "drop" && *queue == "":
		fmt.Fprintln(stderr, "encwatch outbox drop: --queue is required")
		return exitUsage
	}
	db, cfg, ok := openStateDB("outbox", *cfgPath, stderr)
	if !ok {
		return 1
	}
	defer db.Close()
	configured := daemon.SinkNames(cfg)
	switch args[0] {
	case "move":
		if !slices.Contains(configured, *to) {
			fmt.Fprintf(stderr, "encwatch outbox move: note: no configured sink owns %q (configured: %v); the alerts wait there until one does\n", *to, configured)
		}
		n, err := outbox.MoveQueue(db, *from, *to)
		if err != nil {
			fmt.Fprintf(stderr, "encwatch outbox move: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%d alerts moved from %s to %s; the daemon sends them when it runs\n", n, *from, *to)
	case "drop":
		n, err := outbox.DropQueue(db, *queue)
		if err != nil {
			fmt.Fprintf(stderr, "encwatch outbox drop: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "queue %s dropped with %d waiting alerts\n", *queue, n)
	default:
		qs, err := outbox.ListQueues(db)
		if err != nil {
			fmt.Fprintf(stderr, "encwatch outbox list: %v\n", err)
			return 1
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "QUEUE\tPENDING\tDEAD LETTERS\tSTATUS")
		for _, q := range qs {
			status := "configured"
			if !slices.Contains(configured, q.Name) {
				status = "orphaned: no configured sink; move or drop it"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", q.Name, q.Pending, q.DeadLetters, status)
		}
		if err := tw.Flush(); err != nil {
			return 1
		}
	}
	return exitOK
}

const quarantineUsage = `usage: encwatch quarantine list [--config FILE] [--events]
       encwatch quarantine retry [--config FILE] (--id N | --all)
       encwatch quarantine drop [--config FILE] (--id N | --all)
Batches the daemon set aside instead of judging them: they failed to judge
or store three times, or were in flight at two crashes. "retry" has the next
start of the daemon judge them again; "drop" forgets them. The daemon must be
stopped.`

// quarantineCmd lists, retries or drops the batches set aside.
func quarantineCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || !slices.Contains([]string{"list", "retry", "drop"}, args[0]) {
		fmt.Fprintln(stderr, quarantineUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("quarantine "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", defaultConfigPath(), "configuration `FILE` whose state.dir to use")
	id := fs.Uint64("id", 0, "the entry (retry, drop)")
	all := fs.Bool("all", false, "every entry (retry, drop)")
	events := fs.Bool("events", false, "print each entry's events as JSON lines (list)")
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	if args[0] != "list" && (*id == 0) == !*all {
		fmt.Fprintf(stderr, "encwatch quarantine %s: give --id N or --all\n", args[0])
		return exitUsage
	}
	db, _, ok := openStateDB("quarantine", *cfgPath, stderr)
	if !ok {
		return 1
	}
	defer db.Close()
	switch args[0] {
	case "retry":
		n, err := daemon.MarkQuarantineRetry(db, *id)
		if err != nil {
			fmt.Fprintf(stderr, "encwatch quarantine retry: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%d entries marked; the daemon judges them again when it starts\n", n)
	case "drop":
		n, err := daemon.DropQuarantine(db, *id)
		if err != nil {
			fmt.Fprintf(stderr, "encwatch quarantine drop: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%d entries dropped\n", n)
	default:
		qs, err := daemon.ListQuarantine(db)
		if err != nil {
			fmt.Fprintf(stderr, "encwatch quarantine list: %v\n", err)
			return 1
		}
		enc := json.NewEncoder(stdout)
		for _, q := range qs {
			retry := ""
			if q.Retry {
				retry = "\tretry at next start"
			}
			fmt.Fprintf(stdout, "%d\t%s\t%s\t%s\t%d events\t%s\t%s%s\n", q.ID, q.At.Format(time.RFC3339), q.Source, q.Reason, len(q.Events), q.Origin, q.Error, retry)
			if *events {
				for _, ev := range q.Events {
					if err := enc.Encode(ev); err != nil {
						return 1
					}
				}
			}
		}
		fmt.Fprintf(stderr, "%d entries in the quarantine\n", len(qs))
	}
	return exitOK
}

// stateCmd checks the state file with bbolt's consistency check.
func stateCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, "usage: encwatch state check [--config FILE]\nRuns bbolt's consistency check on the state file (the daemon must be stopped).")
		return exitUsage
	}
	fs := flag.NewFlagSet("state check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", defaultConfigPath(), "configuration `FILE` whose state.dir to check")
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	path := filepath.Join(cfg.State.Dir, "encwatch.db")
	if _, err := os.Stat(path); err != nil {
		fmt.Fprintf(stderr, "encwatch state check: %v\n", err)
		return 1
	}
	db, err := daemon.OpenChecked(path, 10*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "encwatch state check: %v\n", err)
		return 1
	}
	defer db.Close()
	qs, _ := outbox.ListQueues(db)
	pending := 0
	for _, q := range qs {
		pending += q.Pending
	}
	fmt.Fprintf(stdout, "%s: OK (%d alerts waiting in %d queues)\n", path, pending, len(qs))
	return exitOK
}
