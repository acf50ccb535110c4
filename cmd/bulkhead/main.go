// Command bulkhead is the Bulkhead server and its operator commands: serve,
// migrate, tenant and key lifecycle, verify and config.
//
// Exit status: 0 success, 1 failure, 2 bad usage or configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"go.uber.org/dig"

	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/isolation"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runWith(ctx, os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// usageError marks errors that are the caller's: bad arguments or flags.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// run runs the command line args and returns the exit status. Cancelling
// ctx is what SIGTERM and SIGINT do: serve drains and returns.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, env, nil, stdout, stderr)
}

// runWith is run with a stdin, which a command may ask a question on when
// it is a terminal (nil: there is none).
func runWith(ctx context.Context, args, env []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(env, stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	err = dig.RootCause(err)
	fmt.Fprintln(stderr, "bulkhead: "+oneLine(err.Error()))
	var (
		usage  usageError
		unsafe *isolation.UnsafeError
		failed reportedError
	)
	switch {
	case errors.As(err, &failed):
		return failed.code
	case errors.As(err, &usage), config.IsConfigError(err), errors.As(err, &unsafe):
		return exitUsage
	}
	return exitFailure
}

// reportedError is a failure the command has already reported on stdout
// (verify's findings, migrate's failed tenants), carrying its exit status.
type reportedError struct {
	error
	code int
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
