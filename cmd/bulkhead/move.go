package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"go.uber.org/fx"

	"github.com/bulkheadhq/bulkhead/app"
	"github.com/bulkheadhq/bulkhead/app/control"
	"github.com/bulkheadhq/bulkhead/app/move"
	"github.com/bulkheadhq/bulkhead/app/store"
	"github.com/bulkheadhq/bulkhead/internal/strategylists"
)

// moveCmd moves a live tenant to another strategy or server, resumes its
// open move, or (--abort) rolls that back.
func (c *cli) moveCmd() *cobra.Command {
	var (
		to    control.Placement
		abort bool
	)
	cmd := &cobra.Command{
		Use:   "move SLUG --to STRATEGY [--server NAME] | move SLUG --abort",
		Short: "Move a live tenant to another isolation strategy or server (resumable, audited); --abort rolls an open move back",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			slug := a[0]
			if abort == (to.Isolation != "") {
				return usageError{fmt.Errorf("tenant move %s: give --to STRATEGY, or --abort", slug)}
			}
			var mover *move.Mover
			return c.with(cmd.Context(), fx.Options(), func(ctx context.Context) error {
				var (
					mv  control.Move
					err error
				)
				if abort {
					mv, err = mover.Abort(ctx, slug)
				} else {
					mv, err = mover.Move(ctx, slug, to)
				}
				var notAllowed *store.ValidationError
				if errors.As(err, &notAllowed) {
					return usageError{err}
				}
				if err != nil {
					return notFound(err, "tenant "+slug+" (or its open move)")
				}
				return c.print(mv, func(w io.Writer) { printMove(w, mv) })
			}, &mover)
		},
	}
	cmd.Flags().StringVar(&to.Isolation, "to", "", "the strategy to move to: "+strategylists.OrList(app.StrategyNames()))
	cmd.Flags().StringVar(&to.Server, "server", "", "the server of isolation.database.servers to move to (database strategy)")
	cmd.Flags().BoolVar(&abort, "abort", false, "roll the tenant's open move back: the target is removed, the source keeps serving")
	return cmd
}

func printMove(w io.Writer, mv control.Move) {
	fmt.Fprintf(w, "%s\t%s → %s\tstep %s\trows copied %d", mv.Slug, describePlacement(mv.From), describePlacement(mv.To), mv.Step, mv.RowsCopied)
	if mv.PauseMS != nil {
		fmt.Fprintf(w, "\twrite pause %d ms", *mv.PauseMS)
	}
	if mv.Error != "" {
		fmt.Fprintf(w, "\terror: %s", mv.Error)
	}
	fmt.Fprintln(w)
}

func describePlacement(p control.Placement) string {
	s := p.Isolation
	if p.Server != "" {
		s += "@" + p.Server
	}
	if p.Placement != "" {
		s += " (" + p.Placement + ")"
	}
	return s
}
