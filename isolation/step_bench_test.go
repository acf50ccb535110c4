package isolation

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
)

// BenchmarkBindingText is the Go side of what every tenant-bound
// one-statement read builds before it sends anything: the binding's steps
// (the tenant, the search_path, the server's bounds, the move fence), the
// one SELECT they fold into, and the names of the control statements a
// connection has prepared. It allocates per read; the bounds' text, the
// fence's call and the statements' names are built once.
func BenchmarkBindingText(b *testing.B) {
	ctx := WithBounds(context.Background(), Bounds{Statement: 30 * time.Second, Lock: 5 * time.Second, IdleInTransaction: time.Minute})
	id := uuid.New()
	data := map[string]any{}
	prepared := controlsOf(data)
	for _, c := range []string{"BEGIN READ ONLY", "COMMIT"} {
		prepared[c] = controlName(c)
	}
	b.ReportAllocs()
	for range b.N {
		fence, err := FenceStep(Tenant{ID: id, Strategy: RLS})
		if err != nil {
			b.Fatal(err)
		}
		bind, err := BindStatements(WithSteps(ctx, fence), id, SearchPath(SharedSchema))
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range controls(bind) {
			if _, ok := prepared[c.sql]; !ok {
				prepared[c.sql] = controlName(c.sql)
			}
		}
	}
}
