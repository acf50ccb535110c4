package app_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/app"
	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/app/postgres"
	"github.com/bulkheadhq/bulkhead/internal/apitest"
	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/internal/strategylists"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/rls"
	"github.com/bulkheadhq/bulkhead/isolation/strategytest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// toy is a whole strategy in one test file, to show what adding one
// takes: its package (here, this file) and one registration line
// (apitest.WithStrategies, standing for a line of app.Strategies); it is
// held to the seam contract (strategytest.Exercise) as every strategy is.
// The move fence does not know it (isolation.Fenceable): its tenants run
// unfenced and cannot be moved. It
// keeps tenants in RLS's shared tables under a name of its own, and has
// one configuration key, isolation.toy.label.
type toy struct {
	*rls.Strategy
	label string
}

const toyName = "toy"

// toyConfig is the toy's configuration: the keys under isolation.toy.
type toyConfig struct {
	Label string `koanf:"label"`
}

func (c *toyConfig) Validate() error {
	var e isolation.ConfigErrors
	if strings.TrimSpace(c.Label) == "" {
		e.Add("label", "required")
	}
	return e.Err()
}

var toyDescriptor = isolation.Descriptor{
	Name:    toyName,
	Summary: "RLS under another name",
	Config:  func() isolation.Config { return &toyConfig{Label: "plain"} },
	New: func(d isolation.Deps, cfg isolation.Config) (isolation.Strategy, error) {
		return &toy{Strategy: rls.New(d.App, d.Owner, isolation.WithCitus(d.Citus)), label: cfg.(*toyConfig).Label}, nil
	},
}

func (s *toy) Name() string { return toyName }

func (s *toy) Provision(ctx context.Context, t isolation.Tenant) (isolation.Tenant, error) {
	t, err := s.Strategy.Provision(ctx, t)
	t.Strategy = toyName
	return t, err
}

// A strategy registered besides the build's is configured from its keys
// (defaults, environment, validation naming the key), provisions the
// tenants when isolation.strategy names it, and serves them, apart.
func TestToyStrategyIsRegisteredConfiguredAndServed(t *testing.T) {
	t.Parallel()
	strategies := append(slices.Clone(app.Strategies), toyDescriptor)

	l, err := config.Load(config.Input{Strategies: strategies, Env: []string{"BULKHEAD_ISOLATION=" + toyName}})
	if err != nil {
		t.Fatal(err)
	}
	if c := l.Config.Isolation.Settings[toyName].(*toyConfig); c.Label != "plain" || l.Sources["isolation.toy.label"] != "default" {
		t.Errorf("default: %+v from %q", c, l.Sources["isolation.toy.label"])
	}
	_, err = config.Load(config.Input{Strategies: strategies, Env: []string{"BULKHEAD_ISOLATION__TOY__LABEL= "}})
	if !config.IsConfigError(err) || !strings.Contains(err.Error(), "isolation.toy.label (from env BULKHEAD_ISOLATION__TOY__LABEL): required") {
		t.Errorf("an empty label: %v, want the key named with its source", err)
	}
	_, err = config.Load(config.Input{Env: []string{"BULKHEAD_ISOLATION=" + toyName}})
	if !config.IsConfigError(err) || !strings.Contains(err.Error(), "isolation.strategy") {
		t.Errorf("the toy without its registration: %v, want isolation.strategy refused", err)
	}

	env := apitest.Start(t, nil, apitest.WithStrategies(toyDescriptor),
		apitest.WithStrategy(toyName), apitest.WithEnv("BULKHEAD_ISOLATION__TOY__LABEL", "from-env"))
	st, err := env.Registry.Named(toyName)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.(*toy).label; got != "from-env" || env.Registry.Default() != st {
		t.Errorf("the server's toy: label %q, default %s", got, env.Registry.Default().Name())
	}
	a, b := env.Tenant(t, "toy-a"), env.Tenant(t, "toy-b")
	if a.Isolation != toyName {
		t.Errorf("tenant provisioned with %q, want %q", a.Isolation, toyName)
	}
	env.Must(t, 201, "POST", "/v1/accounts", a.Editor, map[string]any{"provider": "aws", "external_id": "111111111111", "name": "toy"})
	for _, c := range []struct {
		tenant apitest.Tenant
		want   int
	}{{a, 1}, {b, 0}} {
		var list struct{ Items []map[string]any }
		env.Must(t, 200, "GET", "/v1/accounts", c.tenant.Viewer, nil).JSON(t, &list)
		if len(list.Items) != c.want {
			t.Errorf("%s sees %d accounts, want %d", c.tenant.Slug, len(list.Items), c.want)
		}
	}
	env.Must(t, 200, "GET", "/readyz", "", nil)
}

// The toy, built as the registry builds it (its descriptor's constructor
// from the shared dependencies, its configuration's defaults validated),
// meets the seam contract every strategy meets.
func TestToyStrategyMeetsTheSeamContract(t *testing.T) {
	t.Parallel()
	strategytest.Exercise(t, func(t *testing.T) strategytest.Env {
		return pgtest.StrategyEnv(t, pgtest.New(t), 3, func(cfg *config.Config, pools *postgres.Pools, serving *pgxpool.Pool) (isolation.Strategy, error) {
			tc := toyDescriptor.Config()
			if err := tc.Validate(); err != nil {
				return nil, err
			}
			st, err := toyDescriptor.New(isolation.Deps{App: serving, Owner: pools.Owner, Citus: cfg.Database.Citus, Logger: pgtest.Logger()}, tc)
			if err != nil {
				return nil, err
			}
			return st, st.Setup(context.Background())
		})
	})
}

// The lists of strategies held outside Go are those of app.Strategies
// (make generate writes them), and the generator does write a new one.
func TestStrategyListsAreCurrent(t *testing.T) {
	t.Parallel()
	root, err := strategylists.Root(".")
	if err != nil {
		t.Fatal(err)
	}
	stale, err := strategylists.Stale(root, app.StrategyNames())
	if err != nil {
		t.Fatal(err)
	}
	if len(stale) > 0 {
		t.Errorf("%s do not list app.Strategies: run make generate and commit them", strings.Join(stale, ", "))
	}
	with, err := strategylists.Render(root, append(app.StrategyNames(), toyName))
	if err != nil {
		t.Fatal(err)
	}
	for path, b := range with {
		have, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), toyName) || string(b) == string(have) {
			t.Errorf("%s: a list with the toy is not written", path)
		}
	}
	var unknown *isolation.UnknownStrategyError
	if _, err := isolation.NewRegistry(toyName); !errors.As(err, &unknown) {
		t.Errorf("a registry without the toy: %v", err)
	}
}
