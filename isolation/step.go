package isolation

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// A Step is one statement a tenant transaction runs after its BEGIN and
// before its work: a setting of the binding or of the Bounds, the move
// fence, a statement of WithStatements.
//
// Most steps are also a call of a function with text arguments (a
// setting is set_config(name, value, true)). A one-statement read
// (OneRead) folds such steps into one SELECT of their calls, with the
// values bound as parameters: the same text for every tenant, which a
// connection prepares once and then only binds and executes, where the
// steps as statements of their own would be as many executions, and the
// tenant's own ones (its SET LOCAL, its fence) parsed and analysed anew
// on every read.
type Step struct {
	// SQL is the step as a statement of its own, every value in it derived
	// and quoted: what a simple-protocol BEGIN message carries, and what
	// a one-statement read sends when some step does not fold.
	SQL string
	// Call is the same step as an expression, a call of a qualified
	// function, with a ? for each of Args in turn; "" when the step has
	// no such form.
	Call string
	Args []string
}

// Statement returns the step of the statement sql alone, which does not
// fold. sql must be built from trusted, derived text only.
func Statement(sql string) Step { return Step{SQL: sql} }

// setLocal returns the step that makes setting name value for the rest of
// the transaction: stmt as SET LOCAL says it (value in SET's grammar),
// and its call of set_config.
func setLocal(stmt, name, value string) Step {
	return Step{SQL: stmt, Call: "pg_catalog.set_config(?, ?, true)", Args: []string{name, value}}
}

// tenantStep is the step that binds id: Setting, transaction-locally. id
// is a parsed UUID: its text form cannot carry a quote.
func tenantStep(id uuid.UUID) Step {
	v := id.String()
	return setLocal("SET LOCAL "+Setting+" = '"+v+"'", Setting, v)
}

// SearchPath is the step of a binding's search_path: the schema of the
// tenant's tables, then the session's temporary schema, explicitly last.
// Unnamed, pg_temp would be searched first, and a temporary table named
// like a tenant table would shadow it for the rest of the pooled session.
// Every strategy binds with it.
func SearchPath(schema string) Step {
	path := pgx.Identifier{schema}.Sanitize() + ", pg_temp"
	return setLocal("SET LOCAL search_path = "+path, "search_path", path)
}

// SetRole is the step that makes role the current role for the rest of
// the transaction (SET LOCAL ROLE): a role the session's user is a
// member of, or the step fails.
func SetRole(role string) Step {
	return setLocal("SET LOCAL ROLE "+pgx.Identifier{role}.Sanitize(), "role", role)
}

// GenericPlans is the step that makes every prepared statement the
// transaction executes use its generic plan from the first execution on
// (plan_cache_mode = force_generic_plan), instead of planning each of its
// first five executions for their parameter values before PostgreSQL
// decides whether the generic plan will do. That pays where a statement is
// prepared for one tenant and connection (the schema strategy's reads:
// RunOnScoped), and so runs only a few times on each backend: each of
// those executions would be planned anew. A statement whose plan hinges on
// its parameters' values would do worse with it; the application's reads
// of one tenant's tables filter on the tenant, which is the whole table
// there, and on keys and date ranges its indexes serve.
func GenericPlans() Step {
	return setLocal("SET LOCAL plan_cache_mode = force_generic_plan", "plan_cache_mode", "force_generic_plan")
}

// setMillis is the step that sets the duration setting name to ms
// milliseconds.
func setMillis(name string, ms int64) Step {
	v := strconv.FormatInt(ms, 10)
	return setLocal("SET LOCAL "+name+" = "+v, name, v)
}

// Unfolded returns steps as statements of their own only. On Citus every
// setting must be: the coordinator carries a transaction's SET LOCAL to
// its workers (PropagateSetting), not what set_config sets, and the
// tenant policy of a shard reads the binding on its worker.
func Unfolded(steps []Step) []Step {
	out := make([]Step, len(steps))
	for i, s := range steps {
		out[i] = Statement(s.SQL)
	}
	return out
}

// Statements returns the SQL of steps.
func Statements(steps []Step) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = s.SQL
	}
	return out
}

// fold returns steps as one SELECT of their calls and the calls'
// arguments, in order, or ok false when some step has no call (or there
// are none). The SELECT's text depends only on the functions called and
// how many arguments each takes: the same for every tenant of a
// strategy. The target list is evaluated in order.
func fold(steps []Step) (sql string, args [][]byte, ok bool) {
	if len(steps) == 0 {
		return "", nil, false
	}
	size, nargs := len("SELECT "), 0
	for _, s := range steps {
		size += len(s.Call) + len(", ") + 4*len(s.Args) // ? becomes $nn
		nargs += len(s.Args)
	}
	var b strings.Builder
	b.Grow(size)
	b.WriteString("SELECT ")
	args = make([][]byte, 0, nargs)
	n := 0
	for i, s := range steps {
		if s.Call == "" {
			return "", nil, false
		}
		if i > 0 {
			b.WriteString(", ")
		}
		call, rest := s.Call, s.Args
		for {
			before, after, ok := strings.Cut(call, "?")
			b.WriteString(before)
			if !ok {
				break
			}
			if len(rest) == 0 {
				return "", nil, false // a ? without its argument
			}
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			args = append(args, []byte(rest[0]))
			call, rest = after, rest[1:]
		}
		if len(rest) > 0 {
			return "", nil, false // an argument without its ?
		}
	}
	return b.String(), args, true
}

// CitusProbe remembers whether a strategy's database is a Citus
// coordinator, as its Setup, Provision or Migrate found it or, in a
// process that ran none of them (a serving replica, the migration having
// run in a Job of its own), as the configuration says and the database
// answers, asked once. The zero CitusProbe knows nothing yet; it is safe
// for concurrent use.
type CitusProbe struct {
	citus, known atomic.Bool
}

// Learn records that the database is a Citus coordinator, or not.
func (p *CitusProbe) Learn(citus bool) {
	p.citus.Store(citus)
	p.known.Store(true)
}

// Citus reports whether the database is a Citus coordinator under mode
// (CitusAuto, CitusOn or CitusOff), asking q the first time.
func (p *CitusProbe) Citus(ctx context.Context, q Querier, mode string) (bool, error) {
	if p.known.Load() {
		return p.citus.Load(), nil
	}
	citus, err := UseCitus(ctx, q, mode)
	if err != nil {
		return false, err
	}
	p.Learn(citus)
	return citus, nil
}
