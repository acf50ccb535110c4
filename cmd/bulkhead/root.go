package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/fx"
	"golang.org/x/term"

	"github.com/bulkheadhq/bulkhead/app"
	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/internal/strategylists"
)

// cli is the state every command shares.
type cli struct {
	env    []string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	file   string // --config
	output string // -o
	flags  *pflag.FlagSet
}

// configFlags maps the configuration flags to their keys.
var configFlags = []struct{ name, key, usage string }{
	{"profile", "profile", "deployment profile: saas, regulated, enterprise or community"},
	{"isolation", "isolation.strategy", "isolation strategy: " + strategylists.OrList(app.StrategyNames())},
	{"database-url", "database.url", "DSN the server serves with (the app role)"},
	{"migrate-database-url", "database.migrate_url", "DSN with owner privilege, for migrate and provisioning"},
	{"http-addr", "http.addr", "listen address"},
	{"log-format", "log.format", "json or text"},
	{"log-level", "log.level", "debug, info, warn or error"},
	{"pooler", "database.pooler", "none, or pgbouncer when a transaction-mode pooler is in front"},
}

func newRoot(env []string, stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	c := &cli{env: env, stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "bulkhead",
		Short:         "Multi-tenant FinOps server whose tenant isolation PostgreSQL enforces",
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.NoArgs,
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&c.file, "config", "", "YAML configuration file (or BULKHEAD_CONFIG)")
	pf.StringVarP(&c.output, "output", "o", "text", "output format: text or json")
	for _, f := range configFlags {
		pf.String(f.name, "", f.usage)
	}
	c.flags = pf
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if c.output != "text" && c.output != "json" {
			return usageError{fmt.Errorf("-o %q: want text or json", c.output)}
		}
		return nil
	}
	root.AddCommand(
		c.serveCmd(),
		c.migrateCmd(),
		c.tenantCmd(),
		c.keyCmd(),
		c.verifyCmd(),
		c.configCmd(),
		c.auditCmd(),
		c.usageCmd(),
		c.costsCmd(),
		c.versionCmd(),
	)
	return root
}

// input is the configuration input: the file, the environment, the
// configuration flags the user set, and the build's strategies.
func (c *cli) input() config.Input {
	in := config.Input{File: c.file, Env: c.env, Strategies: app.Strategies}
	for _, f := range configFlags {
		if fl := c.flags.Lookup(f.name); fl != nil && fl.Changed {
			in.Flags = append(in.Flags, config.Flag{Name: f.name, Key: f.key, Value: fl.Value.String()})
		}
	}
	return in
}

// args wraps a cobra positional-argument check so that its failure is a
// usage error (exit 2).
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// with builds the Base app plus opts, starts it, runs fn, and stops it.
// targets are filled by fx.Populate before fn runs.
func (c *cli) with(ctx context.Context, opts fx.Option, fn func(context.Context) error, targets ...any) error {
	if opts == nil {
		opts = fx.Options()
	}
	a := fx.New(app.Base(c.input()), opts, fx.Populate(targets...))
	if err := a.Err(); err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = a.Stop(stopCtx) // stopping closes pools; nothing to report
	}()
	return fn(ctx)
}

// print writes v as JSON with -o json, or with text otherwise.
func (c *cli) print(v any, text func(w io.Writer)) error {
	if c.output == "json" {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text(c.stdout)
	return nil
}

// terminal is a stdin that says whether a person is at it; tests fake one.
type terminal interface{ IsTerminal() bool }

// interactive reports whether stdin is a terminal a person can answer a
// question on.
func (c *cli) interactive() bool {
	switch in := c.stdin.(type) {
	case terminal:
		return in.IsTerminal()
	case *os.File:
		return term.IsTerminal(int(in.Fd()))
	}
	return false
}
