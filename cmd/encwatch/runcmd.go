package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/encwatch/encwatch/alert/outbox"
	"github.com/encwatch/encwatch/cmd/daemon"
)

func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", defaultConfigPath(), "configuration `FILE` (default $ENCWATCH_CONFIG)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	v, r, g := buildInfo()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{})
	stopped := make(chan struct{})
	defer close(stopped) // ends the forwarder when Run returns, whatever ctx does
	go func() {
		for {
			select {
			case <-hup:
			case <-stopped:
				return
			}
			select {
			case reload <- struct{}{}:
			case <-stopped:
				return
			}
		}
	}()
	err = daemon.Run(ctx, daemon.Options{Config: cfg, ConfigPath: *cfgPath, Reload: reload, Stdout: stdout, Stderr: stderr,
		Version: v, Revision: r, GoVersion: g})
	if err != nil {
		fmt.Fprintf(stderr, "encwatch run: %v\n", err)
		var ce *daemon.CorruptStateError
		if errors.As(err, &ce) {
			return exitUsage
		}
		return 1
	}
	return exitOK
}

// healthcheckCmd probes a running daemon's /healthz; it is the container's
// HEALTHCHECK.
func healthcheckCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", defaultConfigPath(), "configuration `FILE` whose http.listen to probe")
	addr := fs.String("addr", "", "address to probe (default: http.listen of the configuration)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	scheme := "http"
	if *addr == "" {
		cfg, err := loadConfig(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
		*addr = cfg.HTTP.Listen
		if cfg.HTTP.TLS.CertFile != "" {
			scheme = "https"
		}
	}
	host := *addr
	if strings.HasPrefix(host, "0.0.0.0:") || strings.HasPrefix(host, ":") {
		host = "127.0.0.1:" + host[strings.LastIndexByte(host, ':')+1:]
	}
	// The probe runs beside the daemon: it checks liveness, not the
	// certificate (which names the service, not the loopback address).
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Get(scheme + "://" + host + "/healthz")
	if err != nil {
		fmt.Fprintf(stderr, "encwatch healthcheck: %v\n", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "encwatch healthcheck: %s answered %s\n", host, resp.Status)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return exitOK
}

// deadletterCmd lists and requeues dead-lettered alerts. It opens the
// state, so it runs while the daemon is stopped, or waits for its lock.
func deadletterCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "list" && args[0] != "retry") {
		fmt.Fprintln(stderr, "usage: encwatch deadletter list|retry [--config FILE] [--sink NAME] [--seq N]")
		return exitUsage
	}
	fs := flag.NewFlagSet("deadletter "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", defaultConfigPath(), "configuration `FILE` whose state.dir to use")
	sink := fs.String("sink", "", "only this sink")
	seq := fs.Uint64("seq", 0, "only this dead letter (retry)")
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	db, _, ok := openStateDB("deadletter", *cfgPath, stderr)
	if !ok {
		return 1
	}
	defer db.Close()
	if args[0] == "retry" {
		n, err := outbox.Requeue(db, *sink, *seq)
		if err != nil {
			fmt.Fprintf(stderr, "encwatch deadletter retry: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%d alerts moved back to the outbox; the daemon sends them when it runs\n", n)
		return exitOK
	}
	entries, err := outbox.DeadLetters(db, *sink)
	if err != nil {
		fmt.Fprintf(stderr, "encwatch deadletter list: %v\n", err)
		return 1
	}
	for _, e := range entries {
		fmt.Fprintf(stdout, "%s\t%d\t%s\t%s\t%s\n", e.Sink, e.Seq, e.Failed.Format(time.RFC3339), e.Reason, e.Alert)
	}
	fmt.Fprintf(stderr, "%d dead letters\n", len(entries))
	return exitOK
}
