package database

// Readiness: whether every server answers and holds the template.

import (
	"context"
	"errors"
	"fmt"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// Ready reports each server that cannot serve — unreachable, or without
// the template of the current migrations — as degraded, and fails only
// when no server can serve.
func (s *Strategy) Ready(ctx context.Context) (isolation.Degraded, error) {
	type result struct {
		srv *server
		err error
	}
	results := make(chan result, len(s.order))
	for _, srv := range s.order {
		go func() { results <- result{srv, s.ready(ctx, srv)} }()
	}
	degraded := isolation.Degraded{}
	var errs []error
	for range s.order {
		r := <-results
		if r.err != nil {
			degraded["server "+r.srv.name] = r.err.Error()
			errs = append(errs, fmt.Errorf("server %s: %w", r.srv.name, r.err))
		}
	}
	if len(errs) == len(s.order) {
		// ready's errors are worded for anyone: no database text.
		return nil, &isolation.NotReadyError{Reason: errors.Join(errs...).Error()}
	}
	if len(degraded) == 0 {
		return nil, nil
	}
	return degraded, nil
}

// errNoTemplate says why a reachable server is not ready.
var errNoTemplate = errors.New("the template database of the current tenant migrations is missing: run bulkhead migrate")

// ready checks one server. Its errors are worded for /readyz: they carry
// no database error text.
func (s *Strategy) ready(ctx context.Context, srv *server) error {
	q, err := srv.reader()
	if err != nil {
		return err
	}
	var ok bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, TemplateName()).Scan(&ok); err != nil {
		if srv.noteDown(ctx, err) || ctx.Err() != nil {
			return errors.New("unreachable")
		}
		s.log.Warn("readiness of tenant database server", "server", srv.name, "err", err)
		return errors.New("cannot read its catalog")
	}
	srv.downUntil.Store(0)
	if !ok {
		return errNoTemplate
	}
	return nil
}

func missingDatabase(err error) bool {
	var code interface{ SQLState() string }
	return errors.As(err, &code) && code.SQLState() == "3D000" // invalid_catalog_name
}
