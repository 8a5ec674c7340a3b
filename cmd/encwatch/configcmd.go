package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/encwatch/encwatch/alert/webhook"
	"github.com/encwatch/encwatch/cmd/config"
	"go.yaml.in/yaml/v3"
)

func configCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: encwatch config check FILE | encwatch config keys")
		return exitUsage
	}
	switch args[0] {
	case "check":
		fs := flag.NewFlagSet("config check", flag.ContinueOnError)
		fs.SetOutput(stderr)
		print := fs.Bool("print", false, "print the effective configuration (defaults and ENCWATCH_* applied, secrets masked)")
		if err := fs.Parse(args[1:]); err != nil {
			return exitUsage
		}
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, "usage: encwatch config check FILE")
			return exitUsage
		}
		cfg, err := loadConfig(fs.Arg(0))
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
		if *print {
			b, err := yaml.Marshal(masked(cfg))
			if err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
			stdout.Write(b)
			return exitOK
		}
		fmt.Fprintf(stdout, "%s: OK\n", fs.Arg(0))
		return exitOK
	case "keys":
		keys := config.EnvKeys()
		names := make([]string, 0, len(keys))
		for n := range keys {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(stdout, "%-48s %s\n", n, keys[n])
		}
		return exitOK
	}
	fmt.Fprintf(stderr, "encwatch config: unknown subcommand %q\n", args[0])
	return exitUsage
}

// loadConfig loads a configuration file (or defaults for "") with the
// process environment's overrides, and compiles its custom rules, so that
// every command reports the same problems the same way.
func loadConfig(path string) (config.Config, error) {
	cfg, err := config.Load(path, os.Environ())
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			return cfg, fmt.Errorf("invalid configuration:\n%w", err)
		}
		return cfg, fmt.Errorf("configuration: %w", err)
	}
	return cfg, nil
}

type configT = config.Config

// masked returns the configuration with what may hold a secret masked:
// webhook URLs lose user info and query string. Passwords, tokens and HMAC
// keys are never in the configuration itself, only the files or variables
// that hold them.
func masked(c config.Config) config.Config {
	c.Sinks.Webhooks = append([]config.Webhook(nil), c.Sinks.Webhooks...)
	for i := range c.Sinks.Webhooks {
		if u := c.Sinks.Webhooks[i].URL; u != "" {
			c.Sinks.Webhooks[i].URL = webhook.Redact(u)
			if webhook.Redact(u) != u {
				c.Sinks.Webhooks[i].URL += "?(masked)"
			}
		}
	}
	return c
}

// defaultConfigPath is the configuration file when --config is not given:
// none when ENCWATCH_CONFIG_YAML holds the configuration itself (a
// platform's value comes before the file an image carries), else
// $ENCWATCH_CONFIG.
func defaultConfigPath() string {
	if os.Getenv(config.YAMLEnv) != "" {
		return ""
	}
	return os.Getenv("ENCWATCH_CONFIG")
}
