package database

// Placement: which server and database hold a tenant.

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// locate returns t's server and database name. The name is derived from
// t.ID; a recorded placement that differs from it is refused, so that no
// record can point the serving role at a database that is not t's.
func (s *Strategy) locate(t isolation.Tenant) (*server, string, error) {
	if t.ID == uuid.Nil {
		return nil, "", isolation.ErrNoTenant
	}
	db := DBName(t.ID)
	if t.Placement != "" && t.Placement != db {
		return nil, "", fmt.Errorf("tenant %s: placement %q is not its database %s", t, t.Placement, db)
	}
	if t.Server == "" && len(s.order) == 1 {
		return s.order[0], db, nil
	}
	srv := s.servers[t.Server]
	if srv == nil {
		return nil, "", fmt.Errorf("tenant %s: server %q is not configured in isolation.database.servers", t, t.Server)
	}
	return srv, db, nil
}

// byLoad returns the servers that may provision, fewest tenants first
// (counting placements in progress in this process), ties in configured
// order.
func (s *Strategy) byLoad(ctx context.Context) ([]*server, error) {
	if s.cfg.Directory == nil {
		return nil, errors.New("no control plane to count tenants per server")
	}
	count, err := s.cfg.Directory.CountByServer(ctx, isolation.Database)
	if err != nil {
		return nil, fmt.Errorf("count tenants per server: %w", err)
	}
	var out []*server
	load := map[*server]int64{}
	for _, srv := range s.order {
		if srv.owner == nil {
			continue
		}
		load[srv] = count[srv.name] + srv.placing.Load()
		out = append(out, srv)
	}
	if len(out) == 0 {
		return nil, isolation.ErrNoOwner
	}
	slices.SortStableFunc(out, func(a, b *server) int { return int(load[a] - load[b]) })
	return out, nil
}
